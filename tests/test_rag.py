"""The MultimodalRAG facade, end to end with a deterministic embedder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import ColorEmbedder, current_snapshot, encoded, solid, two_tone
from multimodal_rag import MultimodalRAG
from multimodal_rag.errors import (
    DimensionMismatchError,
    ImageError,
    InvalidInputError,
    NotFoundError,
    ReadOnlyError,
)


@pytest.fixture
def rag(tmp_path: Path, embedder: ColorEmbedder) -> MultimodalRAG:
    kb = MultimodalRAG.create(tmp_path / "kb", embedder=embedder)
    yield kb
    kb.close()


def test_directory_ingest_matches_descriptions_and_finds_every_image(rag, image_dir: Path) -> None:
    result = rag.add_directory(image_dir, descriptions=image_dir / "description.json", progress=False)
    assert len(result.added) == 8 and len(result) == 8 and not result.skipped
    by_path = {Path(rag.get(i).image_path).stem: rag.get(i) for i in result}
    assert by_path["red"].description == "A red square."
    assert by_path["red"].metadata == {"shade": "red"}
    assert [Path(rag.get(i).image_path).stem for i in result.undescribed] == ["black"]


def test_search_by_image_returns_best_first_with_descriptions(rag, image_dir: Path) -> None:
    rag.add_directory(image_dir, descriptions=image_dir / "description.json", progress=False)
    hits = rag.search(image=encoded(solid("red", (50, 50))), k=2)
    assert len(hits) == 2
    assert hits[0].description == "A red square." and hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert hits[0].score >= hits[1].score
    assert Path(hits[0].image_path).is_file()


def test_search_by_text_and_by_both(rag, image_dir: Path) -> None:
    rag.add_directory(image_dir, descriptions=image_dir / "description.json", progress=False)
    assert rag.search(text="something blue", k=1)[0].description == "A blue square."
    # The half-red, half-blue image is between both; the text tips the balance.
    query = two_tone("red", "blue")
    assert rag.search(image=query, text="blue", k=1, text_weight=0.7)[0].description == "A blue square."
    assert rag.search(image=query, text="red", k=1, text_weight=0.7)[0].description == "A red square."
    with pytest.raises(InvalidInputError):
        rag.search(k=1)


def test_k_larger_than_knowledge_base_and_empty_knowledge_base(rag) -> None:
    assert rag.search(text="red", k=3) == []
    rag.add([solid("red"), solid("blue")], progress=False)
    assert len(rag.search(text="red", k=50)) == 2


def test_metadata_and_callable_filters(rag, image_dir: Path) -> None:
    ids = rag.add_directory(image_dir, descriptions=image_dir / "description.json", progress=False)
    hits = rag.search(text="red", k=3, filter={"shade": "blue"})
    assert [h.description for h in hits] == ["A blue square."]
    keep = set(ids[:3])
    assert {h.id for h in rag.search(text="red", k=8, filter=keep.__contains__)} == keep


def test_readding_is_idempotent_and_duplicates_are_reported(rag, image_dir: Path) -> None:
    first = rag.add_directory(image_dir, progress=False)
    calls = rag.embedder.calls
    again = rag.add_directory(image_dir, progress=False)
    assert again.added == () and len(again.duplicates) == 8
    assert list(again) == list(first)
    assert rag.embedder.calls == calls  # nothing re-embedded
    twin = encoded(solid("green", (9, 9)))
    result = rag.add([twin, twin], progress=False)
    assert len(result.added) == 1 and result.duplicates == (("<bytes>", result.added[0]),)
    assert len(rag) == 9


def test_ids_are_content_hashes_and_explicit_ids_are_kept(rag, tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    solid("cyan").save(path)
    a = rag.add([path], progress=False)[0]
    b = rag.add([path.read_bytes()], progress=False).duplicates[0][1]
    assert a == b and len(a) == 32
    rag.add([solid("red")], ids=["my-id"], descriptions=["mine"], metadata=[{"n": 1}], progress=False)
    assert rag.get("my-id").description == "mine" and rag.get("my-id").metadata == {"n": 1}


def test_images_given_in_memory_are_kept_in_the_knowledge_base(rag) -> None:
    result = rag.add([solid("red"), encoded(solid("blue"), "JPEG")], progress=False)
    paths = [Path(rag.get(i).image_path) for i in result]
    assert [p.suffix for p in paths] == [".png", ".jpeg"]
    assert all(p.is_file() and p.parent == rag.path / "images" for p in paths)


def test_remove_and_describe(rag, image_dir: Path) -> None:
    ids = rag.add_directory(image_dir, descriptions=image_dir / "description.json", progress=False)
    calls = rag.embedder.calls
    assert rag.remove(ids[:1]) == 1
    assert ids[0] not in rag and len(rag) == 7
    assert all(h.id != ids[0] for h in rag.search(text="red", k=8))
    rag.describe(ids[1], "new text")
    assert rag.get(ids[1]).description == "new text"
    assert rag.embedder.calls == calls  # description edits never re-embed
    with pytest.raises(NotFoundError):
        rag.describe(ids[0], "gone")
    with pytest.raises(NotFoundError):
        rag.get(ids[0])


def test_save_and_open_give_the_same_hits(tmp_path: Path, embedder: ColorEmbedder, image_dir: Path) -> None:
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=embedder)
    ids = rag.add_directory(image_dir, descriptions=image_dir / "description.json", progress=False)
    rag.remove(ids[:1])
    rag.describe(ids[1], "new text")
    before = rag.search(image=two_tone("red", "green"), k=4)
    rag.save()
    rag.close()
    with MultimodalRAG.open(tmp_path / "kb", embedder=ColorEmbedder()) as reopened:
        assert reopened.search(image=two_tone("red", "green"), k=4) == before
        assert reopened.get(ids[1]).description == "new text" and len(reopened) == 7


def test_committed_changes_survive_without_a_save(tmp_path: Path, embedder: ColorEmbedder) -> None:
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=embedder)
    red, blue = rag.add([solid("red"), solid("blue")], descriptions=["r", "b"], progress=False)
    rag.remove([blue])
    rag.describe(red, "red, edited")
    rag.close()  # no save: the journal holds every change
    reopened = MultimodalRAG.open(tmp_path / "kb", embedder=embedder, read_only=True)
    assert reopened.ids() == [red] and reopened.get(red).description == "red, edited"


def test_context_manager_saves_on_success(tmp_path: Path, embedder: ColorEmbedder) -> None:
    with MultimodalRAG.create(tmp_path / "kb", embedder=embedder) as rag:
        rag.add([solid("red")], progress=False)
    assert len(MultimodalRAG.open(tmp_path / "kb", embedder=embedder, read_only=True)) == 1


def test_context_manager_closes_without_saving_on_an_error(tmp_path: Path, embedder: ColorEmbedder) -> None:
    with pytest.raises(RuntimeError), MultimodalRAG.create(tmp_path / "kb", embedder=embedder) as rag:
        rag.add([solid("red")], progress=False)
        raise RuntimeError("stop")
    reopened = MultimodalRAG.open(tmp_path / "kb", embedder=embedder)  # the lock was released
    # Not saved (still the first snapshot); the journal gives the add back.
    assert reopened.generation == 1 and len(reopened) == 1
    reopened.close()


def test_a_bad_image_in_add_raises_naming_it_and_stores_nothing(rag, tmp_path: Path) -> None:
    rag.add([solid("white")], progress=False)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(encoded(solid("red"), "JPEG")[:40])
    good = tmp_path / "good.png"
    solid("red").save(good)
    with pytest.raises(ImageError, match="broken.jpg"):
        rag.add([good, bad], progress=False)
    assert len(rag) == 1
    with pytest.raises(ImageError, match="missing.png"):
        rag.add([tmp_path / "missing.png"], progress=False)


def test_directory_ingest_skips_bad_images_and_keeps_the_rest(rag, image_dir: Path) -> None:
    (image_dir / "empty.png").write_bytes(b"")
    (image_dir / "notes.jpg").write_text("not an image")
    (image_dir / "cut.jpeg").write_bytes(encoded(solid("red", (64, 64)), "JPEG")[:100])
    result = rag.add_directory(image_dir, batch_size=3, progress=False)
    assert len(result.added) == 8
    assert sorted(Path(s.source).name for s in result.skipped) == ["cut.jpeg", "empty.png", "notes.jpg"]
    assert all(s.reason for s in result.skipped)


def test_bad_arguments_are_refused_before_anything_changes(rag) -> None:
    with pytest.raises(InvalidInputError, match="2 images but 1 descriptions"):
        rag.add([solid("red"), solid("blue")], descriptions=["one"])
    with pytest.raises(InvalidInputError, match="reserved"):
        rag.add([solid("red")], metadata=[{"id": "x"}])
    with pytest.raises(InvalidInputError, match="on_error"):
        rag.add([solid("red")], on_error="ignore")
    assert len(rag) == 0


def test_nan_vectors_from_an_embedder_change_nothing(tmp_path: Path) -> None:
    class Broken(ColorEmbedder):
        def embed_images(self, images):
            out = super().embed_images(images)
            out[:] = np.nan
            return out

    rag = MultimodalRAG(Broken())
    with pytest.raises(InvalidInputError, match="NaN"):
        rag.add([solid("red")], progress=False)
    assert len(rag) == 0 and len(rag.description_store) == 0


def test_read_only_refuses_changes(tmp_path: Path, embedder: ColorEmbedder) -> None:
    MultimodalRAG.create(tmp_path / "kb", embedder=embedder).close()
    rag = MultimodalRAG.open(tmp_path / "kb", embedder=embedder, read_only=True)
    for change in (lambda: rag.add([solid("red")]), rag.save, lambda: rag.remove(["x"])):
        with pytest.raises(ReadOnlyError):
            change()


def test_vector_store_of_another_dimension_is_refused(embedder: ColorEmbedder) -> None:
    from multimodal_rag import FaissFlatStore

    with pytest.raises(DimensionMismatchError, match="48-d.*12-d"):
        MultimodalRAG(embedder, FaissFlatStore(12))


def test_create_refuses_a_vector_store_of_another_dimension_before_making_a_folder(
    tmp_path: Path, embedder: ColorEmbedder
) -> None:
    from multimodal_rag import FaissFlatStore

    with pytest.raises(DimensionMismatchError, match="48-d.*12-d"):
        MultimodalRAG.create(tmp_path / "kb", embedder=embedder, vector_store=FaissFlatStore(12))
    assert not (tmp_path / "kb").exists()


def test_jsonl_description_store_writes_the_cookbook_format(tmp_path: Path, embedder, image_dir) -> None:
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=embedder, description_store="jsonl")
    rag.add_directory(image_dir, descriptions=image_dir / "description.json", progress=False)
    rag.save()
    [saved] = current_snapshot(tmp_path / "kb").glob("descriptions/descriptions.jsonl")
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    red = next(line for line in lines if line["description"] == "A red square.")
    assert red["shade"] == "red" and Path(red["image_path"]).name.startswith("red")


# -- metadata filters -------------------------------------------------------------

SHOP = {
    "red": {"category": "warm", "price": 10, "stock": 5},
    "yellow": {"category": "warm", "price": 20},
    "magenta": {"category": "warm", "price": 150.5},
    "green": {"category": "cool", "price": 30, "stock": 0},
    "blue": {"category": "cool", "price": 99.99},
    "cyan": {"category": "cool", "price": "n/a"},
    "white": {"category": "neutral", "price": 5, "stock": True},
    "black": {},
}


@pytest.fixture(params=["sqlite", "jsonl"])
def shop(request: pytest.FixtureRequest, tmp_path: Path, embedder: ColorEmbedder) -> tuple[MultimodalRAG, dict[str, str]]:
    """A knowledge base of one solid image per colour, with SHOP's metadata; and colour -> id."""
    kb = MultimodalRAG.create(tmp_path / "kb", embedder=embedder, description_store=request.param)
    colors = list(SHOP)
    ids = kb.add([solid(c) for c in colors], metadata=[SHOP[c] for c in colors], progress=False)
    yield kb, dict(zip(colors, ids))
    kb.close()


@pytest.mark.parametrize(
    ("filter", "colors"),
    [
        ({"category": {"$in": ["cool", "neutral"]}}, {"green", "blue", "cyan", "white"}),
        ({"price": {"$lt": 100}}, {"red", "yellow", "green", "blue", "white"}),  # "n/a" and missing fail
        ({"$or": [{"category": "neutral"}, {"price": {"$gte": 100}}]}, {"white", "magenta"}),
        ({"category": "warm", "price": {"$lt": 100}}, {"red", "yellow"}),
        ({"stock": {"$ne": 0}}, set(SHOP) - {"green"}),  # a missing key passes $ne; True is not 0
        ({"category": {"$nin": ["warm", "cool"]}}, {"white", "black"}),
        ({"category": "none"}, set()),
    ],
)
def test_operator_filters_keep_exactly_the_matching_hits_and_still_return_k(shop, filter, colors) -> None:
    rag, ids = shop
    expected = {ids[c] for c in colors}
    query = encoded(solid("red", (50, 50)))
    assert {h.id for h in rag.search(image=query, k=8, filter=filter)} == expected
    # The best k of the matching images, as an unfiltered search ranks them (ties in any order).
    ranked = [h for h in rag.search(image=query, k=8) if h.id in expected]
    for k in (1, 2, 3):
        hits = rag.search(image=query, k=k, filter=filter)
        assert len(hits) == min(k, len(expected)) and {h.id for h in hits} <= expected
        assert [h.score for h in hits] == pytest.approx([h.score for h in ranked[:k]])
        assert all(h.metadata == SHOP[next(c for c in ids if ids[c] == h.id)] for h in hits)


def test_a_filter_asks_the_description_store_once_not_per_candidate(shop, monkeypatch) -> None:
    rag, ids = shop
    store = rag.description_store
    calls = {"get": 0, "matching_ids": 0}

    def counted(name: str) -> Any:
        method = getattr(store, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return method(*args, **kwargs)

        return wrapper

    for name in calls:
        monkeypatch.setattr(store, name, counted(name))
    hits = rag.search(image=solid("red"), k=2, filter={"price": {"$lt": 100}})
    assert {h.id for h in hits} <= {ids[c] for c in ("red", "yellow", "green", "blue", "white")}
    assert calls == {"get": 0, "matching_ids": 1}
    rag.search_by_vector(rag.embed_query(solid("blue")), k=8, filter={"category": "cool"})
    assert calls == {"get": 0, "matching_ids": 2}


def test_a_bad_filter_fails_before_any_store_is_searched(shop, monkeypatch) -> None:
    rag, _ = shop
    searched: list[object] = []
    monkeypatch.setattr(rag.vector_store, "search", lambda *a, **kw: searched.append(a) or [[]])
    monkeypatch.setattr(rag.description_store, "matching_ids", lambda f: searched.append(f) or set())
    with pytest.raises(InvalidInputError, match=r"filter\['price'\]\['\$lt'\]: expected a number or a string, got list"):
        rag.search(image=solid("red"), k=2, filter={"price": {"$lt": [1]}})
    with pytest.raises(InvalidInputError, match=r"filter\['\$or'\]\[1\]: expected a mapping"):
        rag.search_by_vector(rag.embed_query(solid("red")), filter={"$or": [{"a": 1}, 2]})
    with pytest.raises(InvalidInputError, match="filter must be a mapping or a callable, got list"):
        rag.search(image=solid("red"), filter=[("category", "warm")])  # type: ignore[arg-type]
    assert searched == []


def test_a_duck_typed_description_store_without_matching_ids_is_scanned(shop) -> None:
    from multimodal_rag._retrieval import id_filter

    rag, ids = shop

    class Duck:  # only what the default needs: iteration over records
        def __iter__(self) -> Any:
            return iter(rag.description_store)

    keep = id_filter(Duck(), {"category": "cool", "price": {"$gt": 50}})  # type: ignore[arg-type]
    assert keep is not None and [c for c in ids if keep(ids[c])] == ["blue"]
