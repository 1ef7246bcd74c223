"""An installed package adds backends by entry point: found by kind, recorded by kind, no opt-in needed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from helpers import ColorEmbedder, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag._registry import installed_kinds, kind_of, resolve
from multimodal_rag.errors import UnknownBackendError

PLUGIN = '''
from multimodal_rag.vectors.faiss_flat import FaissFlatStore


class PluginFlatStore(FaissFlatStore):
    """A third party's vector store (here, FAISS under another name)."""
'''


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A package installed as pip would: its module and a dist-info folder with entry points."""
    (tmp_path / "mrag_plugin_store.py").write_text(PLUGIN)
    dist = tmp_path / "mrag_plugin_store-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mrag-plugin-store\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[multimodal_rag.vector_stores]\n"
        "plugin-flat = mrag_plugin_store:PluginFlatStore\n"
        "faiss-flat = mrag_plugin_store:PluginFlatStore\n"  # a clash: the built-in kind wins
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "plugin-flat"
    sys.modules.pop("mrag_plugin_store", None)


def test_an_installed_kind_is_found_recorded_and_reopened_without_allow_modules(installed_plugin: str, tmp_path: Path) -> None:
    assert installed_kinds("vector_store") == {"plugin-flat": "mrag_plugin_store:PluginFlatStore"}
    store_cls = resolve("vector_store", installed_plugin)
    assert store_cls.__name__ == "PluginFlatStore" and kind_of(store_cls(4)) == "plugin-flat"
    assert resolve("vector_store", "faiss-flat").__name__ == "FaissFlatStore"

    embedder = ColorEmbedder()
    with MultimodalRAG.create(tmp_path / "kb", embedder=embedder, vector_store=installed_plugin) as rag:
        rag.add([solid("red")], ids=["red"], descriptions=["a red square"], progress=False)
    reopened = MultimodalRAG.open(tmp_path / "kb", embedder=embedder, read_only=True)
    assert type(reopened.vector_store).__name__ == "PluginFlatStore"
    assert reopened.search(text="red", k=1)[0].id == "red"


def test_an_unknown_kind_names_the_entry_point_group() -> None:
    with pytest.raises(UnknownBackendError, match="multimodal_rag.vector_stores"):
        resolve("vector_store", "no-such-kind")
