"""Full-text search inside each description store: ranking, languages, safety, and an index that
always agrees with the records (after edits, saves, journal replay, salvage and a SIGKILL)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from conftest import on_server, server_uri
from helpers import ColorEmbedder, current_snapshot, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag.errors import BackendError, CorruptFileError, InvalidInputError
from multimodal_rag.filters import parse_filter
from multimodal_rag.protocols import DescriptionStore
from multimodal_rag.types import Record
from test_description_store_contract import DESCRIPTION_STORES

REPO = Path(__file__).resolve().parents[1]
LEGACY = Path(__file__).parent / "data" / "legacy"
EMBEDDED = ["jsonl", "sqlite"]  # the stores on SQLite's FTS5, with its tokenizers and BM25

# Words that make the rare ones rare: BM25 weighs a term by how few records hold it.
FILLER = [
    Record(id=f"filler-{i:02d}", description=f"{word} lamp for the garden, model {i}")
    for i, word in enumerate(["a bright", "a dim", "a tall", "a small", "an old", "a new", "a green", "a red"])
]


def reload(store: DescriptionStore, directory: Path) -> DescriptionStore:
    """``store`` saved to ``directory`` and loaded back from its own config, as a reopen does."""
    directory.mkdir()
    store.save(directory)
    config: dict[str, Any] = json.loads(json.dumps(store.config()))
    return type(store).load(directory, **config)


@pytest.fixture(params=sorted(DESCRIPTION_STORES))
def store(request: pytest.FixtureRequest) -> DescriptionStore:
    return DESCRIPTION_STORES[request.param]()


def configured(name: str, **config: Any) -> DescriptionStore:
    """A store of kind ``name`` with full-text settings (PostgreSQL's own where they differ)."""
    if name == "postgres":
        from multimodal_rag.descriptions.postgres import PostgresDescriptionStore

        config.pop("tokenizer", None)
        return on_server(PostgresDescriptionStore(server_uri("DATABASE_URL", "PostgreSQL"), **config))  # type: ignore[return-value]
    if name == "sqlite":
        from multimodal_rag.descriptions.sqlite import SQLiteDescriptionStore

        return SQLiteDescriptionStore(**config)
    from multimodal_rag.descriptions.jsonl import JSONLDescriptionStore

    return JSONLDescriptionStore(**config)


@pytest.fixture(params=EMBEDDED)
def trigram(request: pytest.FixtureRequest) -> DescriptionStore:
    return configured(request.param, tokenizer="trigram")


def ids(results: list[tuple[str, float]]) -> list[str]:
    return [id_ for id_, _ in results]


def words(text: str | None) -> set[str]:
    return set(re.findall(r"\w+", (text or "").lower()))


def assert_index_agrees(store: DescriptionStore, *terms: str) -> None:
    """For each term, search_text finds exactly the records whose description holds the word."""
    records = list(store)
    for term in terms:
        expected = {r.id for r in records if term in words(r.description)}
        found = ids(store.search_text(term, k=len(records) + 1))
        assert len(found) == len(set(found)) and set(found) == expected, term
    if hasattr(store, "_db") and store.kind == "sqlite":  # FTS5's own check, against the records
        store._db.execute("INSERT INTO records_fts (records_fts, rank) VALUES ('integrity-check', 1)")


# -- ranking ------------------------------------------------------------------------------


def test_more_of_the_query_ranks_higher_and_scores_are_positive(store: DescriptionStore) -> None:
    store.put([*FILLER,
               Record(id="both", description="solar battery charger"),
               Record(id="solar", description="solar panel on a roof"),
               Record(id="battery", description="battery pack, spare")])
    results = store.search_text("solar battery", k=10)
    assert ids(results)[0] == "both" and set(ids(results)) == {"both", "solar", "battery"}
    assert all(score > 0 for _, score in results)
    assert [s for _, s in results] == sorted((s for _, s in results), reverse=True)


def test_a_term_repeated_in_a_short_text_ranks_higher(store: DescriptionStore) -> None:
    store.put([*FILLER,
               Record(id="dense", description="battery battery battery"),
               Record(id="sparse", description="battery, with a cable, a case, a manual and a warranty card")])
    assert ids(store.search_text("battery", k=5)) == ["dense", "sparse"]


@pytest.mark.parametrize("name", EMBEDDED)
def test_bm25_weighs_a_rare_term_above_a_common_one(name: str) -> None:
    store = configured(name)
    store.put([*FILLER, Record(id="rare", description="lithium cell"), Record(id="common", description="garden cell")])
    assert ids(store.search_text("lithium garden", k=3))[0] == "rare"


def test_the_exact_model_number_beats_a_near_miss(store: DescriptionStore) -> None:
    store.put([*FILLER, Record(id="near", description="XR-200 battery"), Record(id="exact", description="XR-2000 battery")])
    assert ids(store.search_text("XR-2000 battery", k=3))[:2] == ["exact", "near"]
    assert ids(store.search_text("XR-200 battery", k=3))[0] == "near"


def test_trigram_finds_part_numbers_and_substrings(trigram: DescriptionStore) -> None:
    trigram.put([*FILLER,
                 Record(id="near", description="XR-200 battery"),
                 Record(id="exact", description="XR-2000 battery"),
                 Record(id="other", description="part XQ2000 cable")])
    assert ids(trigram.search_text("XR-2000 battery", k=5))[:2] == ["exact", "near"]
    assert ids(trigram.search_text("xr-2000", k=5)) == ["exact"]  # case folded, a substring of nothing else
    assert set(ids(trigram.search_text("2000", k=5))) == {"exact", "other"}  # inside a longer token


# -- languages ----------------------------------------------------------------------------


def test_persian_and_arabic_words_are_found(store: DescriptionStore) -> None:
    store.put([*FILLER,
               Record(id="fa", description="باتری خورشیدی برای چراغ باغ"),
               Record(id="fa-partial", description="باتری ماشین"),
               Record(id="ar", description="بطارية شمسية للحديقة"),
               Record(id="ar-partial", description="لوح شمسية كبير")])
    assert ids(store.search_text("باتری خورشیدی", k=5))[0] == "fa"
    assert set(ids(store.search_text("باتری خورشیدی", k=5))) == {"fa", "fa-partial"}
    assert ids(store.search_text("بطارية شمسية", k=5))[0] == "ar"
    assert set(ids(store.search_text("شمسية", k=5))) == {"ar", "ar-partial"}


def test_cjk_text_is_found_with_the_trigram_tokenizer(trigram: DescriptionStore) -> None:
    trigram.put([*FILLER,
                 Record(id="zh", description="太阳能电池板，用于花园灯"),
                 Record(id="ja", description="ソーラーバッテリー付きの庭園灯"),
                 Record(id="ko", description="태양광 배터리 정원등")])
    assert ids(trigram.search_text("太阳能电池", k=5)) == ["zh"]
    assert ids(trigram.search_text("バッテリー", k=5)) == ["ja"]
    assert ids(trigram.search_text("배터리", k=5)) == ["ko"]
    assert trigram.search_text("电池", k=5) == []  # fewer than three characters match nothing


@pytest.mark.parametrize("name", EMBEDDED)
def test_the_default_tokenizer_needs_whole_words_in_cjk(name: str) -> None:
    # unicode61 sees a run of CJK characters as one word: why CJK text wants "trigram".
    store = configured(name)
    store.put([Record(id="zh", description="太阳能电池板")])
    assert store.search_text("太阳能电池", k=5) == []
    assert ids(store.search_text("太阳能电池板", k=5)) == ["zh"]


def test_case_and_latin_accents_are_folded(store: DescriptionStore) -> None:
    store.put([*FILLER, Record(id="cafe", description="CAFÉ table")])
    assert ids(store.search_text("café", k=3)) == ["cafe"]
    assert ids(store.search_text("Table", k=3)) == ["cafe"]


# -- user text is never query syntax ----------------------------------------------------------


HOSTILE_QUERIES = [
    '"', '""', '"battery', 'battery"', 'bat"tery', "AND", "battery AND", "OR battery", "NOT battery",
    "battery NOT solar", "*", "batt*", "-battery", "battery -solar", "(", ")", "(battery", "battery)",
    "NEAR(battery solar)", "description:battery", "^battery", "{description}: battery", "+battery",
    "battery\x00solar", "'; DROP TABLE records; --", "\\", "&|!:*", "battery\tsolar\nlamp", "x" * 5000,
]


def loose_terms(query: str) -> list[str]:
    """The query's white-space separated terms without the punctuation around them.

    A term with punctuation inside ("NEAR(battery") is a phrase of its words, as "XR-2000" is.
    """
    return [re.sub(r"^\W+|\W+$", "", term) for term in query.split()]


@pytest.mark.parametrize("query", HOSTILE_QUERIES, ids=range(len(HOSTILE_QUERIES)))
def test_query_syntax_in_user_text_is_just_text(store: DescriptionStore, query: str) -> None:
    store.put([*FILLER, Record(id="battery", description="battery pack"), Record(id="solar", description="solar panel")])
    found = ids(store.search_text(query, k=20))
    assert set(found) <= {r.id for r in store}
    if "battery" in loose_terms(query):
        assert "battery" in found  # no operator (NOT, -, column filters) took it away
    assert len(store) == 10


@pytest.mark.parametrize("query", HOSTILE_QUERIES, ids=range(len(HOSTILE_QUERIES)))
def test_query_syntax_is_just_text_for_trigram_too(trigram: DescriptionStore, query: str) -> None:
    trigram.put([Record(id="battery", description="battery pack")])
    found = ids(trigram.search_text(query, k=5))
    assert found in ([], ["battery"])
    if "battery" in loose_terms(query):
        assert found == ["battery"]


@pytest.mark.parametrize("query", ["", "   ", "\n\t", "\x00"])
def test_an_empty_query_finds_nothing(store: DescriptionStore, query: str) -> None:
    store.put(FILLER)
    assert store.search_text(query, k=5) == []


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3"])
def test_k_must_be_a_positive_integer(store: DescriptionStore, k: Any) -> None:
    with pytest.raises(InvalidInputError, match="k must be"):
        store.search_text("lamp", k=k)


def test_k_past_the_end_and_k_that_cuts(store: DescriptionStore) -> None:
    store.put(FILLER)
    assert len(store.search_text("lamp", k=1000)) == len(FILLER)
    assert len(store.search_text("lamp", k=3)) == 3


# -- restricted to ids --------------------------------------------------------------------------


def test_ids_restrict_the_search_and_k_still_counts_among_them(store: DescriptionStore) -> None:
    store.put([*FILLER, *(Record(id=f"b{i}", description="battery " * (1 + i % 3) + "pack") for i in range(30))])
    everything = ids(store.search_text("battery", k=100))
    assert len(everything) == 30
    wanted = everything[-7:]  # the worst seven: a restriction must not lose them to k
    assert set(ids(store.search_text("battery", k=5, ids=wanted))) < set(wanted)
    assert len(store.search_text("battery", k=5, ids=wanted)) == 5
    assert sorted(ids(store.search_text("battery", k=50, ids={*wanted, "unknown", "filler-01"}))) == sorted(wanted)
    assert store.search_text("battery", k=5, ids=[]) == []
    assert store.search_text("battery", k=5, ids=["filler-01", "nope"]) == []
    many = [f"x{i}" for i in range(20_000)] + ["b3"]
    assert ids(store.search_text("battery", k=5, ids=many)) == ["b3"]


# -- records holding only common words are skipped when they cannot win -------------------------


def catalogue(count: int = 3000, seed: int = 7) -> tuple[list[Record], list[str]]:
    """Records of common words (a few in most records, Zipf-like), rare words and model
    numbers, and queries mixing them: what lets BM25 top-k skip records."""
    import random

    rng = random.Random(seed)
    common = ["battery", "portable", "black", "solar", "charger", "lamp", "cable", "steel"]
    rare = [f"{a}{b}" for a in ("kayak", "tent", "drill", "radio", "helmet") for b in ("pro", "mini", "max", "neo")]
    weights = [1 / (i + 1) for i in range(len(common))]
    records = []
    for i in range(count):
        text = rng.choices(common, weights, k=rng.randint(2, 9)) + rng.sample(rare, rng.randint(0, 2))
        records.append(Record(id=f"r{i:05d}", description=" ".join(text) + f" model ZX-{i % 400:03d}"))
    queries = [
        " ".join(rng.sample(common, rng.randint(1, 3)) + rng.sample(rare, rng.randint(0, 2)))
        + (f" ZX-{rng.randrange(400):03d}" if rng.random() < 0.6 else "")
        for _ in range(80)
    ]
    return records, queries


@pytest.mark.parametrize("name", EMBEDDED)
def test_pruned_top_k_equals_scoring_every_match(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from multimodal_rag.descriptions import bm25_pruning

    store = configured(name)
    records, queries = catalogue()
    store.put(records)
    everyone = [r.id for r in records]
    scored: list[int] = []
    score_subset = bm25_pruning._scores
    monkeypatch.setattr(
        bm25_pruning, "_scores", lambda *a: scored.append(len(result := score_subset(*a))) or result
    )
    for query in queries:
        for k in (1, 10, 50):
            fast = store.search_text(query, k)
            # A restriction to ids takes the plain path: every match scored by FTS5's bm25().
            plain = store.search_text(query, k, ids=everyone)
            assert ids(fast) == ids(plain), (query, k)
            assert [s for _, s in fast] == pytest.approx([s for _, s in plain], rel=1e-12), (query, k)
    # The pruning ran, and scored far fewer records than the queries match.
    assert len(scored) > 50 and sorted(scored)[len(scored) // 2] < len(records) / 10


@pytest.mark.parametrize("name", EMBEDDED)
def test_remembered_word_counts_follow_every_change(name: str, tmp_path: Path) -> None:
    store = configured(name)
    # "zircon" is common enough that records holding only it are skipped.
    zircon = [Record(id=f"z{i:04d}", description="zircon filler text") for i in range(300)]
    plain_filler = [Record(id=f"f{i:04d}", description="filler text") for i in range(600)]
    quartz = [Record(id=f"q{i:02d}", description="quartz filler") for i in range(10)]
    store.put(zircon + plain_filler + quartz)
    everyone = {r.id for r in zircon + plain_filler + quartz}

    def check(expect_first: str) -> None:
        fast, plain = store.search_text("zircon quartz", 5), store.search_text("zircon quartz", 5, ids=sorted(everyone))
        assert ids(fast) == ids(plain) and ids(fast)[0].startswith(expect_first)
        assert [s for _, s in fast] == pytest.approx([s for _, s in plain], rel=1e-12)

    check("q")
    # Now "zircon" is rare and its records win: a count remembered from before would skip them.
    store.put([attrs.evolve(record, description="filler text") for record in zircon[3:]])
    check("z")
    store.put(zircon[3:])
    check("q")
    store.save(tmp_path)
    store = type(store).load(tmp_path, **store.config())
    check("q")


@pytest.mark.parametrize("name", EMBEDDED)
def test_ties_at_the_cut_are_broken_by_id_when_pruned(name: str) -> None:
    store = configured(name)
    # Thirty records tied on the rare word, many more holding only the common one.
    store.put([Record(id=f"t{i:02d}", description="zircon lamp") for i in reversed(range(30))]
              + [Record(id=f"c{i:03d}", description="lamp cable") for i in range(300)])
    assert ids(store.search_text("lamp zircon", k=5)) == ["t00", "t01", "t02", "t03", "t04"]
    assert ids(store.search_text("lamp zircon", k=5)) == ids(store.search_text("lamp zircon", k=5, ids=[f"t{i:02d}" for i in range(30)]))


@pytest.mark.parametrize("name", EMBEDDED)
def test_pruned_and_plain_searches_break_exact_ties_alike_over_random_queries(name: str) -> None:
    # Common words held by more than half the records share one idf (FTS5's floor), so records
    # matching different ones tie exactly in bm25(); pruning's subtraction sums the same parts
    # in another order, and left them 1e-15 apart, either way round.
    import random

    store = configured(name)
    records, _ = catalogue()
    store.put(records)
    everyone = [r.id for r in records]
    common = ["battery", "portable", "black", "solar", "charger", "lamp", "cable", "steel"]
    rare = [f"{a}{b}" for a in ("kayak", "tent", "drill", "radio", "helmet") for b in ("pro", "mini", "max", "neo")]
    rng = random.Random(1)
    tied = 0
    for _ in range(1200):
        words = rng.sample(common, rng.randint(1, 4)) + rng.sample(rare, rng.randint(0, 3))
        words += [f"ZX-{rng.randrange(400):03d}"] if rng.random() < 0.6 else []
        rng.shuffle(words)
        query, k = " ".join(words), rng.choice([1, 2, 3, 5, 10, 20, 50])
        fast = store.search_text(query, k)
        plain = store.search_text(query, k, ids=everyone)  # every match scored by bm25(), ties by id
        assert ids(fast) == ids(plain), (query, k)
        assert [s for _, s in fast] == pytest.approx([s for _, s in plain], rel=1e-12), (query, k)
        scores = [s for _, s in plain]
        tied += any(a == b for a, b in zip(scores, scores[1:]))
    assert tied > 300  # the property is tested where it matters: exact ties in the top k


# -- the index follows every change ---------------------------------------------------------------


def test_put_delete_and_replace_keep_the_index_in_step(store: DescriptionStore) -> None:
    store.put(FILLER)
    store.put([Record(id="x", description="copper kettle"), Record(id="y", description="copper wire")])
    assert set(ids(store.search_text("copper", k=5))) == {"x", "y"}
    store.put([Record(id="x", description="steel kettle")])  # what describe does
    assert ids(store.search_text("copper", k=5)) == ["y"]
    assert ids(store.search_text("steel", k=5)) == ["x"]
    store.put([Record(id="y", description=None)])
    assert store.search_text("copper", k=5) == []
    store.delete(["x", "nope"])
    assert store.search_text("steel kettle", k=5) == []
    store.put([Record(id="x", description="kettle again"), Record(id="x", description="kettle twice")])
    assert ids(store.search_text("twice", k=5)) == ["x"] and store.search_text("again", k=5) == []
    assert_index_agrees(store, "kettle", "lamp", "steel", "copper", "garden")


def test_save_and_load_give_the_same_results(store: DescriptionStore, tmp_path: Path) -> None:
    store.put([*FILLER, Record(id="fa", description="باتری خورشیدی"), Record(id="b", description="battery lamp")])
    before = {q: store.search_text(q, k=20) for q in ("lamp", "battery lamp", "خورشیدی", "model 3")}
    loaded = reload(store, tmp_path / "saved")
    assert loaded.config() == store.config()
    for query, results in before.items():
        assert [(i, pytest.approx(s)) for i, s in loaded.search_text(query, k=20)] == results
    loaded.put([Record(id="new", description="lamp post")])
    assert "new" in ids(loaded.search_text("lamp", k=20))


def test_metadata_fields_named_in_the_config_are_searched(store: DescriptionStore, tmp_path: Path) -> None:
    store = configured(store.kind, text_fields=["description", "title", "tags"])
    store.put([*FILLER,
               Record(id="t", description="a lamp", metadata={"title": "Kettle of brass", "price": 777}),
               Record(id="g", description="a lamp", metadata={"tags": ["enamel", "blue"]}),
               Record(id="n", description="a lamp", metadata={"title": 2024})])
    assert ids(store.search_text("brass", k=5)) == ["t"]
    assert ids(store.search_text("enamel", k=5)) == ["g"]
    assert ids(store.search_text("2024", k=5)) == ["n"]
    assert store.search_text("777", k=5) == []  # "price" is not indexed
    store.put([Record(id="t", description="a lamp", metadata={"title": "Kettle of copper"})])
    assert store.search_text("brass", k=5) == [] and ids(store.search_text("copper", k=5)) == ["t"]
    loaded = reload(store, tmp_path / "saved")
    assert ids(loaded.search_text("copper enamel", k=5)) in (["g", "t"], ["t", "g"])


@pytest.mark.parametrize(
    "config",
    [{"tokenizer": "porter2"}, {"tokenizer": None}, {"text_fields": []}, {"text_fields": "description"},
     {"text_fields": ["id"]}, {"text_fields": ['ti"tle']}, {"text_fields": ["a\\b"]}, {"text_fields": [""]},
     {"text_fields": ["description", "description"]}, {"text_fields": [3]}],
)
@pytest.mark.parametrize("name", EMBEDDED)
def test_bad_full_text_settings_are_refused(name: str, config: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        configured(name, **config)


@pytest.mark.parametrize("name", EMBEDDED)
@pytest.mark.parametrize("tokenizer", ["unicode61", "porter", "trigram"])
def test_every_tokenizer_saves_and_loads(name: str, tokenizer: str, tmp_path: Path) -> None:
    store = configured(name, tokenizer=tokenizer, text_fields=("description", "it's a key"))
    store.put([*FILLER, Record(id="k", description="batteries", metadata={"it's a key": "walnut"})])
    loaded = reload(store, tmp_path / "saved")
    assert loaded.config() == store.config()
    assert (store.config()["text_fields"], store.config()["tokenizer"]) == (["description", "it's a key"], tokenizer)
    assert ids(loaded.search_text("walnut", k=3)) == ["k"]
    if tokenizer == "porter":
        assert ids(loaded.search_text("battery", k=3)) == ["k"]  # stems


def test_concurrent_searches_and_writes(store: DescriptionStore) -> None:
    store.put(FILLER)
    errors: list[BaseException] = []
    stop = threading.Event()

    def search() -> None:
        try:
            while not stop.is_set():
                found = ids(store.search_text("lamp kettle", k=100))
                assert set(found) <= {r.id for r in FILLER} | {f"w{i}" for i in range(60)}
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=search) for _ in range(3)]
    for thread in threads:
        thread.start()
    for i in range(60):
        store.put([Record(id=f"w{i}", description=f"kettle {i}")])
        if i % 3 == 0:
            store.delete([f"w{i}"])
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors
    assert_index_agrees(store, "kettle", "lamp")


# -- the knowledge base: describe, journal replay, legacy files ----------------------------------


def create_kb(path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> MultimodalRAG:
    if name == "postgres":
        monkeypatch.setenv("DATABASE_URL", server_uri("DATABASE_URL", "PostgreSQL"))
    rag = MultimodalRAG.create(path, embedder=ColorEmbedder(), vector_store="faiss-flat", description_store=name)
    if name == "postgres":
        on_server(rag.description_store)
    return rag


@pytest.mark.parametrize("name", sorted(DESCRIPTION_STORES))
def test_journal_replay_brings_the_text_back_into_the_index(tmp_path: Path, name: str, monkeypatch) -> None:
    rag = create_kb(tmp_path / "kb", name, monkeypatch)
    rag.add([solid("red"), solid("blue")], ids=["r", "b"], descriptions=["red kettle", "blue kettle"], progress=False)
    rag.save()
    rag.add([solid("green")], ids=["g"], descriptions=["green teapot"], progress=False)
    rag.describe("r", "crimson teapot")
    rag.remove(["b"])
    rag.close()  # no save: the changes are in the journal only

    with MultimodalRAG.open(tmp_path / "kb", embedder=ColorEmbedder(), read_only=True) as reopened:
        store = reopened.description_store
        assert sorted(ids(store.search_text("teapot", k=5))) == ["g", "r"]
        assert store.search_text("kettle", k=5) == []
        assert_index_agrees(store, "teapot", "kettle", "crimson", "red", "blue")


@pytest.mark.parametrize("version", ["journal-v1", "journal-v2"])
@pytest.mark.parametrize("stores", ["faiss-flat-sqlite", "hnswlib-jsonl"])
def test_knowledge_bases_of_earlier_versions_are_searchable_by_text(tmp_path: Path, version: str, stores: str) -> None:
    kb = tmp_path / "kb"
    shutil.copytree(LEGACY / version / stores, kb)
    with MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True) as reader:
        store = reader.description_store
        assert store.full_text
        assert ids(store.search_text("described later", k=3)) == ["blue"]
        assert set(ids(store.search_text("square", k=5))) == {"red", "blue", "yellow"}
        assert_index_agrees(store, "square", "red", "green", "later")
    with MultimodalRAG.open(kb, allow_modules=["helpers"]) as writer:
        writer.describe("yellow", "A lemon-coloured square.")
        writer.save()
    with MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True) as again:
        assert ids(again.description_store.search_text("lemon", k=3)) == ["yellow"]
    if stores.endswith("sqlite"):  # saved in the new layout
        saved = sqlite3.connect(current_snapshot(kb) / "descriptions" / "descriptions.sqlite")
        names = {row[0] for row in saved.execute("SELECT name FROM sqlite_master")}
        saved.close()
        assert {"records", "records_fts", "records_ai", "records_ad", "records_au"} <= names


# -- SQLite files: earlier layouts, a missing or stale index, damage ------------------------------


def sqlite_store(**config: Any) -> Any:
    from multimodal_rag.descriptions.sqlite import SQLiteDescriptionStore

    return SQLiteDescriptionStore(**config)


def saved_sqlite(directory: Path, records: list[Record], **config: Any) -> Path:
    store = sqlite_store(**config)
    store.put(records)
    directory.mkdir(exist_ok=True)
    store.save(directory)
    return directory / "descriptions.sqlite"


def edit(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            db.execute(statement)
    finally:
        db.close()


RECORDS = [*FILLER, Record(id="k", description="copper kettle"), Record(id="t", description="copper teapot")]


def test_a_file_of_the_earlier_layout_is_migrated_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "descriptions.sqlite"
    edit(path,
         "CREATE TABLE records (id TEXT PRIMARY KEY NOT NULL, image_path TEXT, description TEXT, "
         "metadata TEXT NOT NULL DEFAULT '{}') WITHOUT ROWID",
         "INSERT INTO records VALUES ('k', '/k.png', 'copper kettle', '{\"a\": 1}'), ('t', NULL, 'teapot', '{}')")
    before = path.read_bytes()
    store = type(sqlite_store()).load(tmp_path)
    assert path.read_bytes() == before  # the file itself is left alone
    assert ids(store.search_text("copper", k=5)) == ["k"] and store.get("k").metadata == {"a": 1}
    store.put([Record(id="t", description="copper teapot")])
    assert_index_agrees(store, "copper", "teapot", "kettle")
    (tmp_path / "new").mkdir()
    store.save(tmp_path / "new")
    again = type(store).load(tmp_path / "new")
    assert sorted(ids(again.search_text("copper", k=5))) == ["k", "t"]


def test_a_missing_index_is_made_on_load(tmp_path: Path) -> None:
    path = saved_sqlite(tmp_path, RECORDS)
    edit(path, "DROP TRIGGER records_ai", "DROP TRIGGER records_ad", "DROP TRIGGER records_au", "DROP TABLE records_fts")
    store = type(sqlite_store()).load(tmp_path)
    assert sorted(ids(store.search_text("copper", k=5))) == ["k", "t"]
    store.delete(["k"])
    assert_index_agrees(store, "copper", "lamp")


def test_an_index_out_of_step_is_rebuilt_on_load(tmp_path: Path) -> None:
    path = saved_sqlite(tmp_path, RECORDS)
    db = sqlite3.connect(path, isolation_level=None)
    [trigger] = db.execute("SELECT sql FROM sqlite_master WHERE name = 'records_au'").fetchone()
    db.execute("DROP TRIGGER records_au")
    # The record and the normalised text the index reads, changed; the index not told.
    db.execute("UPDATE records SET description = 'brass kettle', search_0 = 'brass kettle' WHERE id = 'k'")
    db.execute(trigger)  # the layout is exactly the store's again
    db.close()
    store = type(sqlite_store()).load(tmp_path)
    assert ids(store.search_text("brass", k=5)) == ["k"] and ids(store.search_text("copper", k=5)) == ["t"]
    assert_index_agrees(store, "copper", "brass", "kettle", "lamp")


@pytest.mark.parametrize("which", ["WHERE id = 1", "WHERE id > 10", ""], ids=["structure", "leaves", "all"])
def test_garbled_index_content_is_made_anew_on_load(tmp_path: Path, which: str) -> None:
    # Pages that read as pages, but FTS5's own records in them are noise: no page check sees it.
    path = saved_sqlite(tmp_path, RECORDS)
    edit(path, f"UPDATE records_fts_data SET block = randomblob(length(block)) {which}")
    store = type(sqlite_store()).load(tmp_path)
    assert sorted(ids(store.search_text("copper", k=5))) == ["k", "t"]
    assert_index_agrees(store, "copper", "lamp", "kettle")


def test_a_file_with_other_settings_is_indexed_as_the_config_says(tmp_path: Path) -> None:
    saved_sqlite(tmp_path, [Record(id="k", description="kettle", metadata={"maker": "Acme"})])
    store = type(sqlite_store()).load(tmp_path, text_fields=["description", "maker"], tokenizer="trigram")
    assert ids(store.search_text("acm", k=5)) == ["k"]
    assert store.config() == {"text_fields": ["description", "maker"], "tokenizer": "trigram", "indexed_fields": []}


INDEXED_RECORDS = [
    Record(id="a", description="copper kettle", metadata={"category": 7, "price": 10.5}),
    Record(id="b", metadata={"category": 8, "price": 3}),
    Record(id="c", metadata={"category": "7"}),
    Record(id="n", metadata={"category": 7, "note": "a\x00b"}),  # NUL: tested in Python
    Record(id="m", metadata={"category": 8, "note": "a\x00b"}),
]
INDEXED_CASES = [
    ({"category": 7}, {"a", "n"}),
    ({"category": {"$ne": 7}}, {"b", "c", "m"}),
    ({"price": {"$lt": 5}}, {"b"}),
    ({"category": 7, "note": {"$ne": "x"}}, {"a", "n"}),
    ({"note": "a\x00b"}, {"n", "m"}),
]


def filter_plan(store: Any, obj: dict[str, Any]) -> str:
    where, params = parse_filter(obj).to_sqlite("metadata", indexed=store._columns)
    return str(store._db.execute(f"EXPLAIN QUERY PLAN SELECT id FROM records WHERE {where}", params).fetchall())


def assert_indexed_filters(store: Any) -> None:
    for obj, expected in INDEXED_CASES:
        assert store.matching_ids(parse_filter(obj)) == expected, obj
    assert "USING INDEX records_field_0" in filter_plan(store, {"category": 7})
    assert "USING INDEX records_field_1" in filter_plan(store, {"price": {"$lt": 5}})


@pytest.mark.parametrize(
    "fields",
    ["category", [""], ["$x"], ['a"b'], ["a\\b"], ["ключ"], ["\x01"], [3], ["a", "a"], None],
)
def test_bad_indexed_fields_are_refused(fields: Any) -> None:
    with pytest.raises(InvalidInputError, match="indexed_fields"):
        sqlite_store(indexed_fields=fields)


def test_filters_on_indexed_fields_use_their_index_and_survive_a_reload(tmp_path: Path) -> None:
    store = sqlite_store(indexed_fields=("category", "price"))
    store.put(INDEXED_RECORDS)
    assert_indexed_filters(store)
    loaded = reload(store, tmp_path / "saved")
    assert loaded.config()["indexed_fields"] == ["category", "price"]
    assert_indexed_filters(loaded)
    loaded.put([Record(id="b", metadata={"category": 7})])
    assert loaded.matching_ids(parse_filter({"category": 7})) == {"a", "b", "n"}


def test_a_file_without_indexed_fields_is_migrated_in_memory_and_back(tmp_path: Path) -> None:
    path = saved_sqlite(tmp_path, INDEXED_RECORDS)
    before = path.read_bytes()
    store = type(sqlite_store()).load(tmp_path, indexed_fields=["category", "price"])
    assert path.read_bytes() == before
    assert_indexed_filters(store)
    assert ids(store.search_text("copper", k=5)) == ["a"]
    (tmp_path / "saved").mkdir()
    store.save(tmp_path / "saved")
    plain = type(store).load(tmp_path / "saved")  # a file with indexed fields, loaded without
    assert plain.config()["indexed_fields"] == [] and "field_0" not in filter_plan(plain, {"category": 7})
    assert plain.matching_ids(parse_filter({"category": 7})) == {"a", "n"}
    assert ids(plain.search_text("copper", k=5)) == ["a"]


def test_objects_the_store_does_not_make_are_refused_on_load_and_salvage_reads_past_them(tmp_path: Path) -> None:
    path = saved_sqlite(tmp_path, RECORDS)
    edit(path, "CREATE TRIGGER wipe AFTER INSERT ON records BEGIN DELETE FROM records WHERE id != new.id; END",
         "CREATE TABLE extra (x)")
    with pytest.raises(CorruptFileError, match="'wipe'"):
        type(sqlite_store()).load(tmp_path)
    store = type(sqlite_store()).salvage(tmp_path)  # reads the records only; the trigger never runs
    store.put([Record(id="n", description="copper pan")])
    assert len(store) == len(RECORDS) + 1
    assert_index_agrees(store, "copper", "lamp")


def test_a_damaged_index_page_is_salvaged_with_every_record(tmp_path: Path) -> None:
    records = [Record(id=f"r{i:04d}", description=f"item {i} " + ("copper " if i % 2 else "brass ") * 30) for i in range(600)]
    path = saved_sqlite(tmp_path, records)
    db = sqlite3.connect(path)
    try:
        # A page of FTS5's data table: inside the index, outside the records.
        [page] = db.execute("SELECT max(pageno) FROM dbstat WHERE name = 'records_fts_data'").fetchone()
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no dbstat table to find the index's pages")
    finally:
        db.close()
    data = bytearray(path.read_bytes())
    data[(page - 1) * 4096 + 8 : page * 4096] = os.urandom(4096 - 8)
    path.write_bytes(bytes(data))
    store_cls = type(sqlite_store())
    try:
        loaded = store_cls.load(tmp_path)
    except CorruptFileError:
        loaded = store_cls.salvage(tmp_path)
    assert len(loaded) == 600
    assert_index_agrees(loaded, "copper", "brass", "item", "7")


def test_salvage_of_a_damaged_records_page_rebuilds_the_index(tmp_path: Path) -> None:
    records = [Record(id=f"r{i:05d}", description=f"word{i % 7} " + "x" * 300) for i in range(2000)]
    path = saved_sqlite(tmp_path, records)
    data = bytearray(path.read_bytes())
    middle = (len(data) // 4096 // 2) * 4096
    data[middle : middle + 4096] = os.urandom(4096)
    path.write_bytes(bytes(data))
    store_cls = type(sqlite_store())
    try:
        salvaged = store_cls.load(tmp_path)
    except CorruptFileError:
        salvaged = store_cls.salvage(tmp_path)
    assert 1500 < len(salvaged) <= 2000
    assert_index_agrees(salvaged, *(f"word{i}" for i in range(7)))


@pytest.mark.parametrize("name", EMBEDDED)
def test_repair_of_a_damaged_description_file_leaves_a_searchable_index(tmp_path: Path, name: str) -> None:
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder(), description_store=name)
    colours = [(37 * i % 256, 91 * i % 256, 53 * i % 256) for i in range(40)]
    rag.add([solid(c) for c in colours[:20]], ids=[f"i{i:02d}" for i in range(20)],
            descriptions=[f"first save number{i} {'odd' if i % 2 else 'even'}" for i in range(20)], progress=False)
    rag.save()
    rag.add([solid(c) for c in colours[20:]], ids=[f"i{i:02d}" for i in range(20, 40)],
            descriptions=[f"second save number{i} {'odd' if i % 2 else 'even'}" for i in range(20, 40)], progress=False)
    rag.save()
    rag.describe("i39", "edited after the save")
    rag.close()
    damaged = current_snapshot(tmp_path / "kb") / "descriptions" / f"descriptions.{name}"
    damaged.write_bytes(damaged.read_bytes()[:1500])

    rag = MultimodalRAG.open(tmp_path / "kb", embedder=ColorEmbedder(), salvage=True)
    rag.repair()
    store = rag.description_store
    assert ids(store.search_text("edited", k=5)) == ["i39"]
    assert_index_agrees(store, "odd", "even", "first", "second", "edited", "save")
    rag.close()
    with MultimodalRAG.open(tmp_path / "kb", embedder=ColorEmbedder(), read_only=True) as reopened:
        assert_index_agrees(reopened.description_store, "odd", "even", "first", "second", "edited")


def test_the_jsonl_file_format_is_unchanged_and_alone(tmp_path: Path) -> None:
    store = configured("jsonl", text_fields=["description", "title"], tokenizer="trigram")
    store.put([Record(id="a", image_path="a.png", description="kettle", metadata={"title": "brass"})])
    (tmp_path / "s").mkdir()
    store.save(tmp_path / "s")
    assert os.listdir(tmp_path / "s") == ["descriptions.jsonl"]
    assert (tmp_path / "s" / "descriptions.jsonl").read_text(encoding="utf-8") == json.dumps(
        {"id": "a", "image_path": "a.png", "description": "kettle", "title": "brass"}) + "\n"


# -- SIGKILL in the middle of an ingest -----------------------------------------------------------


@pytest.mark.parametrize(("moment", "at_least"), [("committed 4", 100), ("saving", 60)], ids=["journal", "save"])
def test_after_a_sigkill_mid_ingest_the_index_agrees_with_the_records(tmp_path: Path, moment: str, at_least: int) -> None:
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(200):
        Image.new("RGB", (8, 8), (i, 255 - i, (7 * i) % 256)).save(images / f"{i:05d}.png")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])}
    kb = tmp_path / "kb"
    worker = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "ingest_worker.py"), str(kb), str(images), "20", "3"],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    assert worker.stdout is not None
    lines: Iterator[str] = iter(worker.stdout)
    # Batches 0-2 are saved at "saving"; 3 and 4 are in the journal only at "committed 4".
    for line in lines:
        if line.strip() == moment:
            break
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    worker.stdout.close()

    with MultimodalRAG.open(kb, embedder=ColorEmbedder()) as rag:  # a writer: replays and cuts the journal
        store = rag.description_store
        records = list(store)
        assert len(records) >= at_least and len(records) % 20 == 0
        assert sorted(ids(store.search_text("image", k=1000))) == sorted(r.id for r in records)
        one = records[len(records) // 2]
        stem = one.description.split()[1]
        assert ids(store.search_text(stem, k=5)) == [one.id]
        assert_index_agrees(store, "image", stem)


# -- PostgreSQL: tables of earlier versions, settings, privileges ---------------------------------


@pytest.fixture
def dsn() -> str:
    return server_uri("DATABASE_URL", "PostgreSQL")


def _old_table(dsn: str, name: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {name} (id TEXT PRIMARY KEY, image_path TEXT, description TEXT, "
            "metadata JSONB NOT NULL DEFAULT '{}'::jsonb, metadata_json TEXT NOT NULL DEFAULT '{}', "
            "created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        conn.execute(f"INSERT INTO {name} (id, description) VALUES ('old', 'copper kettle'), ('other', 'teapot')")


def test_postgres_adds_the_column_to_a_table_of_an_earlier_version(dsn: str) -> None:
    from multimodal_rag.descriptions.postgres import PostgresDescriptionStore

    _old_table(dsn, "mrag_fts_old_version")
    store = on_server(PostgresDescriptionStore(dsn, table="mrag_fts_old_version", create=False))
    assert ids(store.search_text("copper", k=5)) == ["old"]  # type: ignore[attr-defined]
    # Other settings make the column anew; the same settings leave it alone.
    english = PostgresDescriptionStore(dsn, table="mrag_fts_old_version", create=False, text_search_config="english")
    assert ids(english.search_text("kettles", k=5)) == ["old"]
    english.close()
    with pytest.raises(InvalidInputError, match="text search configuration"):
        PostgresDescriptionStore(dsn, table="mrag_fts_old_version", text_search_config="klingon")


def test_postgres_stores_opening_an_old_table_at_once_make_one_column_and_one_index(dsn: str) -> None:
    import psycopg

    from multimodal_rag.descriptions.postgres import PostgresDescriptionStore

    _old_table(dsn, "mrag_fts_race")
    opened: list[PostgresDescriptionStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(PostgresDescriptionStore(dsn, table="mrag_fts_race", create=False))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(opened) == 4
    on_server(opened[0])
    for store in opened[1:]:
        store.close()
    assert ids(opened[0].search_text("copper", k=5)) == ["old"]
    with psycopg.connect(dsn) as conn:
        indexes = conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'mrag_fts_race'").fetchone()
    assert indexes == (3,)  # the primary key's, the GIN index and the identifiers' index


def test_postgres_without_the_right_to_alter_the_table_still_reads_and_writes(dsn: str) -> None:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from multimodal_rag.descriptions.postgres import PostgresDescriptionStore

    _old_table(dsn, "mrag_fts_not_ours")
    owner = on_server(PostgresDescriptionStore(dsn, table="mrag_fts_not_ours", create=False, text_search_config="english"))
    assert owner is not None  # made the column for "english"; the reader below wants "simple"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS mrag_fts_reader")
        conn.execute("CREATE ROLE mrag_fts_reader LOGIN PASSWORD 'reader-pw'")
        conn.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON mrag_fts_not_ours TO mrag_fts_reader")
    try:
        params = {**conninfo_to_dict(dsn), "user": "mrag_fts_reader", "password": "reader-pw"}
        reader = PostgresDescriptionStore(make_conninfo(**params), table="mrag_fts_not_ours", create=False)
        reader.put([Record(id="new", description="copper pan")])
        assert reader.get("old").description == "copper kettle" and len(reader) == 3
        with pytest.raises(BackendError, match="may not add it"):
            reader.search_text("copper", k=5)
        reader.close()
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("REVOKE ALL ON mrag_fts_not_ours FROM mrag_fts_reader")
            conn.execute("DROP ROLE mrag_fts_reader")
