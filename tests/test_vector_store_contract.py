"""The contract every VectorStore must keep. A new backend adds one entry to VECTOR_STORES."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from conftest import clustered_vectors, on_server, server_uri
from helpers import ColorEmbedder, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag.errors import (
    CorruptFileError,
    DimensionMismatchError,
    InvalidInputError,
    NotFoundError,
)
from multimodal_rag.protocols import IdFilter, VectorStore
from multimodal_rag.types import Neighbor
from multimodal_rag.validation import check_ids, check_vectors


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


def _docs_numpy(dim: int) -> VectorStore:
    # The worked example of docs/custom-backend.md, so the documentation stays correct.
    from doc_examples import REPO, import_doc_module

    return import_doc_module(REPO / "docs" / "custom-backend.md", "my_backends").NumpyVectorStore(dim)


#: name -> factory(dim) of an empty store. Every store here must pass every test below.
VECTOR_STORES: dict[str, Callable[[int], VectorStore]] = {
    "faiss-flat": _faiss_flat,
    "faiss-hnsw": _faiss_hnsw,
    "faiss-ivf": _faiss_ivf,
    "faiss-ivf-pq": _faiss_ivf_pq,
    "hnswlib": _hnswlib,
    "milvus": _milvus,
    "numpy (docs/custom-backend.md)": _docs_numpy,
}

DIM = 32


@pytest.fixture(params=sorted(VECTOR_STORES))
def make_store(request: pytest.FixtureRequest) -> Callable[[], VectorStore]:
    return lambda: VECTOR_STORES[request.param](DIM)


def reload(store: VectorStore, directory: Path) -> VectorStore:
    directory.mkdir()
    store.save(directory)
    config: dict[str, Any] = json.loads(json.dumps(store.config()))  # as the manifest keeps it
    return type(store).load(directory, dim=store.dim, **config)


@pytest.fixture
def data(rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    vectors = clustered_vectors(rng, 200, DIM)
    return [f"img-{i}" for i in range(len(vectors))], vectors


def test_each_vector_finds_itself_first(make_store, data) -> None:
    ids, vectors = data
    store = make_store()
    store.add(ids, vectors)
    results = store.search(vectors[:50], 5)
    assert [r[0].id for r in results] == ids[:50]
    for row in results:
        assert row[0].score == pytest.approx(1.0, abs=1e-4)
        scores = [n.score for n in row]
        assert scores == sorted(scores, reverse=True)


def test_scores_are_inner_products(make_store, data) -> None:
    ids, vectors = data
    store = make_store()
    store.add(ids, vectors)
    query = vectors[7]
    for neighbor in store.search(query[None, :], 10)[0]:
        expected = float(vectors[ids.index(neighbor.id)] @ query)
        assert neighbor.score == pytest.approx(expected, abs=1e-3)


def test_k_larger_than_store_returns_everything_unpadded(make_store, data) -> None:
    ids, vectors = data
    store = make_store()
    store.add(ids[:3], vectors[:3])
    result = store.search(vectors[:1], 50)[0]
    assert sorted(n.id for n in result) == sorted(ids[:3])
    assert all(isinstance(n.id, str) for n in result)


def test_empty_store_returns_no_results(make_store, data) -> None:
    store = make_store()
    assert len(store) == 0
    assert store.search(data[1][:2], 3) == [[], []]


def test_unicode_ids_round_trip(make_store, data, tmp_path: Path) -> None:
    ids = ["🦜 parrot", "طوطی", "a/b\\c", "x" * 300]
    store = make_store()
    store.add(ids, data[1][:4])
    loaded = reload(store, tmp_path / "s")
    assert sorted(loaded.ids()) == sorted(ids)
    assert loaded.search(data[1][1:2], 1)[0][0].id == "طوطی"


def test_remove_drops_ids_and_ignores_unknown(make_store, data) -> None:
    ids, vectors = data
    store = make_store()
    store.add(ids, vectors)
    assert store.remove([ids[0], ids[1], "never-added"]) == 2
    assert len(store) == len(ids) - 2
    assert ids[0] not in store and ids[2] in store
    returned = {n.id for row in store.search(vectors[:5], 20) for n in row}
    assert ids[0] not in returned and ids[1] not in returned
    assert store.remove([ids[0]]) == 0


def test_readding_an_id_replaces_its_vector(make_store, data) -> None:
    ids, vectors = data
    store = make_store()
    store.add(ids[:10], vectors[:10])
    store.add([ids[0]], vectors[50:51])
    assert len(store) == 10
    np.testing.assert_allclose(store.get_vectors([ids[0]])[0], vectors[50], atol=1e-5)
    assert store.search(vectors[50:51], 1)[0][0].id == ids[0]


def test_labels_are_never_reused_after_removal(make_store, data, tmp_path: Path) -> None:
    ids, vectors = data
    store = make_store()
    store.add(["a", "b"], vectors[:2])
    store.remove(["a"])
    store.add(["c"], vectors[2:3])
    store = reload(store, tmp_path / "s")
    store.add(["d"], vectors[3:4])
    np.testing.assert_allclose(store.get_vectors(["b", "c", "d"]), vectors[1:4], atol=1e-5)
    for row, expected in zip(store.search(vectors[1:4], 1), ["b", "c", "d"]):
        assert row[0].id == expected


def test_get_vectors_of_unknown_id_raises(make_store, data) -> None:
    store = make_store()
    store.add(["a"], data[1][:1])
    with pytest.raises(NotFoundError, match="'zzz'"):
        store.get_vectors(["a", "zzz"])


@pytest.mark.parametrize(
    ("ids", "vectors", "error"),
    [
        (["a"], np.ones((1, DIM + 1)), DimensionMismatchError),
        (["a", "b"], np.ones((1, DIM)), InvalidInputError),
        (["a", "a"], np.ones((2, DIM)), InvalidInputError),
        ([""], np.ones((1, DIM)), InvalidInputError),
        (["a"], np.full((1, DIM), np.nan), InvalidInputError),
        (["a"], np.full((1, DIM), np.inf), InvalidInputError),
        (["a"], np.zeros((1, DIM)), InvalidInputError),
        (["a"], np.array([["x"] * DIM]), InvalidInputError),
        (["a"], np.ones((1, 2, DIM)), InvalidInputError),
        ("ab", np.ones((2, DIM)), InvalidInputError),
    ],
)
def test_bad_adds_are_refused_and_change_nothing(make_store, data, ids, vectors, error) -> None:
    store = make_store()
    store.add(["keep"], data[1][:1])
    with pytest.raises(error):
        store.add(ids, vectors)
    assert store.ids() == ["keep"]
    assert store.search(data[1][:1], 5)[0][0].id == "keep"


def test_bad_queries_are_refused(make_store, data) -> None:
    store = make_store()
    store.add(["a"], data[1][:1])
    with pytest.raises(InvalidInputError):
        store.search(data[1][:1], 0)
    with pytest.raises(DimensionMismatchError):
        store.search(np.ones((1, DIM + 2), np.float32), 1)
    with pytest.raises(InvalidInputError):
        store.search(np.full((1, DIM), np.nan, np.float32), 1)


def test_filtered_search_still_returns_k(make_store, data) -> None:
    ids, vectors = data
    store = make_store()
    store.add(ids, vectors)
    wanted = set(ids[::10])  # 20 of 200, mostly far from the query
    result = store.search(vectors[1:2], 15, filter=wanted.__contains__)[0]
    assert len(result) == 15
    assert {n.id for n in result} <= wanted
    assert store.search(vectors[1:2], 50, filter=wanted.__contains__)[0].__len__() == 20


def test_a_store_that_filters_metadata_agrees_with_matches(make_store, data) -> None:
    from multimodal_rag.filters import NotExpressible, parse_filter

    ids, vectors = data
    store = make_store()
    store.add(ids[:40], vectors[:40])
    where = parse_filter({"kind": {"$in": ["a", 1]}, "n": {"$ne": 3}})
    if not getattr(store, "filters_metadata", False):
        # The protocol's defaults: nothing kept, nothing filtered here.
        if hasattr(store, "search_where"):
            with pytest.raises(NotExpressible):
                store.search_where(vectors[:1], 5, where)
        return
    metadata = {id_: {"kind": ["a", 1, "b", True][i % 4], "n": i % 5} for i, id_ in enumerate(ids[:40])}
    store.set_metadata({**metadata, "never-added": {"kind": "a"}})
    found = store.search_where(vectors[:2], 40, where)
    expected = {id_ for id_, m in metadata.items() if where.matches(m)}
    assert all({n.id for n in row} == expected for row in found)
    assert store.metadata_mismatches(metadata) == []
    changed = {ids[0]: {"kind": "z"}, ids[1]: metadata[ids[1]]}
    assert store.metadata_mismatches(changed) == [ids[0]]
    store.add(ids[2:3], vectors[2:3])  # a replaced vector starts with an empty copy
    store.remove(ids[3:4])
    assert store.metadata_mismatches({id_: metadata[id_] for id_ in ids[2:4]}) == [ids[2]]


def test_save_and_load_give_the_same_results(make_store, data, tmp_path: Path) -> None:
    ids, vectors = data
    store = make_store()
    store.add(ids, vectors)
    store.remove(ids[:5])
    loaded = reload(store, tmp_path / "s")
    assert len(loaded) == len(store) and sorted(loaded.ids()) == sorted(store.ids())
    assert loaded.search(vectors[:20], 5) == store.search(vectors[:20], 5)
    assert all(isinstance(v, (int, float, str, bool, type(None), list, dict)) for v in loaded.config().values())


def test_single_query_vector_is_accepted(make_store, data) -> None:
    store = make_store()
    store.add(["a", "b"], data[1][:2])
    assert store.search(data[1][1], 1)[0][0].id == "b"


def test_many_removals_never_return_removed_ids(make_store, data, tmp_path: Path) -> None:
    # Enough removals that approximate stores must skip tombstones, compact on save,
    # or fall back to exact search for some queries.
    ids, vectors = data
    store = make_store()
    store.add(ids, vectors)
    removed = set(ids[::4]) | set(ids[100:])
    store.remove(removed)
    live = [i for i in ids if i not in removed]
    for current in (store, reload(store, tmp_path / "s")):
        assert sorted(current.ids()) == sorted(live)
        for row in current.search(vectors[:40], 20):
            assert len(row) == 20
            assert not {n.id for n in row} & removed
        assert len(current.search(vectors[:1], 500)[0]) == len(live)


def test_growing_in_batches_keeps_every_vector_findable(make_store, rng) -> None:
    vectors = clustered_vectors(rng, 2500, DIM, clusters=40)
    ids = [f"v{i}" for i in range(len(vectors))]
    store = make_store()
    for start in range(0, len(ids), 500):  # past any initial capacity or training size
        store.add(ids[start : start + 500], vectors[start : start + 500])
    assert len(store) == len(ids)
    sample = rng.choice(len(ids), 100, replace=False)
    found = [ids[i] in {n.id for n in row} for i, row in zip(sample, store.search(vectors[sample], 5))]
    assert sum(found) >= 98  # approximate stores may miss a rare one


def test_searches_from_many_threads_while_one_thread_writes(make_store, rng) -> None:
    import threading

    vectors = clustered_vectors(rng, 1200, DIM, clusters=30)
    ids = [f"v{i}" for i in range(len(vectors))]
    row_of = {id_: i for i, id_ in enumerate(ids)}
    anchors = list(range(0, 200, 10))  # added first and never removed
    store = make_store()
    store.add(ids[:200], vectors[:200])
    stop = threading.Event()
    failures: list[str] = []

    def write() -> None:
        try:
            for start in range(200, len(ids), 100):
                store.add(ids[start : start + 100], vectors[start : start + 100])
                store.remove([ids[i] for i in range(start - 100, start) if i % 10])
                store.add([ids[start + 1]], vectors[start + 1 : start + 2])  # replace one
        except Exception as exc:  # reported by the main thread
            failures.append(f"writer: {exc!r}")
        finally:
            stop.set()

    def read(seed: int) -> None:
        local = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                picks = local.choice(anchors, 3)
                for anchor, row in zip(picks, store.search(vectors[picks], 10)):
                    assert row[0].id == ids[anchor], "an anchor did not find itself"
                    assert len({n.id for n in row}) == len(row), "an id appears twice"
                    for n in row:  # the score belongs to the vector of the id returned with it
                        expected = float(vectors[row_of[n.id]] @ vectors[anchor])
                        assert abs(n.score - expected) < 1e-3, f"torn result for {n.id}"
        except Exception as exc:
            failures.append(f"reader: {exc!r}")
            stop.set()

    threads = [threading.Thread(target=read, args=(seed,)) for seed in range(4)]
    threads.append(threading.Thread(target=write))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures[:3]
    live = set(store.ids())
    assert all(ids[a] in live for a in anchors) and len(live) == len(store)


def test_batched_and_single_queries_agree(make_store, data) -> None:
    # Stores may take another code path for one query than for many (FAISS flat does).
    ids, vectors = data
    store = make_store()
    store.add(ids, vectors)
    batched = store.search(vectors[:40], 7)
    for query, expected in zip(vectors[:40], batched):
        single = store.search(query[None, :], 7)[0]
        assert [n.id for n in single] == [n.id for n in expected]
        assert [n.score for n in single] == pytest.approx([n.score for n in expected], abs=1e-5)


def test_load_reads_the_dimension_from_the_files(make_store, data, tmp_path: Path) -> None:
    ids, vectors = data
    store = make_store()
    store.add(ids[:20], vectors[:20])
    directory = tmp_path / "s"
    directory.mkdir()
    store.save(directory)
    config: dict[str, Any] = json.loads(json.dumps(store.config()))
    loaded = type(store).load(directory, **config)
    assert loaded.dim == DIM
    assert loaded.search(vectors[:5], 3) == store.search(vectors[:5], 3)
    with pytest.raises((CorruptFileError, DimensionMismatchError)):
        type(store).load(directory, dim=DIM + 1, **config)


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
