"""The package's public face: lazy imports, a sorted and complete __all__."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import multimodal_rag


def test_import_does_not_load_heavy_libraries() -> None:
    code = (
        "import sys, multimodal_rag; "
        "rag = multimodal_rag.MultimodalRAG; "
        "print(' '.join(m for m in ('torch', 'faiss', 'openai', 'clip', 'hnswlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_all_is_sorted_complete_and_resolves() -> None:
    assert multimodal_rag.__all__ == sorted(multimodal_rag.__all__)
    assert multimodal_rag.__all__ == sorted([*multimodal_rag._EXPORTS, "__version__"])
    for name in multimodal_rag.__all__:
        assert getattr(multimodal_rag, name) is not None
    assert set(multimodal_rag.__all__) <= set(dir(multimodal_rag))


def _init_tree() -> ast.Module:
    assert multimodal_rag.__file__ is not None
    return ast.parse(Path(multimodal_rag.__file__).read_text(encoding="utf-8"))


def test_all_is_a_literal_list() -> None:
    # Type checkers read __all__ only when it is written out; a computed one hides every name.
    (assignment,) = [
        node
        for node in _init_tree().body
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
    ]
    assert isinstance(assignment.value, ast.List)
    assert [ast.literal_eval(element) for element in assignment.value.elts] == multimodal_rag.__all__


def test_type_checkers_see_every_lazy_name_where_it_resolves() -> None:
    # The imports under `if TYPE_CHECKING:` are what mypy and pyright see; the lazy table is
    # what runs. They must name the same objects from the same modules.
    (block,) = [
        node
        for node in _init_tree().body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
    ]
    seen = {
        alias.asname or alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert seen == multimodal_rag._EXPORTS


def test_every_error_is_exported_and_derives_from_the_root() -> None:
    from multimodal_rag import errors

    for name in errors.__all__:
        assert name in multimodal_rag.__all__
        assert issubclass(getattr(errors, name), errors.MultimodalRAGError)


def test_errors_also_subclass_builtins() -> None:
    from multimodal_rag import errors

    assert issubclass(errors.DimensionMismatchError, ValueError)
    assert issubclass(errors.NotFoundError, KeyError)
    assert issubclass(errors.KnowledgeBaseNotFoundError, FileNotFoundError)
    assert issubclass(errors.AnswererTimeoutError, TimeoutError)


def test_unknown_attribute_raises_attribute_error() -> None:
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        multimodal_rag.Nope  # noqa: B018
