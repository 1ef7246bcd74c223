"""The contract every VectorStore must keep (`multimodal_rag.testing.VectorStoreContract`), run
over every built-in store; a new backend adds one entry to VECTOR_STORES."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from conftest import on_server, server_uri
from helpers import ColorEmbedder, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag._validation import check_ids, check_vectors
from multimodal_rag.errors import CorruptFileError, NotFoundError
from multimodal_rag.protocols import IdFilter, VectorStore
from multimodal_rag.testing import DIM, VectorStoreContract
from multimodal_rag.types import Neighbor


def _faiss_flat(dim: int) -> VectorStore:
    from multimodal_rag.vectors.faiss_flat import FaissFlatStore

    return FaissFlatStore(dim)


def _faiss_hnsw(dim: int) -> VectorStore:
    from multimodal_rag.vectors.faiss_hnsw import FaissHNSWStore

    return FaissHNSWStore(dim)


def _hnswlib(dim: int) -> VectorStore:
    from multimodal_rag.vectors.hnswlib_store import HNSWLibStore

    return HNSWLibStore(dim)


def _faiss_ivf(dim: int) -> VectorStore:
    from multimodal_rag.vectors.faiss_ivf import FaissIVFStore

    # Few lists and a small training size, so that the 200-vector tests run on a
    # trained index and the few-vector tests on the exact fallback before training.
    return FaissIVFStore(dim, nlist=4, nprobe=2, train_size=50)


def _faiss_ivf_pq(dim: int) -> VectorStore:
    from multimodal_rag.vectors.faiss_ivf import FaissIVFStore

    # 8 sub-quantisers of 4 bits keep little of a 32-d vector: a re-ranking pool of
    # 16 candidates per result lets the exact stage recover the true neighbours.
    return FaissIVFStore(dim, nlist=4, nprobe=2, pq_m=8, k_factor=16, train_size=50)


def _milvus(dim: int) -> VectorStore:
    from multimodal_rag.vectors.milvus import MilvusVectorStore

    return on_server(MilvusVectorStore(dim, uri=server_uri("MILVUS_URI", "Milvus")))  # type: ignore[return-value]


#: name -> factory(dim) of an empty store. Every store here must pass every test below.
VECTOR_STORES: dict[str, Callable[[int], VectorStore]] = {
    "faiss-flat": _faiss_flat,
    "faiss-hnsw": _faiss_hnsw,
    "faiss-ivf": _faiss_ivf,
    "faiss-ivf-pq": _faiss_ivf_pq,
    "hnswlib": _hnswlib,
    "milvus": _milvus,
}

def _docs_contract_test() -> type[VectorStoreContract]:
    # The test module of docs/custom-backend.md, as a user writes it: the library's suite
    # subclassed for the page's store, so the page's store and its test both stay correct.
    from doc_examples import REPO, import_doc_module

    page = REPO / "docs" / "custom-backend.md"
    import_doc_module(page, "my_backends")
    test_class: type[VectorStoreContract] = import_doc_module(page, "test_my_backends").TestNumpyVectorStore
    return test_class


TestDocsNumpyVectorStore = _docs_contract_test()


class TestVectorStores(VectorStoreContract):
    """The library's contract suite over every store above."""

    @pytest.fixture(params=sorted(VECTOR_STORES))
    def make_store(self, request: pytest.FixtureRequest) -> Callable[[], VectorStore]:
        return lambda: VECTOR_STORES[request.param](DIM)


# -- the facade keeps the protocol's side of the contract -------------------------------


class ProtocolOnlyStore(VectorStore):
    """A store that does only what the VectorStore docstrings promise, and checks that it is
    used only as they say: queries of shape ``(n, dim)``, and ``load`` with ``dim`` optional."""

    kind: ClassVar[str] = "protocol-only"

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._vectors: dict[str, np.ndarray] = {}

    @property
    def dim(self) -> int:
        return self._dim

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        ids = check_ids(ids)
        self._vectors.update(zip(ids, check_vectors(vectors, self._dim, count=len(ids))))

    def search(self, queries: np.ndarray, k: int, *, filter: IdFilter | None = None) -> list[list[Neighbor]]:
        assert isinstance(queries, np.ndarray) and queries.ndim == 2 and queries.shape[1] == self._dim, (
            f"queries of shape {np.shape(queries)}, where the protocol promises (n, {self._dim})"
        )
        ids = [i for i in self._vectors if filter is None or filter(i)]
        results = []
        for query in queries:
            scores = [float(self._vectors[i] @ query) for i in ids]
            order = np.argsort(-np.asarray(scores), kind="stable")[:k]
            results.append([Neighbor(ids[j], scores[j]) for j in order])
        return results

    def remove(self, ids: Iterable[str]) -> int:
        return sum(self._vectors.pop(i, None) is not None for i in ids)

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        missing = [i for i in ids if i not in self._vectors]
        if missing:
            raise NotFoundError(f"no vector with id {missing[0]!r}")
        return np.stack([self._vectors[i] for i in ids]) if ids else np.empty((0, self._dim), np.float32)

    def ids(self) -> list[str]:
        return list(self._vectors)

    def __len__(self) -> int:
        return len(self._vectors)

    def __contains__(self, id: object) -> bool:
        return id in self._vectors

    def config(self) -> dict[str, Any]:
        return {}

    def save(self, directory: Path) -> None:
        ids = list(self._vectors)
        matrix = np.stack([self._vectors[i] for i in ids]) if ids else np.empty((0, self._dim), np.float32)
        np.save(Path(directory) / "vectors.npy", matrix)
        (Path(directory) / "ids.json").write_text(json.dumps(ids), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, *, dim: int | None = None, **config: Any) -> ProtocolOnlyStore:
        matrix = np.load(Path(directory) / "vectors.npy", allow_pickle=False)
        if dim is not None and matrix.shape[1] != dim:
            raise CorruptFileError(f"vectors of dimension {matrix.shape[1]}, not {dim}")
        store = cls(matrix.shape[1], **config)
        ids = json.loads((Path(directory) / "ids.json").read_text(encoding="utf-8"))
        store._vectors = dict(zip(ids, matrix))
        return store


def test_the_facade_passes_queries_of_shape_n_by_dim(tmp_path: Path) -> None:
    embedder = ColorEmbedder()
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=embedder, vector_store=ProtocolOnlyStore(embedder.dim))
    rag.add([solid("red"), solid("blue")], descriptions=["red one", "blue one"], progress=False)
    blue = embedder.embed_texts(["blue"])
    assert rag.search_by_vector(blue[0], k=1)[0].description == "blue one"  # one vector, (dim,)
    assert rag.search_by_vector(blue, k=1)[0].description == "blue one"  # one row, (1, dim)
    assert rag.search(text="red", k=1)[0].description == "red one"
    assert rag.search(image=solid("blue"), text="blue", k=2, filter={"nope": 1}) == []
    rag.save()
    rag.close()
    # The facade still passes the manifest's dim to load, which a store may take or leave.
    reopened = MultimodalRAG.open(tmp_path / "kb", embedder=embedder, allow_modules=[__name__])
    assert isinstance(reopened.vector_store, ProtocolOnlyStore) and reopened.vector_store.dim == embedder.dim
    assert reopened.search(text="blue", k=1)[0].description == "blue one"
    reopened.close()
