"""The shape of a parsed filter as the dialects see it: nodes they visit, and the visitor.

The tree (``_tree``) calls the dialects, so the dialects know its nodes only by these
structural types, never by importing the tree: the package has no import cycle, not even
one that only type checkers follow.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from multimodal_rag.filters._values import Scalar

__all__ = ["ConditionNode", "FilterNode", "FilterVisitor", "GroupNode"]

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


class FilterNode(Protocol):
    """Any node: a dialect recurses by calling ``accept``."""

    def accept(self, visitor: FilterVisitor[_T], /) -> _T: ...

    @property
    def contains_nul(self) -> bool: ...


class ConditionNode(Protocol):
    """One comparison of one key's value (``_tree.Condition``)."""

    @property
    def key(self) -> str: ...

    @property
    def op(self) -> str: ...

    @property
    def value(self) -> Scalar | tuple[Scalar, ...]: ...

    @property
    def by_kind(self) -> dict[str, frozenset[Any]]: ...


class GroupNode(Protocol):
    """``$and`` or ``$or`` of other filters (``_tree.And``, ``_tree.Or``)."""

    @property
    def filters(self) -> tuple[FilterNode, ...]: ...


class FilterVisitor(Protocol[_T_co]):
    """A dialect: what it makes of each kind of node."""

    def condition(self, node: ConditionNode, /) -> _T_co: ...

    def all_of(self, node: GroupNode, /) -> _T_co: ...

    def any_of(self, node: GroupNode, /) -> _T_co: ...
