"""The Python dialect: whether a record's metadata passes a filter, by the rules in
`multimodal_rag.filters`' documentation. Every other dialect is tested against this one."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from multimodal_rag.filters._values import NEGATED, kind_of

if TYPE_CHECKING:
    from multimodal_rag.filters._nodes import ConditionNode, FilterNode, GroupNode

__all__ = ["matches"]

_ORDERED: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}


def matches(filter: FilterNode, metadata: Mapping[str, Any]) -> bool:
    """Whether ``metadata`` passes ``filter``."""
    return filter.accept(_Matcher(metadata))


class _Matcher:
    def __init__(self, metadata: Mapping[str, Any]) -> None:
        self.metadata = metadata

    def condition(self, node: ConditionNode) -> bool:
        if node.op in NEGATED:
            return not self._positive(node, NEGATED[node.op])
        return self._positive(node, node.op)

    def all_of(self, node: GroupNode) -> bool:
        return all(f.accept(self) for f in node.filters)

    def any_of(self, node: GroupNode) -> bool:
        return any(f.accept(self) for f in node.filters)

    def _positive(self, node: ConditionNode, op: str) -> bool:
        if node.key not in self.metadata:
            return False
        stored = self.metadata[node.key]
        kind = kind_of(stored)
        if kind == "other":
            return False
        if op == "$in":
            return stored in node.by_kind.get(kind, ())
        if kind != kind_of(node.value):
            return False
        if op == "$eq":
            return bool(stored == node.value)
        return kind in ("number", "string") and _ORDERED[op](stored, node.value)
