"""Metadata filters: a Mongo- or Chroma-style filter, checked once, kept as an immutable tree
that tests a record's metadata in Python, becomes one SQL condition (SQLite or PostgreSQL), or
a Milvus filter expression over the copy of the metadata that `milvus_document` lays out.

A filter is a mapping:

```python
{"category": {"$in": ["shoes", "bags"]}, "price": {"$lt": 100},
 "$or": [{"brand": "acme"}, {"on_sale": True}]}
```

- ``{"key": value}`` means ``{"key": {"$eq": value}}``. Several keys in one mapping must all
  match, and so must several operators on one key (``{"price": {"$gte": 10, "$lt": 100}}``).
- ``$eq`` and ``$ne``: equal, not equal. ``$in`` and ``$nin``: equal to one, to none, of a
  non-empty list. ``$gt``, ``$gte``, ``$lt``, ``$lte``: ordered comparisons.
- ``$and`` and ``$or``: a non-empty list of filters, all or any of which must match.
- Values are JSON scalars: ``str``, ``int``, finite ``float``, ``bool`` and ``None``; an
  ordered comparison takes a number or a string.

How a stored value compares with a filter's (the same in Python and in every store):

- A missing key never matches ``$eq``, ``$in`` or an ordered comparison, and always matches
  ``$ne`` and ``$nin``, which are exactly the negations of ``$eq`` and ``$in``.
- ``None`` matches a stored ``null``, never a missing key.
- Numbers compare as numbers: ``1`` equals ``1.0``, and ints order against floats exactly.
  ``bool`` is not a number: ``True`` equals only ``True`` (never ``1``) and does not order.
- Strings equal and order only against strings, by Unicode code point.
- Any other pairing (a string against a number, a stored list or object against anything)
  does not match, so ``$ne`` and ``$nin`` do. Lists are not searched: ``{"tags": "x"}``
  does not match ``{"tags": ["x"]}``.
- Keys match whole: ``"a.b"`` is a key with a dot in it, not a path into ``"a"``. A key that
  starts with ``$`` cannot be filtered on, since those name operators.

Bad input raises [`InvalidInputError`][multimodal_rag.errors.InvalidInputError] naming where it is, like
``filter['price']['$lt']: expected a number or a string, got list``.

The package is one parsed tree and one module per dialect: ``_tree`` (the nodes and the parser,
which know no dialect), ``python`` (evaluation, the reference), ``sqlite``, ``postgres`` and
``milvus``. Each dialect is a visitor of the tree (``_tree.FilterVisitor``): a new one adds a
module, and no node changes.
"""

from __future__ import annotations

from multimodal_rag.filters._tree import (
    COMPARISONS,
    MAX_FILTER_CONDITIONS,
    MAX_FILTER_DEPTH,
    And,
    Condition,
    MetadataFilter,
    Or,
    parse_filter,
)
from multimodal_rag.filters._values import Scalar
from multimodal_rag.filters.milvus import MAX_MILVUS_TERMS, NotExpressible, milvus_document
from multimodal_rag.filters.sqlite import sqlite_path

__all__ = [
    "COMPARISONS",
    "MAX_FILTER_CONDITIONS",
    "MAX_FILTER_DEPTH",
    "MAX_MILVUS_TERMS",
    "And",
    "Condition",
    "MetadataFilter",
    "NotExpressible",
    "Or",
    "Scalar",
    "milvus_document",
    "parse_filter",
    "sqlite_path",
]
