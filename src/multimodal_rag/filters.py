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
"""

from __future__ import annotations

import json
import math
import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from attrs import field, frozen

from multimodal_rag.errors import InvalidInputError
from multimodal_rag.validation import MAX_JSON_DIGITS, is_utf8

if TYPE_CHECKING:
    from psycopg import sql

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

#: A value a filter compares with: what JSON holds that is not a list or an object.
Scalar: TypeAlias = str | int | float | bool | None

#: The operators on one key, in the order messages list them.
COMPARISONS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte")

#: How deeply ``$and`` and ``$or`` may nest.
MAX_FILTER_DEPTH = 32

#: The most comparisons one filter may hold (a long list of values belongs in one ``$in``).
#: It keeps the SQL a filter becomes within every database's limits.
MAX_FILTER_CONDITIONS = 1_000

_ORDERED: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
_SQL_ORDER = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_NEGATED = {"$ne": "$eq", "$nin": "$in"}

# SQLite json_type() names, by the kind of value they hold.
_SQLITE_TYPES = {
    "number": ("integer", "real"),
    "string": ("text",),
    "true": ("true",),
    "false": ("false",),
    "null": ("null",),
}
# A key a JSON path can spell in every SQLite: before 3.45 a path's key is compared with the
# stored label as written (escapes and all), and no version lets a path's key hold '"'.
_PLAIN_KEY = re.compile(r'[\x20-\x21\x23-\x5b\x5d-\x7e]*')
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
# The first integer of more than MAX_JSON_DIGITS digits: Python will not write it as text, nor
# will a store's JSON.
_TOO_LONG_INT = 10**MAX_JSON_DIGITS

# SQLite keeps integers in 64 bits; a larger filter value is compared as a float there.
_INT64 = range(-(2**63), 2**63)

#: The most comparisons one Milvus expression may hold; a longer filter (a long ``$in``) is
#: answered from the description store's ids instead, so the server's parser is never the limit.
MAX_MILVUS_TERMS = 1_000

# Where milvus_document() keeps each kind of value: numbers, strings, booleans and nulls each
# under their own object, so a comparison in Milvus never meets a value of another kind (Milvus
# itself finds 1 equal to true, and a missing key "is null").
_MILVUS_BUCKETS = {"number": "n", "string": "s", "true": "b", "false": "b", "null": "z"}
_MILVUS_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters a key keeps in Milvus as it is; any other is percent-encoded (UTF-8), which makes
# keys safe inside a string literal whatever the user wrote, and keeps distinct keys distinct.
_MILVUS_KEY_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")
# In a Milvus string literal: these take an escape; other control characters are not read the
# same by every Milvus version, so a filter holding one is not sent.
_MILVUS_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_MILVUS_UNSENDABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class NotExpressible(Exception):
    """A filter that [`MetadataFilter.to_milvus`][multimodal_rag.filters.MetadataFilter.to_milvus] cannot write as an exact Milvus expression.

    Not an error for the caller: the search falls back to the ids the description store finds.
    """


def _kind(value: Any) -> str:
    """The kind of a JSON value for comparisons: number, string, true, false, null or other."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"


class MetadataFilter(ABC):
    """A parsed metadata filter (see the module's documentation); make one with [`parse_filter`][multimodal_rag.filters.parse_filter].

    Immutable and hashable; equal filters compare equal.
    """

    __slots__ = ()

    @abstractmethod
    def matches(self, metadata: Mapping[str, Any]) -> bool:
        """Whether a record's metadata passes this filter."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The filter as a mapping that [`parse_filter`][multimodal_rag.filters.parse_filter] reads back to an equal filter.

        Every comparison is spelled out (``{"k": {"$eq": 1}}``) and several become ``$and``.
        """

    @property
    @abstractmethod
    def contains_nul(self) -> bool:
        """Whether a key or a string in the filter holds the NUL character, which SQL text
        cannot (so [`to_sqlite`][multimodal_rag.filters.MetadataFilter.to_sqlite] and [`to_postgres`][multimodal_rag.filters.MetadataFilter.to_postgres] refuse the filter)."""

    def to_sqlite(self, column: str, *, indexed: Mapping[str, tuple[str, str]] | None = None) -> tuple[str, list[Any]]:
        """An SQLite condition that is true exactly where [`matches`][multimodal_rag.filters.MetadataFilter.matches] is.

        Values are read with ``json_extract(column, '$."key"')`` and their types checked with
        ``json_type``; a key a JSON path cannot spell in every SQLite version (one holding
        ``"``, ``\\``, a control or a non-ASCII character) is looked up with ``json_each``.
        Keys and values are bound parameters (``?``), never part of the SQL text.

        Integers beyond 64 bits are compared as floats, which is all SQLite keeps of them;
        stored strings holding NUL are cut short by SQLite's JSON functions, so test such
        records with [`matches`][multimodal_rag.filters.MetadataFilter.matches].

        Args:
            column: The column holding each record's metadata as JSON text: a name, or a
                table and a name (``records.metadata``). Qualify it when its name is also one
                of ``json_each``'s columns (``key``, ``value``, ``type``, ``id``, ...).
            indexed: Keys whose value also has columns of its own: key → (type column, value
                column), holding ``coalesce(json_type(column, path), '')`` and
                ``json_extract(column, path)`` with ``path`` from `sqlite_path` (generated
                columns, typically, with an index on the pair). A condition on such a key reads
                those columns, so that the index can serve it; the result is the same.

        Returns:
            The condition and its parameters, in order.

        Raises:
            InvalidInputError: ``column`` (or one in ``indexed``) is not a column name, a key in
                ``indexed`` has no `sqlite_path`, or [`contains_nul`][multimodal_rag.filters.MetadataFilter.contains_nul].
        """
        quoted = _quoted(column)
        columns: dict[str, tuple[str, str]] = {}
        for key, (type_column, value_column) in (indexed or {}).items():
            if sqlite_path(key) is None:
                raise InvalidInputError(f"indexed: the key {key!r:.80} has no JSON path in every SQLite")
            columns[key] = (_quoted(type_column), _quoted(value_column))
        self._refuse_nul("SQLite")
        return self._sqlite(quoted, columns)

    def to_postgres(self, column: str) -> tuple[sql.Composable, list[Any]]:
        """A PostgreSQL condition on a JSONB column that is true exactly where [`matches`][multimodal_rag.filters.MetadataFilter.matches] is.

        Values are compared as JSONB (numbers exactly, as ``numeric``; ``jsonb_typeof`` keeps
        kinds apart) and strings are ordered with ``COLLATE "C"``, by code point. Keys and
        values are bound parameters (``%s``); the column is quoted as an identifier.

        Args:
            column: The JSONB column: a name, or a table and a name.

        Returns:
            The condition, to compose into a query with `psycopg.sql`, and its parameters.

        Raises:
            InvalidInputError: ``column`` is not a column name, or [`contains_nul`][multimodal_rag.filters.MetadataFilter.contains_nul].
            MissingDependencyError: psycopg is not installed.
        """
        from multimodal_rag._extras import require

        require("psycopg", user="MetadataFilter.to_postgres", extra="postgres")
        from psycopg import sql

        parts = _column_parts(column)
        self._refuse_nul("PostgreSQL")
        text, params = self._postgres()
        # The text is made only of this module's constants: keys and values are parameters.
        return sql.SQL(text).format(column=sql.Identifier(*parts)), params

    def to_milvus(self, field: str = "metadata") -> str:
        """A Milvus filter expression, over a JSON field laid out by `milvus_document`,
        that is true exactly where [`matches`][multimodal_rag.filters.MetadataFilter.matches] is.

        Each kind of value has its own object in the field, so ``{"price": {"$lt": 100}}``
        becomes ``metadata["n"]["price"] < 100`` and finds numbers only; ``$in`` becomes
        ``or``-ed equalities; ``$ne`` and ``$nin`` become ``not (exists ... and ...)``, so a
        missing key matches them. Keys are percent-encoded and strings quoted with escapes:
        nothing a user writes becomes part of the expression's syntax.

        Numbers compare as the server compares them: exactly in Milvus Lite, as 64-bit floats
        in a Milvus server where an integer meets a float. Integers beyond 64 bits are compared
        as floats, as in SQLite.

        Args:
            field: The JSON field holding `milvus_document` of each record's metadata.

        Returns:
            The expression; an empty filter gives ``true``.

        Raises:
            InvalidInputError: ``field`` is not a field name.
            NotExpressible: A string holding NUL or another control character (other than tab,
                newline and carriage return), or more than `MAX_MILVUS_TERMS` comparisons.
        """
        if not isinstance(field, str) or not _MILVUS_FIELD.fullmatch(field):
            raise InvalidInputError(f"field must be a Milvus field name, got {field!r:.80}")
        if self._milvus_terms() > MAX_MILVUS_TERMS:
            raise NotExpressible(f"more than {MAX_MILVUS_TERMS} comparisons")
        return self._milvus(field)

    def _refuse_nul(self, database: str) -> None:
        if self.contains_nul:
            raise InvalidInputError(
                f"filter: a key or string holds the NUL character, which {database} cannot compare; "
                "test records with matches() instead"
            )

    @abstractmethod
    def _sqlite(self, column: str, indexed: Mapping[str, tuple[str, str]]) -> tuple[str, list[Any]]: ...

    @abstractmethod
    def _postgres(self) -> tuple[str, list[Any]]:
        """The condition with ``{column}`` where the column goes."""

    @abstractmethod
    def _milvus(self, field: str) -> str: ...

    @abstractmethod
    def _milvus_terms(self) -> int:
        """How many comparisons [`to_milvus`][multimodal_rag.filters.MetadataFilter.to_milvus] writes."""


@frozen
class Condition(MetadataFilter):
    """One comparison of one key's value.

    Attributes:
        key: The metadata key.
        op: One of `COMPARISONS`.
        value: A scalar, or for ``$in`` and ``$nin`` a non-empty tuple of them.
    """

    key: str
    op: str
    value: Scalar | tuple[Scalar, ...]
    # For $in and $nin: the values by kind, so a lookup is one set membership test.
    _by_kind: dict[str, frozenset[Any]] = field(init=False, eq=False, repr=False, hash=False)

    def __attrs_post_init__(self) -> None:
        by_kind: dict[str, set[Any]] = {}
        if isinstance(self.value, tuple):
            for item in self.value:
                by_kind.setdefault(_kind(item), set()).add(item)
        object.__setattr__(self, "_by_kind", {kind: frozenset(items) for kind, items in by_kind.items()})

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        if self.op in _NEGATED:
            return not self._positive(metadata, _NEGATED[self.op])
        return self._positive(metadata, self.op)

    def _positive(self, metadata: Mapping[str, Any], op: str) -> bool:
        if self.key not in metadata:
            return False
        stored = metadata[self.key]
        kind = _kind(stored)
        if kind == "other":
            return False
        if op == "$in":
            return stored in self._by_kind.get(kind, ())
        if kind != _kind(self.value):
            return False
        if op == "$eq":
            return bool(stored == self.value)
        return kind in ("number", "string") and _ORDERED[op](stored, self.value)

    def to_dict(self) -> dict[str, Any]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {self.key: {self.op: value}}

    @property
    def contains_nul(self) -> bool:
        values = self.value if isinstance(self.value, tuple) else (self.value,)
        return "\x00" in self.key or any(isinstance(v, str) and "\x00" in v for v in values)

    # -- SQLite ------------------------------------------------------------------

    def _sqlite(self, column: str, indexed: Mapping[str, tuple[str, str]]) -> tuple[str, list[Any]]:
        op = _NEGATED.get(self.op, self.op)
        path = sqlite_path(self.key)
        if self.key in indexed:
            type_column, value_column = indexed[self.key]
            text, params = self._sqlite_positive(op, (type_column, []), (value_column, []))
        elif path is not None:
            type_sql = (f"coalesce(json_type({column}, ?), '')", [path])
            value_sql = (f"json_extract({column}, ?)", [path])
            text, params = self._sqlite_positive(op, type_sql, value_sql)
        else:
            # The predicate on json_each's row for the key; no row (a missing key) is false.
            inner, inner_params = self._sqlite_positive(op, ("j.type", []), ("j.value", []))
            text = f"coalesce((SELECT {inner} FROM json_each({column}) AS j WHERE j.key = ?), 0)"
            params = [*inner_params, self.key]
        if self.op in _NEGATED:
            return f"NOT {text}", params
        return text, params

    def _sqlite_positive(
        self, op: str, type_sql: tuple[str, list[Any]], value_sql: tuple[str, list[Any]]
    ) -> tuple[str, list[Any]]:
        def typed(kind: str) -> tuple[str, list[Any]]:
            names = ", ".join(f"'{name}'" for name in _SQLITE_TYPES[kind])
            return f"{type_sql[0]} IN ({names})", list(type_sql[1])

        if op == "$in":
            terms: list[tuple[str, list[Any]]] = []
            for kind in ("number", "string"):
                values = self._by_kind.get(kind)
                if values:
                    check, params = typed(kind)
                    listed = json.dumps(sorted(values, key=repr), ensure_ascii=False)
                    terms.append(
                        (
                            f"({check} AND {value_sql[0]} IN (SELECT value FROM json_each(?)))",
                            [*params, *value_sql[1], listed],
                        )
                    )
            flags = [kind for kind in ("true", "false", "null") if kind in self._by_kind]
            if flags:
                names = ", ".join(f"'{kind}'" for kind in flags)
                terms.append((f"{type_sql[0]} IN ({names})", list(type_sql[1])))
            return _join(terms, "OR", "0")
        kind = _kind(self.value)
        check, params = typed(kind)
        if kind in ("true", "false", "null"):  # only $eq reaches here with these
            return check, params
        sign = "=" if op == "$eq" else _SQL_ORDER[op]
        return f"({check} AND {value_sql[0]} {sign} ?)", [*params, *value_sql[1], _sqlite_value(self.value)]

    # -- PostgreSQL ----------------------------------------------------------------

    def _postgres(self) -> tuple[str, list[Any]]:
        op = _NEGATED.get(self.op, self.op)
        value = "({column} -> %s::text)"
        if op == "$eq":
            text = f"coalesce({value} = %s::jsonb, false)"
            params: list[Any] = [self.key, _json(self.value)]
        elif op == "$in":
            text = f"coalesce({value} IN (SELECT jsonb_array_elements(%s::jsonb)), false)"
            params = [self.key, _json(list(self.value) if isinstance(self.value, tuple) else [self.value])]
        elif _kind(self.value) == "number":
            text = f"coalesce(jsonb_typeof({value}) = 'number' AND {value} {_SQL_ORDER[op]} %s::jsonb, false)"
            params = [self.key, self.key, _json(self.value)]
        else:  # a string, ordered by code point whatever the database's collation
            text = (
                f"coalesce(jsonb_typeof({value}) = 'string' "
                f'AND ({{column}} ->> %s::text) COLLATE "C" {_SQL_ORDER[op]} %s::text, false)'
            )
            params = [self.key, self.key, self.value]
        if self.op in _NEGATED:
            return f"NOT {text}", params
        return text, params

    # -- Milvus --------------------------------------------------------------------

    def _milvus_terms(self) -> int:
        return len(self.value) if isinstance(self.value, tuple) else 1

    def _milvus(self, field: str) -> str:
        op = _NEGATED.get(self.op, self.op)
        values = self.value if isinstance(self.value, tuple) else (self.value,)
        # One group per kind of value, each reading only its own object of the field.
        groups: dict[str, list[str]] = {}
        # Deduplicated by kind and value: a set would take True for 1.
        for kind, value in dict.fromkeys((_kind(value), value) for value in values):
            path = _milvus_path(field, _MILVUS_BUCKETS[kind], self.key)
            if kind == "null":
                term = f"exists {path}"
            else:
                sign = "==" if op in ("$eq", "$in") else _SQL_ORDER[op]
                term = f"{path} {sign} {_milvus_literal(value)}"
            groups.setdefault(path, []).append(term)
        if self.op not in _NEGATED:
            return _milvus_join([term for terms in groups.values() for term in terms], "or", "false")
        # Milvus finds "not (x == 1)" false where x is missing: the exists guard makes the
        # inner test plainly false there, so its negation holds as matches() says.
        guarded = [
            terms[0]
            if terms[0].startswith("exists ")  # a null needs no guard
            else f"exists {path} and {_parenthesised(_milvus_join(terms, 'or', 'false'))}"
            for path, terms in groups.items()
        ]
        return f"not {_parenthesised(_milvus_join(guarded, 'or', 'false'))}"


@frozen
class And(MetadataFilter):
    """Every one of ``filters`` matches; with none, everything does."""

    filters: tuple[MetadataFilter, ...]

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        return all(f.matches(metadata) for f in self.filters)

    def to_dict(self) -> dict[str, Any]:
        return {"$and": [f.to_dict() for f in self.filters]} if self.filters else {}

    @property
    def contains_nul(self) -> bool:
        return any(f.contains_nul for f in self.filters)

    def _sqlite(self, column: str, indexed: Mapping[str, tuple[str, str]]) -> tuple[str, list[Any]]:
        return _join([f._sqlite(column, indexed) for f in self.filters], "AND", "1")

    def _postgres(self) -> tuple[str, list[Any]]:
        return _join([f._postgres() for f in self.filters], "AND", "true")

    def _milvus(self, field: str) -> str:
        return _milvus_join([f._milvus(field) for f in self.filters], "and", "true")

    def _milvus_terms(self) -> int:
        return sum(f._milvus_terms() for f in self.filters)


@frozen
class Or(MetadataFilter):
    """At least one of ``filters`` matches; with none, nothing does."""

    filters: tuple[MetadataFilter, ...]

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        return any(f.matches(metadata) for f in self.filters)

    def to_dict(self) -> dict[str, Any]:
        return {"$or": [f.to_dict() for f in self.filters]}

    @property
    def contains_nul(self) -> bool:
        return any(f.contains_nul for f in self.filters)

    def _sqlite(self, column: str, indexed: Mapping[str, tuple[str, str]]) -> tuple[str, list[Any]]:
        return _join([f._sqlite(column, indexed) for f in self.filters], "OR", "0")

    def _postgres(self) -> tuple[str, list[Any]]:
        return _join([f._postgres() for f in self.filters], "OR", "false")

    def _milvus(self, field: str) -> str:
        return _milvus_join([f._milvus(field) for f in self.filters], "or", "false")

    def _milvus_terms(self) -> int:
        return sum(f._milvus_terms() for f in self.filters)


def _join(terms: Sequence[tuple[str, list[Any]]], word: str, empty: str) -> tuple[str, list[Any]]:
    """``terms`` joined by AND or OR, nested in halves so the parser's depth grows as log(n)."""
    if not terms:
        return empty, []
    if len(terms) == 1:
        return terms[0]
    middle = len(terms) // 2
    left, left_params = _join(terms[:middle], word, empty)
    right, right_params = _join(terms[middle:], word, empty)
    return f"({left} {word} {right})", [*left_params, *right_params]


def _milvus_join(terms: Sequence[str], word: str, empty: str) -> str:
    """``terms`` joined by ``and`` or ``or``, nested in halves like `_join`."""
    if not terms:
        return empty
    if len(terms) == 1:
        return terms[0]
    middle = len(terms) // 2
    left = _milvus_join(terms[:middle], word, empty)
    right = _milvus_join(terms[middle:], word, empty)
    return f"{_parenthesised(left)} {word} {_parenthesised(right)}"


def _parenthesised(term: str) -> str:
    # A single comparison or test needs no brackets; anything joined or negated gets them.
    simple = term in ("true", "false") or (" and " not in term and " or " not in term and not term.startswith("not "))
    return term if simple else f"({term})"


def _milvus_key(key: str) -> str:
    if _MILVUS_KEY_SAFE.fullmatch(key):
        return key
    return "".join(
        char if _MILVUS_KEY_SAFE.fullmatch(char) else "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))
        for char in key
    )


def _milvus_path(field: str, bucket: str, key: str) -> str:
    return f'{field}["{bucket}"]["{_milvus_key(key)}"]'


def _milvus_literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return repr(float(value)) if value not in _INT64 else str(value)
    if isinstance(value, float):
        return repr(value)
    assert isinstance(value, str)
    if _MILVUS_UNSENDABLE.search(value):
        raise NotExpressible("a string holds a control character")
    return '"' + "".join(_MILVUS_ESCAPES.get(char, char) for char in value) + '"'


def milvus_document(metadata: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The copy of a record's metadata that [`MetadataFilter.to_milvus`][multimodal_rag.filters.MetadataFilter.to_milvus] expressions read.

    Each scalar value goes under the object for its kind: ``"n"`` numbers, ``"s"`` strings,
    ``"b"`` booleans, ``"z"`` nulls (as ``true``), by its percent-encoded key
    (``{"price": 10, "tag": "a"}`` becomes ``{"n": {"price": 10}, "s": {"tag": "a"}}``).
    Lists and objects are left out, since no filter matches them; so are keys that start
    with ``$``, which no filter names. Integers beyond 64 bits become floats.
    """
    document: dict[str, dict[str, Any]] = {}
    for key, value in metadata.items():
        kind = _kind(value)
        if kind == "other" or key.startswith("$"):
            continue
        if kind == "null":
            value = True
        elif isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
            value = float(value)
        document.setdefault(_MILVUS_BUCKETS[kind], {})[_milvus_key(key)] = value
    return document


def _json(value: Any) -> str:
    # A float's repr is the shortest text that reads back as it, so a stored float and an
    # equal filter float are the same JSONB number.
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, int) and value not in _INT64:
        try:
            return float(value)
        except OverflowError:  # past every float: SQLite reads such a stored number as infinity too
            return math.inf if value > 0 else -math.inf
    return value


def sqlite_path(key: str) -> str | None:
    """The JSON path (``$."key"``) that reaches ``key`` in every SQLite version, or None for a
    key no such path can spell (one holding ``"``, ``\\``, a control or a non-ASCII character)."""
    return '$."' + key + '"' if _PLAIN_KEY.fullmatch(key) else None


def _quoted(column: str) -> str:
    return ".".join(f'"{part}"' for part in _column_parts(column))


def _column_parts(column: object) -> list[str]:
    if not isinstance(column, str) or not _COLUMN.fullmatch(column):
        raise InvalidInputError(
            f"column must be a column name or table.column of letters, digits and '_', got {column!r:.80}"
        )
    return column.split(".")


# -- parsing ---------------------------------------------------------------------


def parse_filter(obj: Mapping[str, Any] | MetadataFilter) -> MetadataFilter:
    """Check a filter mapping and turn it into a [`MetadataFilter`][multimodal_rag.filters.MetadataFilter] (see the module's documentation).

    Args:
        obj: The filter, like ``{"category": {"$in": ["a", "b"]}, "price": {"$lt": 100}}``;
            an empty mapping matches every record. A [`MetadataFilter`][multimodal_rag.filters.MetadataFilter] is returned as is.

    Returns:
        The parsed filter.

    Raises:
        InvalidInputError: Anything but the grammar above; the message names where, like
            ``filter['price']['$lt']: expected a number or a string, got list``.
    """
    if isinstance(obj, MetadataFilter):
        return obj
    return _Parser().mapping(obj, "filter", 1)


class _Parser:
    def __init__(self) -> None:
        self.conditions = 0

    def mapping(self, obj: Any, path: str, depth: int) -> MetadataFilter:
        if not isinstance(obj, Mapping):
            raise InvalidInputError(
                f"{path}: expected a mapping of metadata keys to values or operators, got {_type(obj)}"
            )
        if depth > MAX_FILTER_DEPTH:
            raise InvalidInputError(f"{path}: $and and $or are nested more than {MAX_FILTER_DEPTH} levels deep")
        parts: list[MetadataFilter] = []
        for key, value in obj.items():
            if not isinstance(key, str):
                raise InvalidInputError(f"{path}: key {key!r:.80} is {_type(key)}; keys must be strings")
            where = f"{path}[{key!r}]"
            if key in ("$and", "$or"):
                items = self.filters(value, where, depth)
                parts.append(And(items) if key == "$and" else Or(items))
            elif key in COMPARISONS:
                raise InvalidInputError(
                    f"{where}: {key} compares one key's value; write {{'key': {{{key!r}: ...}}}}"
                )
            elif key.startswith("$"):
                raise InvalidInputError(
                    f"{where}: unknown operator; here only $and and $or, or a metadata key, may appear "
                    "(keys that start with '$' cannot be filtered on)"
                )
            else:
                parts.extend(self.key(key, value, where))
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def filters(self, value: Any, path: str, depth: int) -> tuple[MetadataFilter, ...]:
        if not _is_list(value) or not value:
            raise InvalidInputError(f"{path}: expected a non-empty list of filters, got {_described(value)}")
        return tuple(self.mapping(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))

    def key(self, key: str, value: Any, path: str) -> list[Condition]:
        if not isinstance(value, Mapping):
            hint = "; to match any of several values, use {'$in': [...]}" if _is_list(value) else ""
            return [self.condition(key, "$eq", _scalar(value, path, hint=hint))]
        if not value:
            raise InvalidInputError(f"{path}: expected at least one operator ({', '.join(COMPARISONS)}), got {{}}")
        conditions = []
        for op, operand in value.items():
            where = f"{path}[{op!r}]"
            if op not in COMPARISONS:
                if isinstance(op, str) and not op.startswith("$"):
                    raise InvalidInputError(
                        f"{where}: expected an operator ({', '.join(COMPARISONS)}); a filter's values are "
                        "scalars, and nested keys are not searched"
                    )
                raise InvalidInputError(f"{where}: unknown operator; expected one of {', '.join(COMPARISONS)}")
            conditions.append(self.condition(key, op, _operand(op, operand, where)))
        return conditions

    def condition(self, key: str, op: str, value: Scalar | tuple[Scalar, ...]) -> Condition:
        self.conditions += 1
        if self.conditions > MAX_FILTER_CONDITIONS:
            raise InvalidInputError(
                f"filter: more than {MAX_FILTER_CONDITIONS} comparisons; "
                "put long lists of values in one $in or $nin"
            )
        if not is_utf8(key):
            raise InvalidInputError(f"filter: key {key!r:.80} is not valid Unicode text")
        return Condition(key, op, value)


def _operand(op: str, operand: Any, path: str) -> Scalar | tuple[Scalar, ...]:
    if op in ("$in", "$nin"):
        if not _is_list(operand) or not operand:
            raise InvalidInputError(f"{path}: expected a non-empty list of values, got {_described(operand)}")
        return tuple(_scalar(item, f"{path}[{i}]") for i, item in enumerate(operand))
    if op in _ORDERED and (isinstance(operand, bool) or not isinstance(operand, (int, float, str))):
        raise InvalidInputError(f"{path}: expected a number or a string, got {_type(operand)}")
    return _scalar(operand, path)


def _scalar(value: Any, path: str, *, hint: str = "") -> Scalar:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if not is_utf8(value):
            raise InvalidInputError(f"{path}: the string {value!r:.80} is not valid Unicode text")
        return str(value)
    if isinstance(value, int):
        if abs(value) >= _TOO_LONG_INT:
            raise InvalidInputError(f"{path}: expected a number of at most {MAX_JSON_DIGITS:,} digits, got a longer one")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"{path}: expected a finite number, got {value!r}")
        return float(value)
    raise InvalidInputError(
        f"{path}: expected a string, a number, a bool or None, got {_type(value)}{hint}"
    )


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _type(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _described(value: Any) -> str:
    return "an empty list" if _is_list(value) and not value else _type(value)
