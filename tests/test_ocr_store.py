"""The text read in images (OCR), as the knowledge base keeps it: read at ingest, saved, journalled,
searched, edited, verified and repaired, and read later for images added without it.

A deterministic reader (`ocr_helpers.ColourTextReader`) stands in for the real model; the
real one runs in the last test, once its module is installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import ColorEmbedder, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag import _registry as registry
from multimodal_rag._kb.journal import read_journal
from multimodal_rag.errors import InvalidInputError, MissingDependencyError, NotFoundError
from multimodal_rag.ocr import ReadText
from ocr_helpers import BOX, TEXTS, ColourTextReader

REPO = Path(__file__).resolve().parents[1]
RED, BLUE, GREEN, BLACK = (255, 0, 0), (0, 0, 255), (0, 255, 0), (0, 0, 0)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, colour in (("red", RED), ("blue", BLUE), ("green", GREEN)):
        solid(colour).save(folder / f"{name}.png")
    return folder


@pytest.fixture
def test_kind(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register the test reader as a built-in kind, so a manifest rebuilds it as it would rapidocr."""
    table = {**registry.BUILTINS["text_reader"], "colour-text": "ocr_helpers:ColourTextReader"}
    monkeypatch.setitem(registry.BUILTINS, "text_reader", table)
    return "colour-text"


def texts(rag: MultimodalRAG) -> dict[str, str | None]:
    """Each image's read text by the file it came from (``None``: not read)."""
    out = {}
    for id_ in rag.ids():
        record = rag.get(id_)
        out[Path(record.image_path or id_).stem] = None if record.ocr is None else record.ocr.text
    return out


def test_ingest_reads_stores_and_searches_the_text_apart_from_the_description(
    tmp_path: Path, photos: Path, test_kind: str
) -> None:
    (photos / "black.png").write_bytes(b"")  # an unreadable file: skipped, as always
    solid(BLACK).save(photos / "dark.png")  # the reader fails on this one
    descriptions = tmp_path / "descriptions.jsonl"
    descriptions.write_text(
        json.dumps({"image_path": "blue.png", "description": "a lamp on a desk"}) + "\n"
    )
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder())
    result = rag.add_directory(
        photos, descriptions=descriptions, ocr=ColourTextReader(), progress=False
    )

    assert len(result.added) == 4 and [Path(s.source).name for s in result.skipped] == ["black.png"]
    assert [Path(u.source).name for u in result.unread] == ["dark.png"]
    assert "the model crashed" in result.unread[0].reason
    assert texts(rag) == {"red": TEXTS[RED], "blue": TEXTS[BLUE], "green": "", "dark": None}
    red = next(rag.get(i) for i in rag.ids() if rag.get(i).image_path.endswith("red.png"))  # type: ignore[union-attr]
    assert red.description is None and red.ocr is not None
    assert [(line.confidence, line.box) for line in red.ocr.lines] == [(0.9, BOX), (0.9, BOX)]
    # The description keeps the user's words; the read text is searched beside them.
    blue = rag.search(text="desk", mode="lexical", k=5)
    assert [Path(h.image_path or "").name for h in blue] == ["blue.png"] and blue[
        0
    ].description == "a lamp on a desk"
    hits = rag.search(text="XR-2000", mode="lexical", k=5)
    assert [Path(h.image_path or "").name for h in hits] == ["red.png"]
    assert hits[0].ocr == red.ocr and hits[0].to_dict()["ocr_text"] == TEXTS[RED]
    assert rag.ocr_info == {
        "on": True,
        "reader": "colour-text",
        "config": {"confidence": 0.9},
        "read": 3,
        "with_text": 2,
    }
    rag.save()
    rag.close()

    manifest = json.loads((tmp_path / "kb" / "manifest.json").read_text())
    assert manifest["text_reader"] == {"kind": "colour-text", "config": {"confidence": 0.9}}
    assert manifest["counts"]["text_read"] == 3 and manifest["counts"]["with_text"] == 2
    reopened = MultimodalRAG.open(tmp_path / "kb", embedder=ColorEmbedder())
    assert texts(reopened) == {"red": TEXTS[RED], "blue": TEXTS[BLUE], "green": "", "dark": None}
    assert reopened.get(red.id).ocr == red.ocr
    # A later add reads text without being asked: the manifest rebuilds the reader.
    calls = len(ColourTextReader.calls)
    added = reopened.add([solid(BLUE, size=(40, 20))], progress=False)
    assert len(ColourTextReader.calls) == calls + 1
    assert reopened.get(added.added[0]).ocr.text == TEXTS[BLUE]  # type: ignore[union-attr]
    # ocr=False leaves one call's images unread, and the knowledge base still reads text.
    skipped = reopened.add([solid(RED, size=(50, 20))], ocr=False, progress=False)
    assert reopened.get(skipped.added[0]).ocr is None and reopened.ocr_info["on"] is True
    reopened.close()


@pytest.mark.parametrize("store", ["sqlite", "jsonl"])
def test_text_in_the_journal_is_replayed_after_a_crash(
    tmp_path: Path, store: str, test_kind: str
) -> None:
    kb = tmp_path / "kb"
    rag = MultimodalRAG.create(kb, embedder=ColorEmbedder(), description_store=store)  # type: ignore[arg-type]
    rag.add([solid(GREEN)], ids=["saved"], progress=False)
    rag.save()
    rag.close()
    # A writer that reads text, commits, edits, and is killed before it saves.
    child = textwrap.dedent(
        f"""
        import os
        from helpers import ColorEmbedder, solid
        from multimodal_rag import MultimodalRAG
        from ocr_helpers import ColourTextReader
        rag = MultimodalRAG.open({str(kb)!r}, embedder=ColorEmbedder())
        rag.add([solid({RED}), solid({BLUE})], ids=["red", "blue"], ocr=ColourTextReader(), progress=False)
        rag.edit_text("blue", "corrected by hand")
        rag.read_text(ids=["saved"], progress=False)
        os._exit(9)
        """
    )
    env = {"PYTHONPATH": f"{REPO / 'src'}:{REPO / 'tests'}", "PATH": "/usr/bin:/bin"}
    assert subprocess.run([sys.executable, "-c", child], env=env, timeout=120).returncode == 9
    assert len(read_journal(kb / "journal.bin").entries) == 3  # the add, the edit, the read

    reopened = MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True)
    assert reopened.get("red").ocr == ColourTextReader().read([solid(RED)])[0]
    assert reopened.get("blue").ocr.text == "corrected by hand"  # type: ignore[union-attr]
    assert reopened.get("saved").ocr == ReadText()  # read, and holds no text
    assert [h.id for h in reopened.search(text="XR-2000", mode="lexical")] == ["red"]
    reopened.close()


def test_edit_and_remove_the_text_like_a_description(tmp_path: Path) -> None:
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder())
    rag.add(
        [solid(RED)],
        ids=["red"],
        descriptions=["a battery"],
        ocr=ColourTextReader(),
        progress=False,
    )
    edited = rag.edit_text("red", "XR-3000 battery\n\n24V")
    assert [line.text for line in edited.ocr.lines] == ["XR-3000 battery", "24V"]  # type: ignore[union-attr]
    assert edited.description == "a battery" and rag.get("red").ocr == edited.ocr
    assert [h.id for h in rag.search(text="XR-3000", mode="lexical")] == ["red"]
    assert rag.search(text="XR-2000", mode="lexical") == []
    assert rag.edit_text("red", "").ocr == ReadText()  # read, and kept empty
    removed = rag.edit_text("red", None)
    assert removed.ocr is None and removed.description == "a battery"
    assert rag.search(text="XR-3000", mode="lexical") == []
    with pytest.raises(NotFoundError, match="nope"):
        rag.edit_text("nope", "x")
    with pytest.raises(InvalidInputError, match="string, a ReadText or None"):
        rag.edit_text("red", 42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="NUL"):
        rag.edit_text("red", "a\x00b")
    assert rag.get("red").ocr is None  # a refused edit changes nothing
    rag.close()


def test_verify_reports_unread_images_and_repair_reads_them(tmp_path: Path, test_kind: str) -> None:
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder())
    rag.add([solid(RED), solid(BLUE)], ids=["red", "blue"], ocr=ColourTextReader(), progress=False)
    rag.edit_text("red", None)  # as if its text were lost
    report = rag.verify()
    assert [(p.kind, p.id) for p in report.problems] == [("text-not-read", "red")]
    repaired = rag.repair()
    assert repaired.text_read == ("red",) and repaired.remaining.ok and repaired.ok
    assert rag.get("red").ocr.text == TEXTS[RED]  # type: ignore[union-attr]
    assert repaired.to_dict()["text_read"] == ["red"]
    # Without a reader on, an image without read text is no problem.
    plain = MultimodalRAG.create(tmp_path / "plain", embedder=ColorEmbedder())
    plain.add([solid(RED)], progress=False)
    assert plain.verify().ok and plain.repair().text_read == ()
    rag.close()
    plain.close()


def test_an_existing_knowledge_base_reads_its_text_later_without_embedding_again(
    tmp_path: Path, test_kind: str
) -> None:
    embedder = ColorEmbedder()
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=embedder)
    colours = [RED, BLUE, GREEN, (255, 255, 0), (0, 255, 255)]
    rag.add([solid(c) for c in colours], ids=[f"i{n}" for n in range(5)], progress=False)
    rag.save()
    embedded = embedder.image_calls if hasattr(embedder, "image_calls") else None

    class Interrupted(Exception):
        pass

    class StopsAfterOneBatch(ColourTextReader):
        def read(self, images):  # type: ignore[no-untyped-def]
            if StopsAfterOneBatch.batches == 1:
                raise Interrupted
            StopsAfterOneBatch.batches += 1
            return super().read(images)

    StopsAfterOneBatch.batches = 0  # type: ignore[attr-defined]
    # The first batch is committed; the second one's failure is reported per image, never raised.
    first = rag.read_text(ocr=StopsAfterOneBatch(), batch_size=2, progress=False)
    assert first.read == ("i0", "i1") and {s.source for s in first.skipped} == {"i2", "i3", "i4"}
    assert [r.ocr is not None for r in (rag.get(f"i{n}") for n in range(5))] == [
        True,
        True,
        False,
        False,
        False,
    ]
    # Run again: only what is missing is read.
    calls = len(ColourTextReader.calls)
    second = rag.read_text(ocr=ColourTextReader(), batch_size=2, progress=False)
    assert second.read == ("i2", "i3", "i4") and second.skipped == ()
    assert ColourTextReader.calls[calls:] == [2, 1]
    assert rag.read_text(progress=False).read == ()  # nothing left
    if embedded is not None:
        assert embedder.image_calls == embedded
    assert [h.id for h in rag.search(text="LX-40", mode="lexical")] == ["i1"]
    with pytest.raises(NotFoundError, match="nope"):
        rag.read_text(ids=["nope"], progress=False)
    rag.close()


def test_a_reader_that_cannot_load_never_stops_an_ingest(
    tmp_path: Path, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The built-in kind, whose packages are "missing": its constructor raises ImportError.
    monkeypatch.setitem(registry.BUILTINS, "text_reader", {"rapidocr": "ocr_helpers:BrokenReader"})
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder())
    result = rag.add_directory(photos, ocr=True, progress=False)
    assert len(result.added) == 3 and len(result.unread) == 3
    assert all("pip install 'multimodal-rag[ocr]'" in u.reason for u in result.unread)
    assert all(rag.get(i).ocr is None for i in rag.ids())
    rag.save()
    # OCR stays on (recorded), so that the text is read once the extra is installed.
    assert (
        json.loads((tmp_path / "kb" / "manifest.json").read_text())["text_reader"]["kind"]
        == "rapidocr"
    )
    with pytest.raises(MissingDependencyError, match=r"multimodal-rag\[ocr\]"):
        rag.read_text(progress=False)
    assert rag.repair().text_read == ()  # it cannot read: the problems stay listed
    assert {p.kind for p in rag.verify().problems} == {"text-not-read"}
    rag.close()


def test_a_knowledge_base_with_read_text_searches_it_without_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder())
    rag.add([solid(RED)], ids=["red"], ocr=ColourTextReader(), progress=False)
    rag.save()
    rag.close()
    manifest_path = tmp_path / "kb" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["text_reader"] = {
        "kind": "rapidocr",
        "config": {},
    }  # as the built-in reader records it
    manifest_path.write_text(json.dumps(manifest))
    monkeypatch.setitem(registry.BUILTINS, "text_reader", {"rapidocr": "ocr_helpers:BrokenReader"})

    reader = MultimodalRAG.open(tmp_path / "kb", embedder=ColorEmbedder())
    assert [h.id for h in reader.search(text="7Ah", mode="lexical")] == ["red"]  # no reader built
    added = reader.add([solid(BLUE)], ids=["blue"], progress=False)
    assert (
        added.added == ("blue",) and "pip install 'multimodal-rag[ocr]'" in added.unread[0].reason
    )
    assert reader.get("blue").ocr is None
    reader.close()


def test_bad_ocr_arguments_are_refused_before_anything_is_stored(tmp_path: Path) -> None:
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder())
    with pytest.raises(InvalidInputError, match="ocr must be"):
        rag.add([solid(RED)], ocr="yes", progress=False)  # type: ignore[arg-type]
    assert len(rag) == 0 and rag.ocr_info["on"] is False
    with pytest.raises(InvalidInputError, match="reads nothing"):
        rag.read_text(ocr=False, progress=False)

    class Liar(ColourTextReader):
        def read(self, images):  # type: ignore[no-untyped-def]
            return []  # one result short

    result = rag.add([solid(RED)], ids=["red"], ocr=Liar(), progress=False)
    assert result.added == ("red",) and "returned 0 results for 1 images" in result.unread[0].reason
    rag.close()


def test_a_knowledge_base_without_read_text_is_written_as_before(tmp_path: Path) -> None:
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder(), description_store="jsonl")
    rag.add([solid(RED)], ids=["red"], progress=False)
    rag.save()
    rag.close()
    manifest = json.loads((tmp_path / "kb" / "manifest.json").read_text())
    assert "text_reader" not in manifest and set(manifest["counts"]) == {"vectors", "descriptions"}
    assert not any(name.endswith("ocr.jsonl") for name in manifest["files"])
    journal_free = MultimodalRAG.open(tmp_path / "kb", embedder=ColorEmbedder())
    journal_free.add([solid(BLUE)], ids=["blue"], progress=False)
    journal_free.close()
    (entry,) = read_journal(tmp_path / "kb" / "journal.bin").entries
    assert "ocr" not in entry.records[0].to_json()


def test_the_real_reader_reads_a_rendered_label(tmp_path: Path) -> None:
    rapid = pytest.importorskip("multimodal_rag.ocr.rapid")
    pytest.importorskip("rapidocr")
    from PIL import Image, ImageDraw

    label = Image.new("RGB", (320, 80), "white")
    ImageDraw.Draw(label).text((10, 20), "XR 2000", fill="black", font_size=36)
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder())
    result = rag.add([label], ids=["label"], ocr=rapid.RapidOCRReader(), progress=False)
    assert result.unread == ()
    assert "2000" in (rag.get("label").ocr or ReadText()).text
    rag.save()
    assert (
        json.loads((tmp_path / "kb" / "manifest.json").read_text())["text_reader"]["kind"]
        == "rapidocr"
    )
    rag.close()


def test_a_postgres_table_from_before_read_text_gets_its_columns_on_open() -> None:
    from conftest import on_server, server_uri

    dsn = server_uri("DATABASE_URL", "PostgreSQL")
    psycopg = pytest.importorskip("psycopg")
    from multimodal_rag.descriptions.postgres import PostgresDescriptionStore
    from multimodal_rag.types import Record

    old = PostgresDescriptionStore(dsn)
    old.put([Record(id="a", description="an old lamp")])
    with psycopg.connect(dsn) as conn:  # the table as earlier versions made it
        conn.execute(f'ALTER TABLE "{old.table}" DROP COLUMN ocr, DROP COLUMN ocr_text CASCADE')
    old.close()

    store = on_server(PostgresDescriptionStore(dsn, table=old.table, create=False))
    assert store.get("a").ocr is None  # type: ignore[attr-defined]
    read = ColourTextReader().read([solid(RED)])[0]
    store.put([Record(id="b", description="a battery", ocr=read)])  # type: ignore[attr-defined]
    assert store.get("b").ocr == read  # type: ignore[attr-defined]
    assert [id_ for id_, _ in store.search_text("7Ah", 5)] == ["b"]  # type: ignore[attr-defined]
    assert [id_ for id_, _ in store.search_text("lamp", 5)] == ["a"]  # type: ignore[attr-defined]
