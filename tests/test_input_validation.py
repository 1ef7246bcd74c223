"""Ids and metadata are checked where they enter, so nothing a caller names escapes the knowledge base."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pytest

from helpers import ColorEmbedder, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag._images import content_id
from multimodal_rag._kb.journal import read_journal
from multimodal_rag._validation import MAX_ID_BYTES, MAX_METADATA_DEPTH
from multimodal_rag.errors import InvalidInputError, KnowledgeBaseError
from multimodal_rag.types import Record
from test_description_store_contract import DESCRIPTION_STORES


@pytest.fixture
def kb(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, embedder: ColorEmbedder):
    white = tmp_path_factory.mktemp("inputs") / "white.png"  # from a file: no images/ folder yet
    solid("white").save(white)
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=embedder)
    rag.add([white], ids=["before"], descriptions=["stored before"], progress=False)
    yield rag
    rag.close()


def unchanged(rag: MultimodalRAG) -> None:
    """The knowledge base still holds exactly what the fixture put in, in memory and on disk."""
    assert rag.ids() == ["before"] and rag.get("before").description == "stored before"
    assert rag.get("before").metadata == {}
    assert [e.ids for e in read_journal(rag.path / "journal.bin").entries] == [["before"]]


def png_bytes(colour: str) -> bytes:
    buffer = io.BytesIO()
    solid(colour).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_IDS = [
    pytest.param("", "empty", id="empty"),
    pytest.param("../../escape", "path separator", id="dot-dot-slash"),
    pytest.param("/tmp/absolute", "path separator", id="absolute"),
    pytest.param("a/b", "path separator", id="slash"),
    pytest.param("a\\b", "path separator", id="backslash"),
    pytest.param("..", "'..'", id="dot-dot"),
    pytest.param(".", "'.'", id="dot"),
    pytest.param("a\x00b", "control character", id="nul"),
    pytest.param("line\nbreak", "control character", id="newline"),
    pytest.param("del\x7f", "control character", id="delete"),
    pytest.param("x" * (MAX_ID_BYTES + 1), f"at most {MAX_ID_BYTES}", id="too-long"),
    pytest.param("é" * (MAX_ID_BYTES // 2 + 1), f"at most {MAX_ID_BYTES}", id="too-long-in-utf8"),
    pytest.param("\udfff", "UTF-8", id="lone-surrogate"),
    pytest.param(7, "must be a string", id="int"),
    pytest.param(b"bytes", "must be a string", id="bytes"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_IDS)
def test_add_refuses_a_bad_id_naming_it_and_stores_nothing(kb, tmp_path: Path, bad: Any, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        kb.add([solid("red")], ids=[bad], progress=False)
    unchanged(kb)
    assert not (tmp_path / "escape.png").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["kb"]


def test_an_in_memory_image_with_an_escaping_id_writes_nothing_outside(kb, tmp_path: Path) -> None:
    for bad in ("../../escape", str(tmp_path / "absolute")):
        with pytest.raises(InvalidInputError, match="path separator"):
            kb.add([solid("red")], ids=[bad], progress=False)
        with pytest.raises(InvalidInputError, match="path separator"):
            kb.add([png_bytes("red")], ids=[bad], progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kb"]
    assert not (kb.path / "images").exists() or not any((kb.path / "images").iterdir())
    unchanged(kb)


@pytest.mark.parametrize(
    "good", ["c 🦜", "d'; DROP TABLE records;--", "v1..2", "...x", "x" * MAX_ID_BYTES, "é" * (MAX_ID_BYTES // 2)]
)
def test_ordinary_ids_are_accepted(kb, good: str) -> None:
    kb.add([solid("red")], ids=[good], progress=False)
    assert kb.get(good).id == good
    assert kb.remove([good]) == 1


# Ids 0.1.0 accepted that new records may no longer take; records holding one stay usable.
NEW_ONLY = ("dot-dot-slash", "absolute", "slash", "backslash", "dot-dot", "dot")
NEVER_STORED = [p for p in BAD_IDS if p.id not in NEW_ONLY]


@pytest.mark.parametrize(("bad", "reason"), NEVER_STORED)
def test_get_describe_and_remove_refuse_a_bad_id(kb, bad: Any, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        kb.get(bad)
    with pytest.raises(InvalidInputError, match=reason):
        kb.describe(bad, "text")
    with pytest.raises(InvalidInputError, match=reason):
        kb.remove(["before", bad])  # refused whole: "before" stays
    unchanged(kb)


@pytest.mark.parametrize("store_name", sorted(DESCRIPTION_STORES))
@pytest.mark.parametrize(("bad", "reason"), [p for p in NEVER_STORED if p.id not in ("int", "bytes")])
def test_every_description_store_refuses_a_bad_id(store_name: str, bad: str, reason: str) -> None:
    store = DESCRIPTION_STORES[store_name]()
    with pytest.raises(InvalidInputError, match=reason):
        store.put([Record(id="fine", description="kept"), Record(id=bad, description="refused")])
    assert len(store) == 0


def test_records_of_earlier_versions_keep_ids_new_records_may_not_take(kb, embedder: ColorEmbedder) -> None:
    old_ids = ["images/blue.png", "a\\b", "..", "."]
    # As a 0.1.0 knowledge base holds them: stored without today's rule for new ids.
    kb.vector_store.add(old_ids, embedder.embed_images([solid("blue")] * len(old_ids)))
    kb.description_store.put([Record(id=i, description=f"old {i}", metadata={"n": 1}) for i in old_ids])
    kb.save()
    path = kb.path
    kb.close()
    rag = MultimodalRAG.open(path, embedder=embedder)
    assert rag.get("images/blue.png").description == "old images/blue.png"
    assert rag.describe("..", "edited", metadata={"n": 2}).metadata == {"n": 2}
    assert rag.remove(["a\\b"]) == 1
    rag.save()
    rag.close()
    rag = MultimodalRAG.open(path, embedder=embedder)
    assert {"images/blue.png", "..", "."} <= set(rag.ids()) and "a\\b" not in rag.ids()
    assert rag.get("..").description == "edited"
    with pytest.raises(InvalidInputError, match="path separator"):
        rag.add([solid("red")], ids=["new/one"], progress=False)
    rag.close()


@pytest.mark.parametrize("store_name", ["jsonl", "sqlite"])
def test_salvage_keeps_records_of_earlier_versions(store_name: str, tmp_path: Path) -> None:
    store = DESCRIPTION_STORES[store_name]()
    old_ids = ["images/blue.png", "a\\b", "..", "fine"]
    store.put([Record(id=i, description=f"old {i}") for i in old_ids])
    store.save(tmp_path)
    salvaged = type(store).salvage(tmp_path)
    assert sorted(r.id for r in salvaged) == sorted(old_ids)


def test_images_given_in_memory_are_named_by_the_hash_of_their_bytes(kb) -> None:
    data = png_bytes("green")
    kb.add([data, solid("blue")], ids=["my green", "my blue"], progress=False)
    green = Path(kb.get("my green").image_path)
    blue = Path(kb.get("my blue").image_path)
    images = (kb.path / "images").resolve()
    assert green == images / f"{content_id(data)}.png"
    assert green.read_bytes() == data
    assert blue.parent == images and blue.name == f"{content_id(blue.read_bytes())}.png"


def test_an_id_used_again_for_another_image_keeps_the_new_image(kb) -> None:
    kb.add([png_bytes("red")], ids=["reused"], progress=False)
    kb.remove(["reused"])
    kb.add([png_bytes("blue")], ids=["reused"], progress=False)
    assert Path(kb.get("reused").image_path).read_bytes() == png_bytes("blue")


def test_an_images_folder_that_cannot_be_made_is_a_knowledge_base_error_and_stores_nothing(kb) -> None:
    (kb.path / "images").write_bytes(b"a file where the folder should be")
    with pytest.raises(KnowledgeBaseError, match="nothing was stored"):
        kb.add([solid("red"), png_bytes("blue")], progress=False)
    unchanged(kb)


def test_an_images_folder_the_disk_refuses_is_a_knowledge_base_error(kb, monkeypatch) -> None:
    real_mkdir = Path.mkdir

    def refuse(self: Path, *args: Any, **kwargs: Any) -> None:
        if self.name == "images":
            raise PermissionError(13, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(KnowledgeBaseError, match="Permission denied"):
        kb.add([png_bytes("red")], descriptions=["red"], progress=False)
    unchanged(kb)


# -- metadata: only what JSON keeps exactly ------------------------------------


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"d": value}
    return value


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        pytest.param({1: "one"}, r"key 1 .*must be strings", id="int-key"),
        pytest.param({"a": {(1, 2): "x"}}, r"\['a'\].*key \(1, 2\)", id="tuple-key"),
        pytest.param({"t": (1, 2)}, r"\['t'\] is a tuple", id="tuple"),
        pytest.param({"a": [1, {"b": {1, 2}}]}, r"\['a'\]\[1\]\['b'\] is a set", id="deep-set"),
        pytest.param({"b": b"x"}, r"\['b'\] is a bytes", id="bytes"),
        pytest.param({"f": math.inf}, r"\['f'\] is not finite", id="inf"),
        pytest.param({"f": [math.nan]}, r"\['f'\]\[0\] is not finite", id="nan"),
        pytest.param(nested(5000), f"more than {MAX_METADATA_DEPTH} levels", id="5000-deep"),
        pytest.param(nested(MAX_METADATA_DEPTH + 1), f"more than {MAX_METADATA_DEPTH} levels", id="one-too-deep"),
    ],
)
def test_metadata_json_cannot_hold_exactly_is_refused_naming_record_and_path(
    kb, metadata: dict[Any, Any], reason: str
) -> None:
    with pytest.raises(InvalidInputError, match=reason) as raised:
        kb.add([solid("red")], ids=["named"], metadata=[metadata], progress=False)
    assert "'named'" in str(raised.value)
    with pytest.raises(InvalidInputError, match=reason):
        kb.describe("before", "new text", metadata=metadata)
    unchanged(kb)


def test_metadata_of_an_image_without_an_id_names_its_source(kb) -> None:
    with pytest.raises(InvalidInputError, match=r"<PIL image>.*\['t'\] is a tuple"):
        kb.add([solid("red")], metadata=[{"t": (1,)}], progress=False)
    unchanged(kb)


def test_circular_metadata_is_refused_not_a_recursion_error(kb) -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(InvalidInputError, match="levels"):
        kb.add([solid("red")], metadata=[loop], progress=False)


def test_metadata_that_is_not_a_mapping_is_refused(kb) -> None:
    with pytest.raises(InvalidInputError, match="metadata"):
        kb.add([solid("red")], metadata=[["not", "a", "mapping"]], progress=False)
    unchanged(kb)


@pytest.mark.parametrize("store_name", sorted(DESCRIPTION_STORES))
def test_every_description_store_refuses_metadata_json_cannot_hold(store_name: str) -> None:
    store = DESCRIPTION_STORES[store_name]()
    for metadata in ({1: "x"}, {"t": (1,)}, nested(5000)):
        with pytest.raises(InvalidInputError, match="'r'"):
            store.put([Record(id="r", metadata=metadata)])
    assert len(store) == 0


EXACT = {
    "int64 max": 2**63 - 1,
    "int64 min": -(2**63),
    "beyond int64": 2**100,
    "below int64": -(2**70) - 1,
    "float": 0.1,
    "negative zero": -0.0,
    "tiny": 5e-324,
    "flags": [True, False, None],
    "deep": nested(MAX_METADATA_DEPTH - 1),
    "text": "🦜 and \\ and \"",
}


@pytest.mark.parametrize("description_store", ["sqlite", "jsonl"])
def test_metadata_json_can_hold_comes_back_exactly_after_reopening(
    tmp_path: Path, embedder: ColorEmbedder, description_store: str
) -> None:
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=embedder, description_store=description_store)
    rag.add([solid("red")], ids=["journaled"], metadata=[EXACT], progress=False)
    rag.close()  # from the journal
    rag = MultimodalRAG.open(tmp_path / "kb", embedder=embedder)
    rag.add([solid("blue")], ids=["saved"], metadata=[EXACT], progress=False)
    rag.save()  # and from a snapshot
    rag.close()
    rag = MultimodalRAG.open(tmp_path / "kb", embedder=embedder, read_only=True)
    for id_ in ("journaled", "saved"):
        stored = rag.get(id_).metadata
        assert stored == EXACT
        assert [type(v) for v in stored.values()] == [type(v) for v in EXACT.values()]
        assert math.copysign(1.0, stored["negative zero"]) == -1.0
    rag.close()
