"""The parsed filter: an immutable tree of `Condition`, `And` and `Or` nodes, made by
`parse_filter` from a mapping it checks once.

The tree holds no dialect: each one (Python evaluation, SQLite, PostgreSQL, Milvus) is a
`FilterVisitor` in a module of its own, which the tree knows only by that protocol. The methods
``matches``, ``to_sqlite``, ``to_postgres`` and ``to_milvus`` hand the tree to them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import field, frozen

from multimodal_rag._validation import MAX_JSON_DIGITS, is_utf8
from multimodal_rag.errors import InvalidInputError
from multimodal_rag.filters import milvus, postgres, python, sqlite
from multimodal_rag.filters._nodes import FilterVisitor
from multimodal_rag.filters._values import ORDERED, Scalar, kind_of

if TYPE_CHECKING:
    from psycopg import sql

#: The operators on one key, in the order messages list them.
COMPARISONS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte")

#: How deeply ``$and`` and ``$or`` may nest.
MAX_FILTER_DEPTH = 32

#: The most comparisons one filter may hold (a long list of values belongs in one ``$in``).
#: It keeps the SQL a filter becomes within every database's limits.
MAX_FILTER_CONDITIONS = 1_000

# The first integer of more than MAX_JSON_DIGITS digits: Python will not write it as text, nor
# will a store's JSON.
_TOO_LONG_INT = 10**MAX_JSON_DIGITS

_T_co = TypeVar("_T_co", covariant=True)


class MetadataFilter(ABC):
    """A parsed metadata filter (see the module's documentation); make one with [`parse_filter`][multimodal_rag.filters.parse_filter].

    Immutable and hashable; equal filters compare equal.
    """

    __slots__ = ()

    @abstractmethod
    def accept(self, visitor: FilterVisitor[_T_co]) -> _T_co:
        """What ``visitor`` makes of this node."""

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

    # The dialects know the nodes only by their shape (``_nodes``), so importing them here makes
    # no cycle; an import inside matches() would cost more than the test itself.

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        """Whether a record's metadata passes this filter."""
        return python.matches(self, metadata)

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
        return sqlite.to_sqlite(self, column, indexed=indexed)

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
        return postgres.to_postgres(self, column)

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
        return milvus.to_milvus(self, field)


@frozen
class Condition(MetadataFilter):
    """One comparison of one key's value.

    Attributes:
        key: The metadata key.
        op: One of `COMPARISONS`.
        value: A scalar, or for ``$in`` and ``$nin`` a non-empty tuple of them.
        by_kind: For ``$in`` and ``$nin``, the values by their kind (see ``kind_of``), so a
            lookup is one set membership test and ``True`` is never taken for ``1``.
    """

    key: str
    op: str
    value: Scalar | tuple[Scalar, ...]
    by_kind: dict[str, frozenset[Any]] = field(init=False, eq=False, repr=False, hash=False)

    def __attrs_post_init__(self) -> None:
        by_kind: dict[str, set[Any]] = {}
        if isinstance(self.value, tuple):
            for item in self.value:
                by_kind.setdefault(kind_of(item), set()).add(item)
        object.__setattr__(self, "by_kind", {kind: frozenset(items) for kind, items in by_kind.items()})

    def accept(self, visitor: FilterVisitor[_T_co]) -> _T_co:
        return visitor.condition(self)

    def to_dict(self) -> dict[str, Any]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {self.key: {self.op: value}}

    @property
    def contains_nul(self) -> bool:
        values = self.value if isinstance(self.value, tuple) else (self.value,)
        return "\x00" in self.key or any(isinstance(v, str) and "\x00" in v for v in values)


@frozen
class And(MetadataFilter):
    """Every one of ``filters`` matches; with none, everything does."""

    filters: tuple[MetadataFilter, ...]

    def accept(self, visitor: FilterVisitor[_T_co]) -> _T_co:
        return visitor.all_of(self)

    def to_dict(self) -> dict[str, Any]:
        return {"$and": [f.to_dict() for f in self.filters]} if self.filters else {}

    @property
    def contains_nul(self) -> bool:
        return any(f.contains_nul for f in self.filters)


@frozen
class Or(MetadataFilter):
    """At least one of ``filters`` matches; with none, nothing does."""

    filters: tuple[MetadataFilter, ...]

    def accept(self, visitor: FilterVisitor[_T_co]) -> _T_co:
        return visitor.any_of(self)

    def to_dict(self) -> dict[str, Any]:
        return {"$or": [f.to_dict() for f in self.filters]}

    @property
    def contains_nul(self) -> bool:
        return any(f.contains_nul for f in self.filters)


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
    if op in ORDERED and (isinstance(operand, bool) or not isinstance(operand, (int, float, str))):
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
