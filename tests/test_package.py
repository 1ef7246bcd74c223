"""The package's public face: lazy imports, a sorted and complete __all__."""

from __future__ import annotations

import subprocess
import sys

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
    for name in multimodal_rag.__all__:
        assert getattr(multimodal_rag, name) is not None
    assert set(multimodal_rag.__all__) <= set(dir(multimodal_rag))


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
