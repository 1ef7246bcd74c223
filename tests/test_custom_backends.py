"""A user's own backend plugs in by subclassing a protocol, and survives save and open."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from helpers import ColorEmbedder, solid
from multimodal_rag import MultimodalRAG, VectorStore
from multimodal_rag._registry import resolve
from multimodal_rag.errors import NotFoundError, UnknownBackendError
from multimodal_rag.types import Neighbor


class DictVectorStore(VectorStore):
    """A brute-force store in plain numpy, as a user might write one."""

    kind: ClassVar[str] = "dict"

    def __init__(self, dim: int, *, note: str = "") -> None:
        self._dim, self.note, self.vectors = dim, note, {}

    @property
    def dim(self) -> int:
        return self._dim

    def add(self, ids, vectors) -> None:
        self.vectors.update(zip(ids, np.asarray(vectors, np.float32)))

    def search(self, queries, k, *, filter=None):
        ids = [i for i in self.vectors if filter is None or filter(i)]
        if not ids:
            return [[] for _ in np.atleast_2d(queries)]
        matrix = np.stack([self.vectors[i] for i in ids])
        out = []
        for query in np.atleast_2d(queries):
            scores = matrix @ query
            order = np.argsort(-scores)[:k]
            out.append([Neighbor(ids[j], float(scores[j])) for j in order])
        return out

    def remove(self, ids) -> int:
        return sum(self.vectors.pop(i, None) is not None for i in ids)

    def get_vectors(self, ids):
        try:
            return np.stack([self.vectors[i] for i in ids])
        except KeyError as exc:
            raise NotFoundError(str(exc)) from None

    def ids(self):
        return list(self.vectors)

    def __len__(self) -> int:
        return len(self.vectors)

    def __contains__(self, id: object) -> bool:
        return id in self.vectors

    def config(self) -> dict[str, Any]:
        return {"note": self.note}

    def save(self, directory: Path) -> None:
        (directory / "vectors.json").write_text(json.dumps({k: v.tolist() for k, v in self.vectors.items()}))

    @classmethod
    def load(cls, directory: Path, *, dim: int, **config: Any) -> DictVectorStore:
        store = cls(dim, **config)
        for key, value in json.loads((directory / "vectors.json").read_text()).items():
            store.vectors[key] = np.asarray(value, np.float32)
        return store


def test_custom_vector_store_survives_save_and_open(tmp_path: Path) -> None:
    embedder = ColorEmbedder()
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=embedder, vector_store=DictVectorStore(48, note="mine"))
    rag.add([solid("red"), solid("blue")], descriptions=["red one", "blue one"], progress=False)
    rag.save()
    rag.close()
    manifest = json.loads((tmp_path / "kb" / "manifest.json").read_text())
    assert manifest["vector_store"] == {"kind": "test_custom_backends:DictVectorStore", "config": {"note": "mine"}}
    with pytest.raises(UnknownBackendError, match="not allowed"):
        MultimodalRAG.open(tmp_path / "kb", embedder=embedder)
    rag = MultimodalRAG.open(tmp_path / "kb", embedder=embedder, allow_modules=["test_custom_backends"])
    assert isinstance(rag.vector_store, DictVectorStore) and rag.vector_store.note == "mine"
    assert rag.search(text="blue", k=1)[0].description == "blue one"


def test_registry_resolves_builtins_and_rejects_the_unknown() -> None:
    assert resolve("vector_store", "faiss-flat").__name__ == "FaissFlatStore"
    assert resolve("description_store", "sqlite").__name__ == "SQLiteDescriptionStore"
    with pytest.raises(UnknownBackendError, match="unknown vector store kind 'annoy'.*faiss-flat"):
        resolve("vector_store", "annoy")
    with pytest.raises(UnknownBackendError, match="does not implement VectorStore"):
        resolve("vector_store", "json:JSONDecoder", allow_modules=["json"])
    with pytest.raises(UnknownBackendError, match="cannot import"):
        resolve("vector_store", "json:Nope", allow_modules=["json"])


def test_duck_typed_store_without_subclassing_is_accepted() -> None:
    class Duck:
        kind = "duck"
        dim = 48

        def __getattr__(self, name):
            return getattr(DictVectorStore(48), name)

    assert resolve("vector_store", f"{__name__}:DictVectorStore", allow_modules=[__name__]) is DictVectorStore
    rag = MultimodalRAG(ColorEmbedder(), DictVectorStore(48))
    rag.add([solid("red")], progress=False)
    assert len(rag) == 1
