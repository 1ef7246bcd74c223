"""What a default install brings, and what an extra's missing package says."""

from __future__ import annotations

import sys

import pytest

from doc_examples import REPO


def project() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def names(requirements: list[str]) -> set[str]:
    import re

    return {re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_the_default_install_needs_no_compiler_nor_an_old_setuptools() -> None:
    pyproject = project()
    default = names(pyproject["dependencies"])
    assert "hnswlib" not in default  # no wheels: it would need a C++ compiler
    assert "setuptools" not in default  # pkg_resources is stood in for where it is gone
    extras = pyproject["optional-dependencies"]
    assert names(extras["hnswlib"]) == {"hnswlib"}
    assert names(extras["postgres"]) == {"psycopg", "psycopg_pool"}
    assert "psycopg[binary]>=3.1" in extras["postgres-binary"]
    for extra in ("hnswlib", "heif", "docs", "postgres-binary"):
        assert any(extra in requirement for requirement in extras["dev"] if "multimodal-rag[" in requirement)


def test_the_default_index_is_faiss(tmp_path) -> None:
    from helpers import ColorEmbedder
    from multimodal_rag import FaissFlatStore, MultimodalRAG

    with MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder()) as rag:
        assert isinstance(rag.vector_store, FaissFlatStore)
    from multimodal_rag.cli.build import INDEX_KINDS

    assert INDEX_KINDS["flat"] == "faiss-flat"


def test_hnswlib_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from multimodal_rag import HNSWLibStore
    from multimodal_rag.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "hnswlib", None)  # as if it were not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'multimodal-rag\[hnswlib\]'"):
        HNSWLibStore(8)


def test_project_metadata_for_the_package_index() -> None:
    pyproject = project()
    # No address is published that nothing serves: the project names no URLs until it has them.
    assert "urls" not in pyproject
    classifiers = pyproject["classifiers"]
    for minor in range(10, 14):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert "Operating System :: POSIX" in classifiers
    # The license is the SPDX expression; package indexes refuse a License classifier beside it.
    assert pyproject["license"] == "MIT" and not any(c.startswith("License ::") for c in classifiers)


def test_writing_is_refused_clearly_off_posix(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from helpers import ColorEmbedder
    from multimodal_rag import MultimodalRAG
    from multimodal_rag._kb import directory
    from multimodal_rag.errors import KnowledgeBaseError

    with MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder()):
        pass
    monkeypatch.setattr(directory, "_POSIX", False)
    with pytest.raises(KnowledgeBaseError, match="writing needs a POSIX system"):
        MultimodalRAG.open(tmp_path / "kb", allow_modules=["helpers"])
    with pytest.raises(KnowledgeBaseError, match="writing needs a POSIX system"):
        MultimodalRAG.create(tmp_path / "new", embedder=ColorEmbedder())
    assert not (tmp_path / "new").exists()  # refused before any folder was made
