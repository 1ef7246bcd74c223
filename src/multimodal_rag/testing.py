"""Contract suites that hold a backend to the protocols, for your own pytest.

The built-in embedders and stores pass these same tests. Subclass a suite in a test module
and say how to build your backend; pytest collects the subclass (name it ``Test...``) and
runs every test against it:

```python
from multimodal_rag.testing import DescriptionStoreContract, EmbedderContract, VectorStoreContract
from my_backends import ColorHistogramEmbedder, NumpyVectorStore


class TestNumpyVectorStore(VectorStoreContract):
    def new_store(self, dim):
        return NumpyVectorStore(dim)  # an empty store of this dimension


class TestColorHistogramEmbedder(EmbedderContract):
    def new_embedder(self, root):
        return ColorHistogramEmbedder()  # root: a scratch folder, for weights or caches
```

[`VectorStoreContract`][multimodal_rag.testing.VectorStoreContract] checks search results and
scores, ``k`` past the end, id filters, removal, re-adding, unicode ids, save and load,
refused input, concurrent searches during writes, and a store's own metadata filters where it
keeps them. [`DescriptionStoreContract`][multimodal_rag.testing.DescriptionStoreContract]
checks records, refused records, save and load, and ``matching_ids`` against a table of
metadata filters. [`EmbedderContract`][multimodal_rag.testing.EmbedderContract] checks unit
float32 vectors of ``dim``, determinism, batches against one by one, the streaming batches,
and the ``ImageError`` of a bad image.

This module imports pytest, so import it only from tests. pytest rewrites the assertions of
test modules only: add ``pytest.register_assert_rewrite("multimodal_rag.testing")`` to your
``conftest.py`` for detailed failure messages from these suites.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from PIL import Image

from multimodal_rag._text_normalisation import index_text
from multimodal_rag.errors import (
    CorruptFileError,
    DimensionMismatchError,
    ImageError,
    InvalidInputError,
    NotFoundError,
)
from multimodal_rag.filters import NotExpressible, parse_filter
from multimodal_rag.ocr import ReadText, TextLine
from multimodal_rag.protocols import DescriptionStore, Embedder, VectorStore
from multimodal_rag.types import Record

__all__ = ["DIM", "DescriptionStoreContract", "EmbedderContract", "VectorStoreContract", "clustered_vectors"]

#: The dimension of the vectors `VectorStoreContract` gives a store.
DIM = 32

_Store = TypeVar("_Store", VectorStore, DescriptionStore)


def clustered_vectors(rng: np.random.Generator, n: int, dim: int, clusters: int = 8) -> np.ndarray:
    """Unit float32 vectors in a few clusters, so that nearest neighbours are well defined."""
    centers = rng.standard_normal((clusters, dim))
    rows = centers[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, dim))
    unit: np.ndarray = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    return unit


def _reload(store: _Store, directory: Path) -> _Store:
    """The store saved to ``directory`` and loaded again, with its config as a manifest keeps it."""
    directory.mkdir()
    store.save(directory)
    config: dict[str, Any] = json.loads(json.dumps(store.config()))
    if isinstance(store, VectorStore):
        return type(store).load(directory, dim=store.dim, **config)
    return type(store).load(directory, **config)


# -- vector stores --------------------------------------------------------------------


class VectorStoreContract:
    """The contract of [`VectorStore`][multimodal_rag.protocols.VectorStore]: subclass it and
    define `new_store`, or override the ``make_store`` fixture (a function of no arguments
    that returns an empty store of dimension `DIM`) to run it over several stores."""

    def new_store(self, dim: int) -> VectorStore:
        """An empty store of vectors of dimension ``dim``."""
        raise NotImplementedError(f"{type(self).__name__} must define new_store(self, dim) or a make_store fixture")

    @pytest.fixture
    def make_store(self) -> Callable[[], VectorStore]:
        return lambda: self.new_store(DIM)

    @pytest.fixture
    def rng(self) -> np.random.Generator:
        return np.random.default_rng(1234)

    @pytest.fixture
    def data(self, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
        vectors = clustered_vectors(rng, 200, DIM)
        return [f"img-{i}" for i in range(len(vectors))], vectors

    def test_each_vector_finds_itself_first(self, make_store: Callable[[], VectorStore], data: tuple[list[str], np.ndarray]) -> None:
        ids, vectors = data
        store = make_store()
        store.add(ids, vectors)
        results = store.search(vectors[:50], 5)
        assert [r[0].id for r in results] == ids[:50]
        for row in results:
            assert row[0].score == pytest.approx(1.0, abs=1e-4)
            scores = [n.score for n in row]
            assert scores == sorted(scores, reverse=True)


    def test_scores_are_inner_products(self, make_store: Callable[[], VectorStore], data: tuple[list[str], np.ndarray]) -> None:
        ids, vectors = data
        store = make_store()
        store.add(ids, vectors)
        query = vectors[7]
        for neighbor in store.search(query[None, :], 10)[0]:
            expected = float(vectors[ids.index(neighbor.id)] @ query)
            assert neighbor.score == pytest.approx(expected, abs=1e-3)


    def test_k_larger_than_store_returns_everything_unpadded(self, make_store: Callable[[], VectorStore], data: tuple[list[str], np.ndarray]) -> None:
        ids, vectors = data
        store = make_store()
        store.add(ids[:3], vectors[:3])
        result = store.search(vectors[:1], 50)[0]
        assert sorted(n.id for n in result) == sorted(ids[:3])
        assert all(isinstance(n.id, str) for n in result)


    def test_empty_store_returns_no_results(self, make_store: Callable[[], VectorStore], data: tuple[list[str], np.ndarray]) -> None:
        store = make_store()
        assert len(store) == 0
        assert store.search(data[1][:2], 3) == [[], []]


    def test_unicode_ids_round_trip(self, make_store: Callable[[], VectorStore], data: tuple[list[str], np.ndarray], tmp_path: Path) -> None:
        ids = ["🦜 parrot", "طوطی", "a/b\\c", "x" * 300]
        store = make_store()
        store.add(ids, data[1][:4])
        loaded = _reload(store, tmp_path / "s")
        assert sorted(loaded.ids()) == sorted(ids)
        assert loaded.search(data[1][1:2], 1)[0][0].id == "طوطی"


    def test_remove_drops_ids_and_ignores_unknown(self, make_store: Callable[[], VectorStore], data: tuple[list[str], np.ndarray]) -> None:
        ids, vectors = data
        store = make_store()
        store.add(ids, vectors)
        assert store.remove([ids[0], ids[1], "never-added"]) == 2
        assert len(store) == len(ids) - 2
        assert ids[0] not in store and ids[2] in store
        returned = {n.id for row in store.search(vectors[:5], 20) for n in row}
        assert ids[0] not in returned and ids[1] not in returned
        assert store.remove([ids[0]]) == 0


    def test_readding_an_id_replaces_its_vector(self, make_store: Callable[[], VectorStore], data: tuple[list[str], np.ndarray]) -> None:
        ids, vectors = data
        store = make_store()
        store.add(ids[:10], vectors[:10])
        store.add([ids[0]], vectors[50:51])
        assert len(store) == 10
        np.testing.assert_allclose(store.get_vectors([ids[0]])[0], vectors[50], atol=1e-5)
        assert store.search(vectors[50:51], 1)[0][0].id == ids[0]


    def test_labels_are_never_reused_after_removal(self, make_store: Callable[[], VectorStore], data: tuple[list[str], np.ndarray], tmp_path: Path) -> None:
        ids, vectors = data
        store = make_store()
        store.add(["a", "b"], vectors[:2])
        store.remove(["a"])
        store.add(["c"], vectors[2:3])
        store = _reload(store, tmp_path / "s")
        store.add(["d"], vectors[3:4])
        np.testing.assert_allclose(store.get_vectors(["b", "c", "d"]), vectors[1:4], atol=1e-5)
        for row, expected in zip(store.search(vectors[1:4], 1), ["b", "c", "d"]):
            assert row[0].id == expected


    def test_get_vectors_of_unknown_id_raises(self, make_store: Callable[[], VectorStore], data: tuple[list[str], np.ndarray]) -> None:
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
    def test_bad_adds_are_refused_and_change_nothing(self, make_store: Callable[[], VectorStore], data: tuple[list[str], np.ndarray], ids: Any, vectors: Any, error: type[Exception]) -> None:
        store = make_store()
        store.add(["keep"], data[1][:1])
        with pytest.raises(error):
            store.add(ids, vectors)
        assert store.ids() == ["keep"]
        assert store.search(data[1][:1], 5)[0][0].id == "keep"


    def test_bad_queries_are_refused(self, make_store: Callable[[], VectorStore], data: tuple[list[str], np.ndarray]) -> None:
        store = make_store()
        store.add(["a"], data[1][:1])
        with pytest.raises(InvalidInputError):
            store.search(data[1][:1], 0)
        with pytest.raises(DimensionMismatchError):
            store.search(np.ones((1, DIM + 2), np.float32), 1)
        with pytest.raises(InvalidInputError):
            store.search(np.full((1, DIM), np.nan, np.float32), 1)


    def test_filtered_search_still_returns_k(self, make_store: Callable[[], VectorStore], data: tuple[list[str], np.ndarray]) -> None:
        ids, vectors = data
        store = make_store()
        store.add(ids, vectors)
        wanted = set(ids[::10])  # 20 of 200, mostly far from the query
        result = store.search(vectors[1:2], 15, filter=wanted.__contains__)[0]
        assert len(result) == 15
        assert {n.id for n in result} <= wanted
        assert store.search(vectors[1:2], 50, filter=wanted.__contains__)[0].__len__() == 20


    def test_a_store_that_filters_metadata_agrees_with_matches(self, make_store: Callable[[], VectorStore], data: tuple[list[str], np.ndarray]) -> None:
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
        changed: dict[str, dict[str, Any]] = {ids[0]: {"kind": "z"}, ids[1]: metadata[ids[1]]}
        assert store.metadata_mismatches(changed) == [ids[0]]
        store.add(ids[2:3], vectors[2:3])  # a replaced vector starts with an empty copy
        store.remove(ids[3:4])
        assert store.metadata_mismatches({id_: metadata[id_] for id_ in ids[2:4]}) == [ids[2]]


    def test_save_and_load_give_the_same_results(self, make_store: Callable[[], VectorStore], data: tuple[list[str], np.ndarray], tmp_path: Path) -> None:
        ids, vectors = data
        store = make_store()
        store.add(ids, vectors)
        store.remove(ids[:5])
        loaded = _reload(store, tmp_path / "s")
        assert len(loaded) == len(store) and sorted(loaded.ids()) == sorted(store.ids())
        assert loaded.search(vectors[:20], 5) == store.search(vectors[:20], 5)
        assert all(isinstance(v, (int, float, str, bool, type(None), list, dict)) for v in loaded.config().values())


    def test_single_query_vector_is_accepted(self, make_store: Callable[[], VectorStore], data: tuple[list[str], np.ndarray]) -> None:
        store = make_store()
        store.add(["a", "b"], data[1][:2])
        assert store.search(data[1][1], 1)[0][0].id == "b"


    def test_many_removals_never_return_removed_ids(self, make_store: Callable[[], VectorStore], data: tuple[list[str], np.ndarray], tmp_path: Path) -> None:
        # Enough removals that approximate stores must skip tombstones, compact on save,
        # or fall back to exact search for some queries.
        ids, vectors = data
        store = make_store()
        store.add(ids, vectors)
        removed = set(ids[::4]) | set(ids[100:])
        store.remove(removed)
        live = [i for i in ids if i not in removed]
        for current in (store, _reload(store, tmp_path / "s")):
            assert sorted(current.ids()) == sorted(live)
            for row in current.search(vectors[:40], 20):
                assert len(row) == 20
                assert not {n.id for n in row} & removed
            assert len(current.search(vectors[:1], 500)[0]) == len(live)


    def test_growing_in_batches_keeps_every_vector_findable(self, make_store: Callable[[], VectorStore], rng: np.random.Generator) -> None:
        vectors = clustered_vectors(rng, 2500, DIM, clusters=40)
        ids = [f"v{i}" for i in range(len(vectors))]
        store = make_store()
        for start in range(0, len(ids), 500):  # past any initial capacity or training size
            store.add(ids[start : start + 500], vectors[start : start + 500])
        assert len(store) == len(ids)
        sample = rng.choice(len(ids), 100, replace=False)
        found = [ids[i] in {n.id for n in row} for i, row in zip(sample, store.search(vectors[sample], 5))]
        assert sum(found) >= 98  # approximate stores may miss a rare one


    def test_searches_from_many_threads_while_one_thread_writes(self, make_store: Callable[[], VectorStore], rng: np.random.Generator) -> None:
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


    def test_batched_and_single_queries_agree(self, make_store: Callable[[], VectorStore], data: tuple[list[str], np.ndarray]) -> None:
        # Stores may take another code path for one query than for many (FAISS flat does).
        ids, vectors = data
        store = make_store()
        store.add(ids, vectors)
        batched = store.search(vectors[:40], 7)
        for query, expected in zip(vectors[:40], batched):
            single = store.search(query[None, :], 7)[0]
            assert [n.id for n in single] == [n.id for n in expected]
            assert [n.score for n in single] == pytest.approx([n.score for n in expected], abs=1e-5)


    def test_load_reads_the_dimension_from_the_files(self, make_store: Callable[[], VectorStore], data: tuple[list[str], np.ndarray], tmp_path: Path) -> None:
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

# -- description stores ---------------------------------------------------------------

_BOX = ((1.0, 2.0), (40.0, 2.0), (40.0, 12.0), (1.0, 12.0))


def _read(*lines: str) -> ReadText:
    return ReadText(lines=[TextLine(text=line, confidence=0.875, box=_BOX) for line in lines], dropped=1)


#: Records with the text read in their image (see `multimodal_rag.types.Record.ocr`).
OCR_RECORDS = [
    Record(id="label", description="a battery", ocr=_read("XR-2000 battery", "12V 7Ah")),
    Record(id="lantern", description="a camping lantern", ocr=ReadText()),
    Record(id="persian", description=None, ocr=_read("باتری ۱۲ ولت")),
]

#: Records holding the identifier "XG-2047" in their description or read text, one holding it
#: misread ("XG-2O47", a letter O) and one holding another number.
IDENTIFIER_RECORDS = [
    Record(id="in-words", description="Desk lamp, model XG-2047, brass"),
    Record(id="in-photo", description="a lamp", ocr=_read("XG-2047", "220V")),
    Record(id="misread", description="a lamp", ocr=_read("XG-2O47")),
    Record(id="other", description="Charger QT-5512"),
]

RECORDS = [
    Record(id="a", image_path="/img/a.png", description="A red battery generator.", metadata={"price": 3}),
    Record(id="b", image_path=None, description=None),
    Record(id="c 🦜", image_path="/img/طوطی.png", description="پرنده‌ای سبز", metadata={"tags": ["x", {"y": 1}]}),
    Record(id="d'; DROP TABLE records;--", description='quotes " and \\ backslashes\nand lines'),
]


# -- metadata filters: matching_ids -----------------------------------------------

FILTER_RECORDS = [
    Record(id="r1", metadata={"category": "shoes", "price": 50, "stock": 3, "on_sale": True, "note": None, "name": "apple"}),
    Record(id="r2", metadata={"category": "bags", "price": 120.5, "stock": 0, "on_sale": False, "name": "Zebra"}),
    Record(id="r3", metadata={"category": "hats", "price": 99.99, "stock": 1.0, "name": "éclair", "tags": ["shoes"], "it's": "ok"}),
    Record(id="r4", metadata={"category": "shoes", "price": "cheap", "stock": True, "name": "😀"}),
    Record(id="r5", metadata={"category": ["shoes"], "price": {"amount": 10}, 'we"ird.k\\ey': "yes", "ключ": 7}),
    Record(id="r6", description="no metadata at all"),
    Record(id="r7 ' \"", metadata={"category": "bags", "price": 100, "big": 2**70, "name": "a\x00b"}),
]
ALL_IDS = {r.id for r in FILTER_RECORDS}
R7 = "r7 ' \""

#: (filter, the ids it matches among FILTER_RECORDS); every store must agree.
FILTER_CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({}, ALL_IDS),
    ({"category": "shoes"}, {"r1", "r4"}),  # r5's list is not searched
    ({"category": {"$eq": "shoes"}}, {"r1", "r4"}),
    ({"category": {"$ne": "shoes"}}, {"r2", "r3", "r5", "r6", R7}),  # missing passes $ne
    ({"category": {"$in": ["shoes", "hats"]}}, {"r1", "r3", "r4"}),
    ({"category": {"$nin": ["shoes", "hats"]}}, {"r2", "r5", "r6", R7}),
    ({"price": {"$lt": 100}}, {"r1", "r3"}),  # "cheap" and an object do not order against numbers
    ({"price": {"$lte": 100}}, {"r1", "r3", R7}),
    ({"price": {"$gt": 100}}, {"r2"}),
    ({"price": {"$gte": 99.99}}, {"r2", "r3", R7}),
    ({"price": {"$gte": 10, "$lt": 100}}, {"r1", "r3"}),
    ({"price": {"$lt": "z"}}, {"r4"}),  # strings order against strings only
    ({"price": {"$in": [50.0, 100]}}, {"r1", R7}),  # 50 == 50.0
    ({"stock": 1}, {"r3"}),  # 1.0 is 1; True is not
    ({"stock": True}, {"r4"}),
    ({"stock": {"$in": [0, True]}}, {"r2", "r4"}),
    ({"stock": {"$gt": 0}}, {"r1", "r3"}),  # bool does not order
    ({"on_sale": False}, {"r2"}),
    ({"on_sale": {"$ne": True}}, ALL_IDS - {"r1"}),
    ({"note": None}, {"r1"}),  # null, not missing
    ({"note": {"$ne": None}}, ALL_IDS - {"r1"}),
    ({"missing": {"$nin": ["x"]}}, ALL_IDS),
    ({"missing": {"$lt": 5}}, set()),
    ({"name": {"$gt": "a"}}, {"r1", "r3", "r4", R7}),  # by code point: "Z" < "a" < "é" < "😀"
    ({"name": {"$lt": "b"}}, {"r1", "r2", R7}),
    ({"name": {"$gt": 5}}, set()),
    ({"name": {"$in": ["😀", "Zebra"]}}, {"r2", "r4"}),
    ({"name": "a"}, set()),  # "a\x00b" is not "a"
    ({"name": "a\x00b"}, {R7}),
    ({"name": {"$gte": "a\x00"}}, {"r1", "r3", "r4", R7}),
    ({"tags": "shoes"}, set()),
    ({"price.amount": 10}, set()),  # a key is matched whole, never as a path
    ({'we"ird.k\\ey': "yes"}, {"r5"}),
    ({"it's": {"$in": ["ok"]}}, {"r3"}),
    ({"ключ": {"$gte": 7}}, {"r5"}),
    ({"big": 2**70}, {R7}),
    ({"big": {"$gt": 2**63}}, {R7}),
    ({"$or": [{"category": "bags"}, {"price": {"$lt": 60}}]}, {"r1", "r2", R7}),
    ({"$and": [{"category": "shoes"}, {"$or": [{"stock": {"$gt": 2}}, {"stock": True}]}]}, {"r1", "r4"}),
    ({"category": "shoes", "stock": {"$ne": True}}, {"r1"}),
    ({"$or": [{"category": {"$nin": ["bags"]}, "price": {"$gte": 99}}, {"name": "Zebra"}]}, {"r2", "r3"}),
]


#: Persian product descriptions, as typed with a Persian keyboard (Persian digits, ZWNJ).
PERSIAN_RECORDS = [
    Record(id="battery", description="باتری لیتیومی با ظرفیت ۲۰۰۰ وات ساعت"),
    Record(id="cookbook", description="کتاب آشپزی ایرانی با عکس\u200cهای رنگی"),
    Record(id="headphones", description="هدفون بی\u200cسیم با ۳۰ ساعت شارژ"),
    Record(id="saffron", description="زعفران سرگل قائنات ۴٫۶ گرمی"),
]
#: A query as typed on another keyboard -> the record it must find first.
PERSIAN_QUERIES = [
    ("کتاب", "cookbook"),
    ("كتاب", "cookbook"),  # Arabic kaf
    ("باتری", "battery"),
    ("باتري", "battery"),  # Arabic yeh
    ("۲۰۰۰", "battery"),
    ("2000", "battery"),  # ASCII digits
    ("٢٠٠٠", "battery"),  # Arabic-Indic digits
    ("عکسهای", "cookbook"),  # ZWNJ left out
    ("عکس های", "cookbook"),  # a space for the ZWNJ
    ("بيسيم", "headphones"),  # Arabic yeh, no ZWNJ
    ("4.6 گرمي", "saffron"),  # ASCII digits and point, Arabic yeh
    ("كِتَابـــ", "cookbook"),  # vowel marks and tatweel
]
#: One Persian verb typed three ways: with ZWNJ, joined, with a space.
ZWNJ_FORMS = ["می\u200cشود", "میشود", "می شود"]
#: Texts in every script and direction, with controls and invisible characters.
HOSTILE_TEXTS = [
    "\u202eشرکت ACME\u202c \u2067عربي\u2069 mixed",
    "\u200f\u200e\u061c\u200c\u200c\u200d\ufeff",
    "\x00\x01\x1b[31m red \x7f",
    "\u0640\u0640\u064b\u0650",
    "ﷺ ﷽ ﻼ",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ①②③ ＦＵＬＬ",
    "红色邮票 🐱‍👤 नमस्ते ١٢٣",
    "AND OR NOT \"*\" (NEAR) ^ - : {}",
    "\u200c" * 50 + "ب" * 200,
]


class DescriptionStoreContract:
    """The contract of [`DescriptionStore`][multimodal_rag.protocols.DescriptionStore]:
    subclass it and define `new_store`, or override the ``make_store`` fixture (a function of
    no arguments that returns an empty store) to run it over several stores."""

    def new_store(self) -> DescriptionStore:
        """An empty store."""
        raise NotImplementedError(f"{type(self).__name__} must define new_store(self) or a make_store fixture")

    @pytest.fixture
    def make_store(self) -> Callable[[], DescriptionStore]:
        return self.new_store

    def test_put_and_get_round_trip(self, make_store: Callable[[], DescriptionStore]) -> None:
        store = make_store()
        store.put(RECORDS)
        for record in RECORDS:
            assert store.get(record.id) == record
        assert len(store) == len(RECORDS)
        assert sorted(r.id for r in store) == sorted(r.id for r in RECORDS)
        assert "a" in store and "zzz" not in store and 3 not in store


    def test_get_unknown_raises_not_found_which_is_a_key_error(self, make_store: Callable[[], DescriptionStore]) -> None:
        store = make_store()
        with pytest.raises(NotFoundError, match="nope"):
            store.get("nope")
        with pytest.raises(KeyError):
            store.get("nope")


    def test_get_many_skips_missing(self, make_store: Callable[[], DescriptionStore]) -> None:
        store = make_store()
        store.put(RECORDS)
        found = store.get_many(["a", "missing", "b"])
        assert set(found) == {"a", "b"} and found["a"] == RECORDS[0]
        assert store.get_many([f"id-{i}" for i in range(2000)]) == {}


    def test_put_replaces(self, make_store: Callable[[], DescriptionStore]) -> None:
        store = make_store()
        store.put(RECORDS)
        store.put([Record(id="a", description="new")])
        assert store.get("a").description == "new" and store.get("a").metadata == {}
        assert len(store) == len(RECORDS)


    def test_delete_counts_and_ignores_unknown(self, make_store: Callable[[], DescriptionStore]) -> None:
        store = make_store()
        store.put(RECORDS)
        assert store.delete(["a", "zzz", "b"]) == 2
        assert len(store) == 2 and "a" not in store
        assert store.delete(["a"]) == 0


    def test_save_and_load_round_trip(self, make_store: Callable[[], DescriptionStore], tmp_path: Path) -> None:
        store = make_store()
        store.put(RECORDS)
        loaded = _reload(store, tmp_path / "s")
        assert sorted((r.id, r.image_path, r.description, json.dumps(r.metadata)) for r in loaded) == sorted(
            (r.id, r.image_path, r.description, json.dumps(r.metadata)) for r in RECORDS
        )


    @pytest.mark.parametrize(
        "bad",
        [
            Record(id="", description="x"),
            Record(id="e", metadata={"description": "clashes with a reserved key"}),
            Record(id="e", metadata={"x": object()}),
            Record(id="e", metadata={"x": float("nan")}),
            Record(id="e", description=3),  # type: ignore[arg-type]
        ],
    )
    def test_bad_records_are_refused_and_change_nothing(self, make_store: Callable[[], DescriptionStore], bad: Record) -> None:
        store = make_store()
        store.put(RECORDS[:1])
        with pytest.raises(InvalidInputError):
            store.put([Record(id="fine"), bad])
        assert [r.id for r in store] == ["a"]


    def test_read_text_round_trips_and_is_replaced_or_removed(self, make_store: Callable[[], DescriptionStore], tmp_path: Path) -> None:
        store = make_store()
        store.put([*RECORDS, *OCR_RECORDS])
        for record in OCR_RECORDS:
            assert store.get(record.id) == record
        assert store.get("a").ocr is None  # a record whose image was not read
        loaded = _reload(store, tmp_path / "s")
        assert {r.id: r.ocr for r in loaded} == {r.id: r.ocr for r in [*RECORDS, *OCR_RECORDS]}
        store.put([Record(id="label", description="a battery", ocr=ReadText())])  # read again: no text
        store.put([Record(id="empty", description="nothing read")])  # the read text removed
        assert store.get("label").ocr == ReadText() and store.get("empty").ocr is None
        assert store.get("label").description == "a battery"

    def test_read_text_is_searched_in_a_column_of_its_own(self, make_store: Callable[[], DescriptionStore]) -> None:
        store = make_store()
        if not store.full_text:
            pytest.skip("this store has no full-text index")
        store.put([*RECORDS, *OCR_RECORDS])
        # Found by the text in the image alone, and by the description alone.
        assert [id_ for id_, _ in store.search_text("XR-2000", 5)] == ["label"]
        assert [id_ for id_, _ in store.search_text("lantern", 5)] == ["lantern"]
        assert {id_ for id_, _ in store.search_text("7Ah", 5)} == {"label"}
        store.put([Record(id="label", description="a battery")])  # its read text removed
        assert store.search_text("XR-2000", 5) == []
        store.put([Record(id="label", description="a battery", ocr=_read("XR-2000"))])
        assert [id_ for id_, _ in store.search_text("XR-2000", 5)] == ["label"]
        store.delete(["label"])
        assert store.search_text("XR-2000", 5) == []

    @pytest.mark.parametrize("query", ["XG-2047", "XG2047", "xg 2047", "2047", "xg-2047", "۲۰۴۷"])
    def test_identifiers_match_in_other_spellings_and_in_part(
        self, make_store: Callable[[], DescriptionStore], query: str
    ) -> None:
        store = make_store()
        if not store.identifier_search:
            pytest.skip("this store has no identifier index")
        store.put([*RECORDS, *IDENTIFIER_RECORDS])
        found = store.search_identifiers(query, 10)
        # In the description and in the read text alike; an unrelated number is not found.
        assert {id_ for id_, _, _ in found} >= {"in-words", "in-photo"}
        assert "other" not in {id_ for id_, _, _ in found}
        assert all(score > 0 and forms for _, score, forms in found)
        assert [id_ for id_, _, _ in found] == [id_ for id_, _, _ in sorted(found, key=lambda e: (-e[1], e[0]))]
        assert store.search_identifiers(query, 10, ids=["in-photo"])[0][0] == "in-photo"
        assert store.search_identifiers(query, 10, ids=[]) == []

    def test_identifier_confusions_rank_below_exact_matches(self, make_store: Callable[[], DescriptionStore]) -> None:
        store = make_store()
        if not store.identifier_search:
            pytest.skip("this store has no identifier index")
        store.put([*RECORDS, *IDENTIFIER_RECORDS])
        exact = {id_: score for id_, score, _ in store.search_identifiers("XG-2047", 10)}
        # "misread" holds "XG-2O47" (a letter O): found, below the records that hold "XG-2047".
        assert exact["misread"] < min(exact["in-words"], exact["in-photo"])
        typed = store.search_identifiers("XG-2O47", 10)  # the query misread instead
        assert typed[0][0] == "misread"
        assert {id_ for id_, _, _ in typed} >= {"in-words", "in-photo"}
        assert store.search_identifiers("a red lamp", 10) == []  # no identifier: nothing

    def test_identifier_index_follows_changes_and_reloads(
        self, make_store: Callable[[], DescriptionStore], tmp_path: Path
    ) -> None:
        store = make_store()
        if not store.identifier_search:
            pytest.skip("this store has no identifier index")
        store.put(IDENTIFIER_RECORDS)
        store.put([Record(id="in-words", description="renamed to ZT-9")])
        store.delete(["in-photo"])
        assert {id_ for id_, _, _ in store.search_identifiers("XG-2047", 10)} == {"misread"}
        assert [id_ for id_, _, _ in store.search_identifiers("ZT9", 10)] == ["in-words"]
        loaded = _reload(store, tmp_path / "s")
        assert [id_ for id_, _, _ in loaded.search_identifiers("ZT9", 10)] == ["in-words"]

    @pytest.mark.parametrize(
        "bad",
        [
            ReadText(lines=[TextLine(text="nul \x00", confidence=0.5, box=_BOX)]),
            ReadText(lines=[TextLine(text="too sure", confidence=1.5, box=_BOX)]),
            ReadText(lines=[TextLine(text="no box", confidence=0.5, box=((0.0, 0.0),))]),  # type: ignore[arg-type]
            ReadText(lines=[TextLine(text="inf", confidence=0.5, box=((float("inf"), 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)))]),
            ReadText(dropped=-1),
        ],
    )
    def test_bad_read_text_is_refused_and_changes_nothing(self, make_store: Callable[[], DescriptionStore], bad: ReadText) -> None:
        store = make_store()
        store.put(RECORDS[:1])
        with pytest.raises(InvalidInputError, match="read text"):
            store.put([Record(id="fine"), Record(id="e", ocr=bad)])
        assert [r.id for r in store] == ["a"]

    @pytest.mark.parametrize(("obj", "expected"), FILTER_CASES, ids=[json.dumps(c[0], ensure_ascii=False) for c in FILTER_CASES])
    def test_matching_ids_keeps_exactly_the_matching_records(self, make_store: Callable[[], DescriptionStore], obj: dict[str, Any], expected: set[str]) -> None:
        store = make_store()
        store.put(FILTER_RECORDS)
        parsed = parse_filter(obj)
        assert {r.id for r in FILTER_RECORDS if parsed.matches(r.metadata)} == expected  # the table itself
        assert store.matching_ids(parsed) == expected
        assert DescriptionStore.matching_ids(store, parsed) == expected  # the protocol's default, a scan


    def test_matching_ids_follows_changes(self, make_store: Callable[[], DescriptionStore]) -> None:
        store = make_store()
        store.put(FILTER_RECORDS)
        shoes = parse_filter({"category": "shoes"})
        store.put([Record(id="r2", metadata={"category": "shoes"})])
        store.delete(["r1"])
        assert store.matching_ids(shoes) == {"r2", "r4"}
        assert make_store().matching_ids(shoes) == set()

    # -- full-text search (stores whose ``full_text`` is true) --------------------------

    def _full_text_store(self, make_store: Callable[[], DescriptionStore]) -> DescriptionStore:
        store = make_store()
        if not store.full_text:
            pytest.skip(f"{type(store).__name__} has no full-text index")
        return store

    @pytest.mark.parametrize(("query", "expected"), PERSIAN_QUERIES, ids=[q for q, _ in PERSIAN_QUERIES])
    def test_persian_words_are_found_however_they_are_typed(
        self, make_store: Callable[[], DescriptionStore], tmp_path: Path, query: str, expected: str
    ) -> None:
        store = self._full_text_store(make_store)
        store.put(PERSIAN_RECORDS)
        assert [id_ for id_, _ in store.search_text(query, 1)] == [expected]
        again = _reload(store, tmp_path / "s")
        assert [id_ for id_, _ in again.search_text(query, 1)] == [expected]

    @pytest.mark.parametrize("typed", ZWNJ_FORMS, ids=["zwnj", "joined", "space"])
    def test_a_word_with_zwnj_finds_and_is_found_by_its_other_spellings(
        self, make_store: Callable[[], DescriptionStore], typed: str
    ) -> None:
        store = self._full_text_store(make_store)
        store.put([*PERSIAN_RECORDS, Record(id="door", description=f"این در با یک دکمه باز {typed}")])
        for query in ZWNJ_FORMS:
            assert [id_ for id_, _ in store.search_text(query, 1)] == ["door"], (typed, query)

    def test_the_record_keeps_the_text_exactly_as_typed(self, make_store: Callable[[], DescriptionStore]) -> None:
        store = self._full_text_store(make_store)
        typed = Record(id="t", description="كِتابـــ آشپزي\u200c ٢٠٠٠ \u202bنسخه\u202c", metadata={"brand": "ﻙ"})
        store.put([*PERSIAN_RECORDS, typed])
        assert store.get("t") == typed
        assert [id_ for id_, _ in store.search_text("نسخه", 1)] == ["t"]

    @pytest.mark.parametrize("query", HOSTILE_TEXTS, ids=range(len(HOSTILE_TEXTS)))
    def test_text_in_any_script_or_direction_never_breaks_indexing_or_search(
        self, make_store: Callable[[], DescriptionStore], query: str
    ) -> None:
        store = self._full_text_store(make_store)
        store.put([*PERSIAN_RECORDS, Record(id="hostile", description=query)])
        assert store.get("hostile").description == query
        results = store.search_text(query, 3)
        assert all(isinstance(id_, str) and isinstance(score, float) for id_, score in results)
        if any(c.isalnum() for c in index_text(query)):  # a text with a word finds itself among the first
            assert "hostile" in [id_ for id_, _ in store.search_text(query, len(PERSIAN_RECORDS) + 1)]

    def test_text_read_in_images_is_normalised_too(self, make_store: Callable[[], DescriptionStore], tmp_path: Path) -> None:
        from multimodal_rag.ocr import ReadText, TextLine

        store = self._full_text_store(make_store)
        box = ((0.0, 0.0), (90.0, 0.0), (90.0, 20.0), (0.0, 20.0))
        read = ReadText(lines=[TextLine(text="شارژر سريع ۶۵ وات", confidence=0.9, box=box)])  # Arabic yeh
        store.put([*PERSIAN_RECORDS, Record(id="charger", description="یک عکس", ocr=read)])
        for query in ("سریع", "65 وات"):
            assert [id_ for id_, _ in store.search_text(query, 1)] == ["charger"], query
        assert store.get("charger").ocr == read
        again = _reload(store, tmp_path / "s")
        assert [id_ for id_, _ in again.search_text("سریع", 1)] == ["charger"]

    def test_a_query_with_a_lone_surrogate_is_refused_naming_it(self, make_store: Callable[[], DescriptionStore]) -> None:
        store = self._full_text_store(make_store)
        store.put(PERSIAN_RECORDS)
        with pytest.raises(InvalidInputError, match="lone surrogate") as info:
            store.search_text("باتری \ud800", 3)
        assert "باتری" in str(info.value)


# -- embedders ------------------------------------------------------------------------

_COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "magenta": (255, 0, 255)}


def _solid(color: str, size: tuple[int, int] = (32, 24)) -> Image.Image:
    return Image.new("RGB", size, _COLORS[color])


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def varied_pictures(seed: int) -> list[Image.Image]:
    """Pictures that differ in colour, layout and aspect ratio: solids, two tones, noise
    drawn from ``seed`` and a grey gradient."""
    noise = np.random.default_rng(seed).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    two_tone = _solid("green", (64, 64))
    two_tone.paste(_solid("magenta", (32, 64)), (32, 0))
    return [
        _solid("red", (48, 40)),
        _solid("blue", (30, 60)),
        two_tone,
        Image.fromarray(noise),
        Image.linear_gradient("L").resize((70, 50)).convert("RGB"),
    ]

TEXTS = ["a red square", "two friends at the beach", "تمبر قرمز با پرنده", "红色邮票", "🐱", ""]


class EmbedderContract:
    """The contract of [`Embedder`][multimodal_rag.protocols.Embedder]: subclass it and
    define `new_embedder`, or override the class-scoped ``embedder`` fixture to run it over
    several embedders. One embedder is built per class and shared by its tests."""

    def new_embedder(self, root: Path) -> Embedder:
        """The embedder to test; ``root`` is an empty scratch folder it may use."""
        raise NotImplementedError(f"{type(self).__name__} must define new_embedder(self, root) or an embedder fixture")

    @pytest.fixture(scope="class")
    @classmethod
    def embedder(cls, tmp_path_factory: pytest.TempPathFactory) -> Embedder:
        # Built once per class (a model may take seconds to load), so a class method: pytest
        # gives each test its own instance.
        return cls().new_embedder(tmp_path_factory.mktemp("embedder"))

    def test_vectors_are_unit_float32_of_the_embedders_dim(self, embedder: Embedder) -> None:
        images, texts = embedder.embed_images(varied_pictures(11)), embedder.embed_texts(TEXTS)
        assert images.shape == (5, embedder.dim) and texts.shape == (len(TEXTS), embedder.dim)
        assert images.dtype == np.float32 and texts.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
        # Images and texts share one space: their inner products are cosines.
        assert np.all(np.abs(images @ texts.T) <= 1.0 + 1e-5)


    def test_nothing_in_gives_an_empty_matrix(self, embedder: Embedder) -> None:
        assert embedder.embed_images([]).shape == (0, embedder.dim)
        assert embedder.embed_texts([]).shape == (0, embedder.dim)


    def test_embeddings_are_deterministic(self, embedder: Embedder) -> None:
        np.testing.assert_array_equal(embedder.embed_images(varied_pictures(11)), embedder.embed_images(varied_pictures(11)))
        np.testing.assert_array_equal(embedder.embed_texts(TEXTS), embedder.embed_texts(TEXTS))


    def test_a_batch_gives_the_vectors_of_one_by_one(self, embedder: Embedder) -> None:
        images = varied_pictures(11)
        batch = embedder.embed_images(images)
        single = np.concatenate([embedder.embed_images([image]) for image in images])
        np.testing.assert_allclose(batch, single, atol=1e-5)
        texts = embedder.embed_texts(TEXTS)
        np.testing.assert_allclose(
            texts, np.concatenate([embedder.embed_texts([t]) for t in TEXTS]), atol=1e-5
        )


    def test_the_streaming_batches_give_the_same_vectors(self, embedder: Embedder) -> None:
        images = varied_pictures(11)
        batches = list(embedder.iter_embed_images(iter(images), batch_size=2))
        assert [i for batch in batches for i in batch.indices] == list(range(len(images)))
        np.testing.assert_allclose(
            np.concatenate([batch.vectors for batch in batches]),
            embedder.embed_images(images),
            atol=1e-5,
        )


    def test_a_bad_image_raises_image_error_naming_its_index(self, embedder: Embedder) -> None:
        truncated = _encoded(_solid("red", (64, 64)), "JPEG")[:80]
        with pytest.raises(ImageError) as info:
            embedder.embed_images([*varied_pictures(11)[:2], truncated, _solid("blue")])
        assert info.value.index == 2
        with pytest.raises(ImageError) as single:
            embedder.embed_images([b"not an image"])
        assert single.value.index == 0


    def test_identity_is_stable(self, embedder: Embedder) -> None:
        assert embedder.fingerprint == embedder.fingerprint and embedder.fingerprint
        assert isinstance(embedder.config(), dict)
