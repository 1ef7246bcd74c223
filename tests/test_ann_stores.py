"""Behaviour specific to the approximate stores: knobs, training, compaction, recall."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import clustered_vectors
from multimodal_rag.errors import CorruptFileError, InvalidInputError
from multimodal_rag.vectors.faiss_flat import FaissFlatStore
from multimodal_rag.vectors.faiss_hnsw import FaissHNSWStore
from multimodal_rag.vectors.faiss_ivf import FaissIVFStore
from multimodal_rag.vectors.hnswlib_store import HNSWLibStore, check_index_file

DIM = 64


@pytest.fixture
def corpus(rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    vectors = clustered_vectors(rng, 3000, DIM, clusters=60)
    return [f"v{i}" for i in range(len(vectors))], vectors


def near(rng: np.random.Generator, vectors: np.ndarray, n: int) -> np.ndarray:
    """Queries close to stored vectors (as real queries are), not random directions."""
    rows = vectors[rng.choice(len(vectors), n, replace=False)] + 0.05 * rng.standard_normal((n, DIM))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def exact_ids(ids: list[str], vectors: np.ndarray, queries: np.ndarray, k: int) -> list[list[str]]:
    flat = FaissFlatStore(DIM)
    flat.add(ids, vectors)
    return [[n.id for n in row] for row in flat.search(queries, k)]


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.mark.parametrize(
    "make",
    [
        lambda: FaissHNSWStore(DIM),
        lambda: HNSWLibStore(DIM),
        lambda: FaissIVFStore(DIM, nlist=32, nprobe=8),
        lambda: FaissIVFStore(DIM, nlist=32, nprobe=8, pq_m=16),
    ],
    ids=["faiss-hnsw", "hnswlib", "faiss-ivf", "faiss-ivf-pq"],
)
def test_default_search_settings_have_high_recall(make, corpus, rng) -> None:
    ids, vectors = corpus
    queries = near(rng, vectors, 100)
    store = make()
    store.add(ids, vectors)
    found = [[n.id for n in row] for row in store.search(queries, 10)]
    assert recall(found, exact_ids(ids, vectors, queries, 10)) >= 0.9


def test_ivf_searches_exactly_until_it_has_enough_vectors_to_train(corpus) -> None:
    ids, vectors = corpus
    store = FaissIVFStore(DIM, nlist=16, nprobe=1, train_size=1000)
    store.add(ids[:999], vectors[:999])
    assert not store.is_trained
    exact = exact_ids(ids[:999], vectors[:999], vectors[:50], 10)
    assert [[n.id for n in row] for row in store.search(vectors[:50], 10)] == exact
    store.add(ids[999:], vectors[999:])
    assert store.is_trained and len(store) == len(ids)
    assert [row[0].id for row in store.search(vectors[:50], 1)] == ids[:50]


def test_ivf_trains_on_an_explicit_sample_and_keeps_stored_vectors(corpus, tmp_path: Path) -> None:
    ids, vectors = corpus
    store = FaissIVFStore(DIM, nlist=16, pq_m=8, k_factor=32)
    store.add(ids[:100], vectors[:100])
    with pytest.raises(InvalidInputError, match="at least nlist=16"):
        store.train(vectors[:10])
    store.train(vectors)
    assert store.is_trained and sorted(store.ids()) == sorted(ids[:100])
    store.add(ids[100:], vectors[100:])
    (tmp_path / "s").mkdir()
    store.save(tmp_path / "s")
    loaded = FaissIVFStore.load(tmp_path / "s", dim=DIM, **json.loads(json.dumps(store.config())))
    assert loaded.is_trained and loaded.factory == "IVF16,PQ8x4fs,RFlat"
    assert loaded.search(vectors[:20], 5) == store.search(vectors[:20], 5)


def test_ivf_probing_every_list_is_exact(corpus, rng) -> None:
    ids, vectors = corpus
    # Queries between the clusters, whose neighbours spread over several lists.
    queries = clustered_vectors(rng, 50, DIM, clusters=60)
    store = FaissIVFStore(DIM, nlist=32, nprobe=1)
    store.add(ids, vectors)
    truth = exact_ids(ids, vectors, queries, 10)
    one = recall([[n.id for n in row] for row in store.search(queries, 10)], truth)
    every = recall([[n.id for n in row] for row in store.search(queries, 10, nprobe=32)], truth)
    assert every == 1.0 and one < 1.0


@pytest.mark.parametrize("store_cls", [FaissHNSWStore, HNSWLibStore])
def test_a_larger_ef_finds_at_least_as_much(store_cls, corpus, rng) -> None:
    ids, vectors = corpus
    queries = near(rng, vectors, 100)
    store = store_cls(DIM, M=4, ef_construction=16, ef_search=10)  # a deliberately poor graph
    store.add(ids, vectors)
    truth = exact_ids(ids, vectors, queries, 10)
    low = recall([[n.id for n in row] for row in store.search(queries, 10)], truth)
    high = recall([[n.id for n in row] for row in store.search(queries, 10, ef=400)], truth)
    assert high > low
    # The override lasts one call only.
    assert recall([[n.id for n in row] for row in store.search(queries, 10)], truth) == low


def test_faiss_hnsw_save_compacts_many_removals(corpus, tmp_path: Path) -> None:
    ids, vectors = corpus
    store = FaissHNSWStore(DIM)
    store.add(ids[:500], vectors[:500])
    store.remove(ids[:10])  # 2%: kept as tombstones
    (tmp_path / "a").mkdir()
    store.save(tmp_path / "a")
    assert len(np.load(tmp_path / "a" / "positions.npy")) == 500
    store.remove(ids[10:100])  # 20%: compacted
    (tmp_path / "b").mkdir()
    store.save(tmp_path / "b")
    assert len(np.load(tmp_path / "b" / "positions.npy")) == 400
    assert [row[0].id for row in store.search(vectors[100:120], 1)] == ids[100:120]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: FaissHNSWStore(DIM, M=1), "M"),
        (lambda: HNSWLibStore(DIM, ef_search=0), "ef_search"),
        (lambda: FaissIVFStore(DIM, nlist=0), "nlist"),
        (lambda: FaissIVFStore(DIM, pq_m=7), "pq_m"),
        (lambda: FaissIVFStore(DIM, nlist=64, train_size=10), "train_size"),
        (lambda: FaissIVFStore(DIM, nprobe=True), "nprobe"),
    ],
)
def test_bad_knobs_are_refused(make, match) -> None:
    with pytest.raises(InvalidInputError, match=match):
        make()


@pytest.mark.parametrize(
    ("store", "override"),
    [(FaissHNSWStore(DIM), {"ef": 0}), (HNSWLibStore(DIM), {"ef": -3}), (FaissIVFStore(DIM), {"nprobe": "8"})],
)
def test_bad_per_query_overrides_are_refused(store, override, corpus) -> None:
    store.add(corpus[0][:5], corpus[1][:5])
    with pytest.raises(InvalidInputError, match=next(iter(override))):
        store.search(corpus[1][:1], 1, **override)


@pytest.mark.parametrize("kind", ["faiss-flat", "faiss-hnsw", "hnswlib", "faiss-ivf"])
def test_metadata_filters_through_the_facade_return_k_hits(kind, embedder, rng) -> None:
    from helpers import solid
    from multimodal_rag import MultimodalRAG
    from multimodal_rag._registry import resolve

    store = resolve("vector_store", kind)(embedder.dim)
    rag = MultimodalRAG(embedder, vector_store=store)
    colours = [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(60)]
    rag.add(
        [solid(c) for c in colours],
        ids=[f"img{i}" for i in range(60)],
        metadata=[{"group": i % 6} for i in range(60)],
    )
    hits = rag.search(image=solid(colours[0]), k=8, filter={"group": 5})
    assert len(hits) == 8 and all(hit.metadata["group"] == 5 for hit in hits)
    assert len(rag.search(image=solid(colours[0]), k=50, filter={"group": 5})) == 10


# -- hnswlib index files from someone else -------------------------------------------

HNSW_HEADER = struct.Struct("<QQQQQQiIQQQdQ")  # hnswlib's saveIndex header, 96 bytes
HNSW_FIELDS = ("offset_level0", "max_elements", "count", "size_data_per_element", "label_offset",
               "offset_data", "max_level", "entry_point", "max_m", "max_m0", "m", "mult", "ef_construction")


def hnsw_layout(data: bytes) -> tuple[dict, list[int], list[int]]:
    """The header of an hnswlib index file, each element's level and the offset of its upper-level lists."""
    header = dict(zip(HNSW_FIELDS, HNSW_HEADER.unpack_from(data)))
    position = HNSW_HEADER.size + header["count"] * header["size_data_per_element"]
    levels, offsets = [], []
    for _ in range(header["count"]):
        (size,) = struct.unpack_from("<I", data, position)
        levels.append(size // (4 + 4 * header["max_m"]))
        offsets.append(position + 4)
        position += 4 + size
    return header, levels, offsets


def set_header(data: bytearray, **fields) -> None:
    header, _, _ = hnsw_layout(bytes(data))
    header.update(fields)
    data[: HNSW_HEADER.size] = HNSW_HEADER.pack(*(header[name] for name in HNSW_FIELDS))


def mutate_hnsw(data: bytearray, how: str) -> None:
    header, levels, offsets = hnsw_layout(bytes(data))
    level0 = HNSW_HEADER.size
    per = header["size_data_per_element"]
    if how == "neighbour past the end":
        struct.pack_into("<I", data, level0 + 4, 0xFFFFFF00)  # element 0's first level-0 link
    elif how == "too many links":
        struct.pack_into("<H", data, level0 + 3 * per, 0xFFFF)
    elif how == "entry point past the end":
        set_header(data, entry_point=header["count"] + 7)
    elif how == "entry point below the top":
        set_header(data, entry_point=levels.index(0))
    elif how == "upper link to a level-0 node":
        owner = levels.index(max(levels))
        struct.pack_into("<HHI", data, offsets[owner], 1, 0, levels.index(0))
    elif how == "another dimension":
        set_header(data, size_data_per_element=per + 64, label_offset=header["label_offset"] + 64)
    elif how == "another M":
        set_header(data, max_m0=4 * header["m"])
    elif how == "more elements than the file holds":
        set_header(data, count=header["count"] + 1000, max_elements=header["count"] + 1000)
    elif how == "upper level size not a whole list":
        struct.pack_into("<I", data, offsets[levels.index(max(levels))] - 4, 6)
    elif how == "bytes after the last list":
        data += b"\0" * 8
    elif how == "absurd mult":
        set_header(data, mult=float("nan"))
    elif how == "two live elements with one label":
        label = struct.unpack_from("<Q", data, level0 + 10 * per + header["label_offset"])[0]
        struct.pack_into("<Q", data, level0 + 11 * per + header["label_offset"], label)
    else:
        raise AssertionError(how)


HNSW_MUTATIONS = [
    "neighbour past the end", "too many links", "entry point past the end", "entry point below the top",
    "upper link to a level-0 node", "another dimension", "another M", "more elements than the file holds",
    "upper level size not a whole list", "bytes after the last list", "absurd mult",
    "two live elements with one label",
]


@pytest.fixture
def saved_hnswlib(corpus, tmp_path: Path) -> Path:
    ids, vectors = corpus
    store = HNSWLibStore(DIM, M=8)
    store.add(ids[:300], vectors[:300])
    store.remove(ids[:5])
    directory = tmp_path / "hnswlib"
    directory.mkdir()
    store.save(directory)
    return directory


def test_a_saved_hnswlib_index_passes_the_file_checks(saved_hnswlib: Path) -> None:
    count, live = check_index_file(saved_hnswlib / "index.hnsw", dim=DIM, M=8)
    assert count == 300 and sorted(live.tolist()) == list(range(5, 300))
    loaded = HNSWLibStore.load(saved_hnswlib, dim=DIM, M=8)
    assert len(loaded) == 295


@pytest.mark.parametrize("how", HNSW_MUTATIONS)
def test_a_crafted_hnswlib_index_is_refused_before_hnswlib_reads_it(saved_hnswlib: Path, how: str, corpus) -> None:
    path = saved_hnswlib / "index.hnsw"
    data = bytearray(path.read_bytes())
    mutate_hnsw(data, how)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="index.hnsw"):
        HNSWLibStore.load(saved_hnswlib, dim=DIM, M=8)


def test_an_hnswlib_index_of_another_dimension_is_refused(saved_hnswlib: Path) -> None:
    with pytest.raises(CorruptFileError, match="size_data_per_element"):
        HNSWLibStore.load(saved_hnswlib, dim=DIM * 2, M=8)
    with pytest.raises(CorruptFileError, match="M=16"):
        HNSWLibStore.load(saved_hnswlib, dim=DIM, M=16)


@pytest.mark.parametrize("how", [*HNSW_MUTATIONS, "absurd dimension"])
def test_a_crafted_hnswlib_index_is_refused_when_its_header_gives_the_dimension(saved_hnswlib: Path, how: str) -> None:
    path = saved_hnswlib / "index.hnsw"
    data = bytearray(path.read_bytes())
    if how == "absurd dimension":  # a new store would allocate room for vectors this long
        header, _, _ = hnsw_layout(bytes(data))
        set_header(data, label_offset=header["offset_data"] + 4 * 2**40)
    else:
        mutate_hnsw(data, how)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="index.hnsw"):
        HNSWLibStore.load(saved_hnswlib, M=8)


def test_an_hnswlib_capacity_in_the_file_allocates_nothing(saved_hnswlib: Path) -> None:
    path = saved_hnswlib / "index.hnsw"
    data = bytearray(path.read_bytes())
    set_header(data, max_elements=2**40)  # hnswlib would allocate 2**40 elements' worth of memory
    path.write_bytes(bytes(data))
    loaded = HNSWLibStore.load(saved_hnswlib, dim=DIM, M=8)
    assert loaded._index.get_max_elements() == 300 and len(loaded) == 295


def test_a_short_hnswlib_write_is_a_disk_full_error(corpus, tmp_path: Path, monkeypatch) -> None:
    import errno

    import hnswlib

    real_save = hnswlib.Index.save_index

    def save_short(index, path):  # what hnswlib does on a full disk: no error, a short file
        real_save(index, path)
        os.truncate(path, os.path.getsize(path) - 100)

    ids, vectors = corpus
    store = HNSWLibStore(DIM)
    store.add(ids[:50], vectors[:50])
    monkeypatch.setattr(hnswlib.Index, "save_index", save_short)
    with pytest.raises(OSError, match="index.hnsw") as raised:
        store.save(tmp_path)
    assert raised.value.errno == errno.ENOSPC
