"""What the SQLite and PostgreSQL dialects share: checked column names, the NUL refusal and
balanced AND/OR."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from multimodal_rag.errors import InvalidInputError

if TYPE_CHECKING:
    from multimodal_rag.filters._nodes import FilterNode

_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


def column_parts(column: object) -> list[str]:
    """``column``'s table (if any) and name, checked to need no quoting."""
    if not isinstance(column, str) or not _COLUMN.fullmatch(column):
        raise InvalidInputError(
            f"column must be a column name or table.column of letters, digits and '_', got {column!r:.80}"
        )
    return column.split(".")


def refuse_nul(filter: FilterNode, database: str) -> None:
    """Raise InvalidInputError when ``filter`` holds NUL, which SQL text cannot."""
    if filter.contains_nul:
        raise InvalidInputError(
            f"filter: a key or string holds the NUL character, which {database} cannot compare; "
            "test records with matches() instead"
        )


def join(terms: Sequence[tuple[str, list[Any]]], word: str, empty: str) -> tuple[str, list[Any]]:
    """``terms`` joined by AND or OR, nested in halves so the parser's depth grows as log(n)."""
    if not terms:
        return empty, []
    if len(terms) == 1:
        return terms[0]
    middle = len(terms) // 2
    left, left_params = join(terms[:middle], word, empty)
    right, right_params = join(terms[middle:], word, empty)
    return f"({left} {word} {right})", [*left_params, *right_params]
