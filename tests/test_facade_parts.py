"""MultimodalRAG is composed of parts, not cut into base classes: each part is given what it
needs, and none reads another object's private attributes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from multimodal_rag._rag import MultimodalRAG

SRC = Path(__file__).resolve().parents[1] / "src" / "multimodal_rag"
PARTS = sorted((SRC / "_facade").glob("*.py")) + [SRC / "_query.py"]


def test_the_facade_inherits_from_nothing() -> None:
    assert MultimodalRAG.__bases__ == (object,)


@pytest.mark.parametrize("module", PARTS, ids=lambda p: p.name)
def test_a_part_reads_no_other_objects_private_attributes(module: Path) -> None:
    """``self._state.journal`` is a part's own attribute, then a public one; ``rag._journal`` or
    ``self._state._x`` would reach into another object."""
    reaching = [
        f"{module.name}:{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    ]
    assert not reaching, reaching


def test_every_public_method_is_the_facades_own_and_documented() -> None:
    """The reference page renders the facade's own docstrings: none may be missing."""
    undocumented = [
        name
        for name in vars(MultimodalRAG)
        if not name.startswith("_") and not (getattr(MultimodalRAG, name).__doc__ or "").strip()
    ]
    assert not undocumented
