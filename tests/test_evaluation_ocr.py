"""rag.evaluate() searches labelled queries as users search: query photos read for their text.

The deterministic reader of `ocr_helpers` stands in for the model: a red photo "holds"
"XR-2000 battery / 12V 7Ah". The battery is green, so by its picture a red query photo finds
the red decoys first; only the words read in the photo can bring the battery up.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from helpers import ColorEmbedder, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag.errors import InvalidInputError
from multimodal_rag.evaluation.render import report_table
from multimodal_rag.evaluation.report import EvaluationReport
from multimodal_rag.ocr import ReadText, TextLine
from ocr_helpers import BOX, ColourTextReader

RED, GREEN = (255, 0, 0), (0, 160, 0)


def catalogue(tmp_path: Path, *, ocr: bool) -> MultimodalRAG:
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder())  # type: ignore[arg-type]
    rag.add(
        [solid(GREEN), solid((250, 12, 12)), solid((235, 30, 25)), solid((0, 0, 255))],
        ids=["battery", "red-toy", "red-bucket", "lamp"],
        descriptions=["Battery XR-2000, 12V", "a red toy", "a red bucket", "a desk lamp"],
        ocr=ColourTextReader() if ocr else False,
        progress=False,
    )
    return rag


@pytest.fixture
def queries(tmp_path: Path) -> Path:
    """A red photo of the battery's label, and the model number typed in another spelling."""
    solid(RED, (64, 48)).save(tmp_path / "label.png")
    path = tmp_path / "queries.jsonl"
    path.write_text(
        json.dumps({"image": "label.png", "set": "photo", "expected": ["battery"]})
        + "\n"
        + json.dumps({"query": "xr 2000", "set": "model", "expected": ["battery"]})
        + "\n"
    )
    return path


def ranks(report: EvaluationReport) -> dict[str, tuple[int | None, int | None]]:
    return {r.query_set: (r.rank, r.exact_rank) for r in report.results}


def test_an_image_query_is_read_and_fused_as_search_does_and_not_without_query_ocr(
    tmp_path: Path, queries: Path
) -> None:
    rag = catalogue(tmp_path, ocr=True)
    read = rag.evaluate(queries=queries, edits=[], mode="hybrid", progress=False)
    unread = rag.evaluate(queries=queries, edits=[], mode="hybrid", query_ocr=False, progress=False)
    by_vector = rag.evaluate(queries=queries, edits=[], mode="vector", progress=False)
    # Read, the photo's model number finds the battery first, through the index and exactly.
    assert ranks(read)["image:photo"] == (1, 1)
    # Unread (or a vector evaluation), the red decoys come first.
    assert ranks(unread)["image:photo"][0] not in (None, 1)
    assert ranks(by_vector)["image:photo"] == ranks(unread)["image:photo"]
    # What the evaluation ranks is what rag.search returns for the same photo.
    [photo] = [r for r in read.results if r.query_set == "image:photo"]
    hits = rag.search(image=photo.query, k=10)
    assert list(photo.ranked) == [h.id for h in hits] and list(photo.scores) == [h.score for h in hits]
    # A typed model number in another spelling is found by the identifier channel in hybrid mode.
    assert ranks(read)["text:model"] == (1, 1)
    assert read.settings["query_ocr"] is None and by_vector.settings["mode"] == "vector"
    # Each searched set reports its own latency, and the table shows it per set.
    assert {s.query_set for s in read.sets if s.latency_ms["p50"] > 0} == {"image:photo", "text:model"}
    assert "latency per set" in report_table(read) and "latency per set" not in report_table(by_vector)
    assert EvaluationReport.from_dict(json.loads(json.dumps(read.to_dict()))) == read


def test_query_ocr_reads_query_photos_on_a_knowledge_base_that_reads_no_text(
    tmp_path: Path, queries: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import multimodal_rag._facade.reading as reading

    monkeypatch.setattr(reading, "default_reader", ColourTextReader)
    rag = catalogue(tmp_path, ocr=False)
    default = rag.evaluate(queries=queries, edits=[], mode="hybrid", progress=False)
    asked = rag.evaluate(queries=queries, edits=[], mode="hybrid", query_ocr=True, progress=False)
    assert ranks(default)["image:photo"][0] != 1  # the knowledge base reads no text: not read
    assert ranks(asked)["image:photo"] == (1, 1)  # read, its words meet the battery's description
    with pytest.raises(InvalidInputError, match="query_ocr=True needs mode lexical or hybrid"):
        rag.evaluate(queries=queries, edits=[], query_ocr=True, progress=False)


def test_lexical_mode_searches_a_photo_by_its_words_alone(tmp_path: Path, queries: Path) -> None:
    rag = catalogue(tmp_path, ocr=True)
    report = rag.evaluate(queries=queries, edits=[], mode="lexical", progress=False)
    [photo] = [r for r in report.results if r.query_set == "image:photo"]
    assert photo.ranked[0] == "battery" and "lamp" not in photo.ranked  # no word of the lamp's
    assert photo.exact_ranked == photo.ranked  # no vector channel: nothing approximate
    blank = tmp_path / "blank.jsonl"  # a green photo holds no text: lexical search finds nothing
    solid(GREEN, (64, 48)).save(tmp_path / "green.png")
    blank.write_text(json.dumps({"image": "green.png", "expected": ["battery"]}) + "\n")
    [result] = [r for r in rag.evaluate(queries=blank, edits=[], mode="lexical", progress=False).results if r.query_set == "image:labelled"]
    assert result.ranked == () and result.rank is None


class TileReader:
    """Reads the same word in every photo: the word channel ties, the picture decides."""

    def read(self, images: Sequence[Image.Image]) -> list[ReadText]:
        return [ReadText(lines=[TextLine(text="tile", confidence=0.9, box=BOX)]) for _ in images]

    def config(self) -> dict[str, Any]:
        return {}


def test_exact_search_of_a_fused_query_uses_an_exact_vector_channel(tmp_path: Path) -> None:
    """Through a deliberately weak IVF index fused queries rank otherwise; exactly, they rank as
    through an exact index over the same vectors."""
    from multimodal_rag.vectors.faiss_ivf import FaissIVFStore

    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for i in range(300):  # lists of ~75 vectors: one probed list fills the 50 a channel fetches
        paths.append(folder / f"{i:03d}.png")
        solid((37 * i % 256, 91 * i % 256, 53 * i % 256), (16, 12)).save(paths[-1])
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"image": str(p), "expected": [p.stem]}) + "\n" for p in paths[:40]))
    reports = {}
    for name, store in (("flat", None), ("ivf", FaissIVFStore(ColorEmbedder().dim, nlist=4, nprobe=1, train_size=300))):
        stores = {} if store is None else {"vector_store": store}
        rag = MultimodalRAG.create(tmp_path / name, embedder=ColorEmbedder(), **stores)  # type: ignore[arg-type]
        rag.add(paths, ids=[p.stem for p in paths], descriptions=["a tile"] * len(paths), ocr=TileReader(), progress=False)
        reports[name] = rag.evaluate(queries=queries, edits=[], sample=5, mode="hybrid", progress=False)
    flat, ivf = ({s.query_set: s for s in reports[n].sets}["image:labelled"] for n in ("flat", "ivf"))
    assert flat.index_loss["10"] == 0.0 and ivf.exact_recall == flat.recall
    fused = [r for r in reports["flat"].results if r.query_set == "image:labelled"]
    weak = [r for r in reports["ivf"].results if r.query_set == "image:labelled"]
    assert all(r.ranked == r.exact_ranked for r in fused)
    assert sum(w.ranked != f.ranked for w, f in zip(weak, fused)) > len(fused) // 2  # the weak index ranks otherwise
    assert [w.exact_ranked for w in weak] == [f.ranked for f in fused]  # exactly, as the exact index
