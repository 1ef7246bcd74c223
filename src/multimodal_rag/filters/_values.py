"""What the parsed tree and every dialect share about a filter's values: their kinds, the
operators that negate others, and the ordered comparisons."""

from __future__ import annotations

from typing import Any, TypeAlias

#: A value a filter compares with: what JSON holds that is not a list or an object.
Scalar: TypeAlias = str | int | float | bool | None

#: The ordered comparisons, with the sign SQL and Milvus write each with.
ORDERED = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}

#: ``$ne`` and ``$nin`` are exactly the negations of ``$eq`` and ``$in``; every dialect writes
#: the positive test and negates it.
NEGATED = {"$ne": "$eq", "$nin": "$in"}

#: SQLite and Milvus keep integers in 64 bits; a larger filter value is compared as a float there.
INT64 = range(-(2**63), 2**63)


def kind_of(value: Any) -> str:
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
