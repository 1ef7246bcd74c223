"""rag.evaluate(): query sets made from the knowledge base, labelled queries, index loss, the gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import ColorEmbedder, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag.errors import InvalidInputError
from multimodal_rag.evaluation.report import EvaluationReport


def color(i: int) -> tuple[int, int, int]:
    return (37 * i % 256, 91 * i % 256, 53 * i % 256)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i in range(80):
        path = folder / f"{i:02d}.png"
        solid(color(i), (64, 48)).save(path)
        paths.append(path)
    return paths


def knowledge_base(path: Path, images: list[Path], **stores: object) -> MultimodalRAG:
    rag = MultimodalRAG.create(path, embedder=ColorEmbedder(), **stores)  # type: ignore[arg-type]
    rag.add(images, ids=[p.stem for p in images], descriptions=[f"colour number {p.stem}" for p in images], progress=False)
    return rag


def test_the_knowledge_bases_own_images_as_queries_find_themselves(tmp_path: Path, images: list[Path]) -> None:
    rag = knowledge_base(tmp_path / "kb", images)
    queries = tmp_path / "queries.jsonl"
    # Exact duplicates: each image asked as itself, labelled by path and by id.
    queries.write_text(
        "\n".join(json.dumps({"image": str(p), "expected": [str(p) if i % 2 else p.stem]}) for i, p in enumerate(images[:20]))
    )
    report = rag.evaluate(queries=queries, edits=[], sample=10, progress=False)
    [duplicates] = [s for s in report.sets if s.query_set == "image:labelled"]
    assert duplicates.queries == 20 and duplicates.recall["1"] == 1.0 and duplicates.mrr == 1.0
    assert all(r.rank == 1 and r.expected == (Path(r.query).stem,) for r in report.results if r.query_set == "image:labelled")


def test_every_edit_kind_is_a_query_set_and_the_run_is_repeatable(tmp_path: Path, images: list[Path]) -> None:
    rag = knowledge_base(tmp_path / "kb", images)
    first = rag.evaluate(sample=12, seed=3, progress=False)
    again = rag.evaluate(sample=12, seed=3, progress=False)
    other = rag.evaluate(sample=12, seed=4, progress=False)
    names = [s.query_set for s in first.sets]
    assert names[:8] == [f"edit:{k}" for k in ("crop", "downscale", "jpeg", "rotate", "perspective", "jitter", "blur", "clutter")]
    assert names[8:] == ["text:descriptions"]
    assert all(s.queries == 12 for s in first.sets)
    assert [(r.query, r.ranked) for r in first.results] == [(r.query, r.ranked) for r in again.results]
    assert [r.query for r in first.results] != [r.query for r in other.results]
    # Round trip through JSON, as --compare reads it.
    assert EvaluationReport.from_dict(json.loads(json.dumps(first.to_dict()))) == first
    assert first.latency_ms["p50"] > 0 and first.settings["seed"] == 3 and first.notes


def test_an_exact_store_loses_nothing_and_a_weak_ivf_setting_loses_recall(tmp_path: Path, images: list[Path]) -> None:
    from multimodal_rag.vectors.faiss_ivf import FaissIVFStore

    flat = knowledge_base(tmp_path / "flat", images).evaluate(sample=40, seed=0, edits=["crop", "jitter"], progress=False)
    assert all(loss == 0.0 for s in flat.sets for loss in s.index_loss.values())
    weak = FaissIVFStore(ColorEmbedder().dim, nlist=4, nprobe=1, train_size=40)
    ivf = knowledge_base(tmp_path / "ivf", images, vector_store=weak).evaluate(
        sample=40, seed=0, edits=["crop", "jitter"], progress=False
    )
    assert max(s.index_loss["10"] for s in ivf.sets) > 0.0
    assert all(s.exact_recall == f.exact_recall for s, f in zip(ivf.sets, flat.sets))  # same vectors, same exact search


def test_the_gate_is_measured_on_held_out_images_or_on_given_negatives(tmp_path: Path, images: list[Path]) -> None:
    rag = knowledge_base(tmp_path / "kb", images[:60])
    held_out = rag.evaluate(sample=30, seed=0, edits=["crop"], progress=False)
    assert held_out.gate is not None and held_out.gate.negatives_source == "held-out images"
    assert len(held_out.gate.unanswerable) == 6  # a fifth of the sample
    assert len(held_out.gate.answerable) == 30  # image queries only
    negatives = tmp_path / "negatives"
    negatives.mkdir()
    for i, path in enumerate(images[60:]):
        (negatives / f"n{i}.png").write_bytes(path.read_bytes())
    given = rag.evaluate(sample=30, seed=0, edits=["crop"], negatives=negatives, progress=False)
    assert given.gate is not None and given.gate.negatives_source == "negatives folder"
    assert len(given.gate.unanswerable) == 20
    gate = given.gate
    kept = sum(score >= gate.recommended_min_score for score in gate.answerable) / len(gate.answerable)
    assert kept >= gate.keep and 0.0 <= gate.auroc <= 1.0


def test_labelled_text_queries_replace_the_descriptions_proxy(tmp_path: Path, images: list[Path]) -> None:
    rag = knowledge_base(tmp_path / "kb", images)
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"query": "red", "expected": ["00", "07"]}) + "\n")
    report = rag.evaluate(queries=queries, edits=[], sample=5, progress=False)
    assert [s.query_set for s in report.sets] == ["text:labelled"]
    [result] = report.results
    assert result.expected == ("00", "07") and len(result.ranked) == 10


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"query": "x", "expected": ["nope"]}', "line 1.*'nope' is neither an id nor an image path"),
        ('{"query": "x"}', "line 1.*expected"),
        ('{"query": "x", "image": "y", "expected": ["00"]}', "line 1.*either"),
        ("not json", "line 1 is not JSON"),
    ],
)
def test_a_bad_queries_file_names_the_line(tmp_path: Path, images: list[Path], line: str, message: str) -> None:
    rag = knowledge_base(tmp_path / "kb", images[:5])
    queries = tmp_path / "queries.jsonl"
    queries.write_text(line + "\n")
    with pytest.raises(InvalidInputError, match=message):
        rag.evaluate(queries=queries, progress=False)


def test_bad_settings_are_refused(tmp_path: Path, images: list[Path]) -> None:
    rag = knowledge_base(tmp_path / "kb", images[:5])
    with pytest.raises(InvalidInputError, match="unknown edit kind.*crop"):
        rag.evaluate(edits=["sharpen"], progress=False)
    with pytest.raises(InvalidInputError, match="keep"):
        rag.evaluate(keep=1.5, progress=False)
    with pytest.raises(InvalidInputError, match="sample"):
        rag.evaluate(sample=0, progress=False)


def test_a_queries_file_names_its_sets_and_images_by_their_last_folders(tmp_path: Path, images: list[Path]) -> None:
    rag = knowledge_base(tmp_path / "kb", images[:10])
    queries = tmp_path / "elsewhere" / "queries.jsonl"
    queries.parent.mkdir()
    folder = images[0].parent.name
    queries.write_text(
        json.dumps({"query": "colour", "set": "keyword", "expected": [f"{folder}/03.png"]})
        + "\n"
        + json.dumps({"query": "a hue", "set": "paraphrase", "expected": ["04.png"]})
        + "\n"
    )
    report = rag.evaluate(queries=queries, edits=[], sample=2, progress=False)
    assert [s.query_set for s in report.sets] == ["text:keyword", "text:paraphrase"]
    assert [r.expected for r in report.results] == [("03",), ("04",)]
