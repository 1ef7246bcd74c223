"""The filter expressions [`MilvusVectorStore`][multimodal_rag.vectors.milvus.MilvusVectorStore] sends.

Ids are written as Milvus string literals; a set of ids becomes ``id in [...]``, in
chunks short enough for the server's parser; and a Python filter that is a small set's
``__contains__`` can be pushed down to the server as such an expression.

Expressions over the metadata copy are the Milvus dialect of the metadata filters,
`multimodal_rag.filters.milvus`, which knows nothing of this store's id field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from multimodal_rag.protocols import IdFilter
from multimodal_rag.vectors.milvus_collection import ID_FIELD

__all__ = ["id_after", "id_in", "id_in_chunks", "id_set_of"]

# Ids per filter expression (``id in [...]``); long expressions slow the server's parser.
_EXPR_CHUNK = 1_000
# The most ids a set filter may hold and still be sent to the server as an expression.
_MAX_PUSHDOWN_IDS = 10_000


def _literal(value: str) -> str:
    # Milvus expression strings take JSON's escapes; ensure_ascii=False keeps them readable.
    return json.dumps(value, ensure_ascii=False)


def id_after(id: str) -> str:
    """The ids that sort after ``id``."""
    return f"{ID_FIELD} > {_literal(id)}"


def id_in(ids: Sequence[str]) -> str:
    return f"{ID_FIELD} in [{', '.join(_literal(i) for i in ids)}]"


def id_in_chunks(ids: list[str]) -> Iterator[str]:
    """``id in [...]`` over ``ids``, a few at a time."""
    for start in range(0, len(ids), _EXPR_CHUNK):
        yield id_in(ids[start : start + _EXPR_CHUNK])


def id_set_of(filter: IdFilter) -> Any:
    """The set behind ``some_set.__contains__``, when it is small enough to send to the server."""
    owner = getattr(filter, "__self__", None)
    if getattr(filter, "__name__", None) != "__contains__":
        return None
    if isinstance(owner, (set, frozenset, dict)) and len(owner) <= _MAX_PUSHDOWN_IDS:
        return owner
    return None
