"""The SQLite dialect: a filter as one SQL condition on a column of JSON text, with every key
and value a bound parameter."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from multimodal_rag.errors import InvalidInputError
from multimodal_rag.filters._sql import column_parts, join, refuse_nul
from multimodal_rag.filters._values import INT64, NEGATED, ORDERED, kind_of

if TYPE_CHECKING:
    from multimodal_rag.filters._nodes import ConditionNode, FilterNode, GroupNode

__all__ = ["sqlite_path", "to_sqlite"]

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

# SQL text and parameters.
_Term = tuple[str, list[Any]]


def sqlite_path(key: str) -> str | None:
    """The JSON path (``$."key"``) that reaches ``key`` in every SQLite version, or None for a
    key no such path can spell (one holding ``"``, ``\\``, a control or a non-ASCII character)."""
    return '$."' + key + '"' if _PLAIN_KEY.fullmatch(key) else None


def to_sqlite(
    filter: FilterNode, column: str, *, indexed: Mapping[str, tuple[str, str]] | None = None
) -> tuple[str, list[Any]]:
    """See [`MetadataFilter.to_sqlite`][multimodal_rag.filters.MetadataFilter.to_sqlite]."""
    quoted = _quoted(column)
    columns: dict[str, tuple[str, str]] = {}
    for key, (type_column, value_column) in (indexed or {}).items():
        if sqlite_path(key) is None:
            raise InvalidInputError(f"indexed: the key {key!r:.80} has no JSON path in every SQLite")
        columns[key] = (_quoted(type_column), _quoted(value_column))
    refuse_nul(filter, "SQLite")
    return filter.accept(_SQLite(quoted, columns))


def _quoted(column: str) -> str:
    return ".".join(f'"{part}"' for part in column_parts(column))


class _SQLite:
    def __init__(self, column: str, indexed: Mapping[str, tuple[str, str]]) -> None:
        self.column = column
        self.indexed = indexed

    def all_of(self, node: GroupNode) -> _Term:
        return join([f.accept(self) for f in node.filters], "AND", "1")

    def any_of(self, node: GroupNode) -> _Term:
        return join([f.accept(self) for f in node.filters], "OR", "0")

    def condition(self, node: ConditionNode) -> _Term:
        op = NEGATED.get(node.op, node.op)
        path = sqlite_path(node.key)
        if node.key in self.indexed:
            type_column, value_column = self.indexed[node.key]
            text, params = _positive(node, op, (type_column, []), (value_column, []))
        elif path is not None:
            type_sql = (f"coalesce(json_type({self.column}, ?), '')", [path])
            value_sql = (f"json_extract({self.column}, ?)", [path])
            text, params = _positive(node, op, type_sql, value_sql)
        else:
            # The predicate on json_each's row for the key; no row (a missing key) is false.
            inner, inner_params = _positive(node, op, ("j.type", []), ("j.value", []))
            text = f"coalesce((SELECT {inner} FROM json_each({self.column}) AS j WHERE j.key = ?), 0)"
            params = [*inner_params, node.key]
        if node.op in NEGATED:
            return f"NOT {text}", params
        return text, params


def _positive(node: ConditionNode, op: str, type_sql: _Term, value_sql: _Term) -> _Term:
    """``op`` (never a negated one) on the value that ``type_sql`` and ``value_sql`` read."""

    def typed(kind: str) -> _Term:
        names = ", ".join(f"'{name}'" for name in _SQLITE_TYPES[kind])
        return f"{type_sql[0]} IN ({names})", list(type_sql[1])

    if op == "$in":
        terms: list[_Term] = []
        for kind in ("number", "string"):
            values = node.by_kind.get(kind)
            if values:
                check, params = typed(kind)
                listed = json.dumps(sorted(values, key=repr), ensure_ascii=False)
                terms.append(
                    (
                        f"({check} AND {value_sql[0]} IN (SELECT value FROM json_each(?)))",
                        [*params, *value_sql[1], listed],
                    )
                )
        flags = [kind for kind in ("true", "false", "null") if kind in node.by_kind]
        if flags:
            names = ", ".join(f"'{kind}'" for kind in flags)
            terms.append((f"{type_sql[0]} IN ({names})", list(type_sql[1])))
        return join(terms, "OR", "0")
    kind = kind_of(node.value)
    check, params = typed(kind)
    if kind in ("true", "false", "null"):  # only $eq reaches here with these
        return check, params
    sign = "=" if op == "$eq" else ORDERED[op]
    return f"({check} AND {value_sql[0]} {sign} ?)", [*params, *value_sql[1], _value(node.value)]


def _value(value: Any) -> Any:
    if isinstance(value, int) and value not in INT64:
        try:
            return float(value)
        except OverflowError:  # past every float: SQLite reads such a stored number as infinity too
            return math.inf if value > 0 else -math.inf
    return value
