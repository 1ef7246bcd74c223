"""The PostgreSQL dialect: a filter as one SQL condition on a JSONB column, with every key and
value a bound parameter."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from multimodal_rag.filters._sql import column_parts, join, refuse_nul
from multimodal_rag.filters._values import NEGATED, ORDERED, kind_of

if TYPE_CHECKING:
    from psycopg import sql

    from multimodal_rag.filters._nodes import ConditionNode, FilterNode, GroupNode

__all__ = ["to_postgres"]

# SQL text, with ``{column}`` where the column goes, and parameters.
_Term = tuple[str, list[Any]]


def to_postgres(filter: FilterNode, column: str) -> tuple[sql.Composable, list[Any]]:
    """See [`MetadataFilter.to_postgres`][multimodal_rag.filters.MetadataFilter.to_postgres]."""
    from multimodal_rag._extras import require

    require("psycopg", user="MetadataFilter.to_postgres", extra="postgres")
    from psycopg import sql

    parts = column_parts(column)
    refuse_nul(filter, "PostgreSQL")
    text, params = filter.accept(_Postgres())
    # The text is made only of this module's constants: keys and values are parameters.
    return sql.SQL(text).format(column=sql.Identifier(*parts)), params


class _Postgres:
    def all_of(self, node: GroupNode) -> _Term:
        return join([f.accept(self) for f in node.filters], "AND", "true")

    def any_of(self, node: GroupNode) -> _Term:
        return join([f.accept(self) for f in node.filters], "OR", "false")

    def condition(self, node: ConditionNode) -> _Term:
        op = NEGATED.get(node.op, node.op)
        value = "({column} -> %s::text)"
        if op == "$eq":
            text = f"coalesce({value} = %s::jsonb, false)"
            params: list[Any] = [node.key, _json(node.value)]
        elif op == "$in":
            text = f"coalesce({value} IN (SELECT jsonb_array_elements(%s::jsonb)), false)"
            params = [node.key, _json(list(node.value) if isinstance(node.value, tuple) else [node.value])]
        elif kind_of(node.value) == "number":
            text = f"coalesce(jsonb_typeof({value}) = 'number' AND {value} {ORDERED[op]} %s::jsonb, false)"
            params = [node.key, node.key, _json(node.value)]
        else:  # a string, ordered by code point whatever the database's collation
            text = (
                f"coalesce(jsonb_typeof({value}) = 'string' "
                f'AND ({{column}} ->> %s::text) COLLATE "C" {ORDERED[op]} %s::text, false)'
            )
            params = [node.key, node.key, node.value]
        if node.op in NEGATED:
            return f"NOT {text}", params
        return text, params


def _json(value: Any) -> str:
    # A float's repr is the shortest text that reads back as it, so a stored float and an
    # equal filter float are the same JSONB number.
    return json.dumps(value, ensure_ascii=False, allow_nan=False)
