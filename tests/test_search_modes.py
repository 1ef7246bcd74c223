"""Search modes through the facade: vector, lexical and hybrid, filters in every channel, reranking."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from helpers import ColorEmbedder, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag.answerers.extractive import ExtractiveAnswerer
from multimodal_rag.descriptions.jsonl import JSONLDescriptionStore
from multimodal_rag.errors import InvalidInputError
from multimodal_rag.types import Hit


@pytest.fixture(params=["sqlite", "jsonl"])
def rag(request: pytest.FixtureRequest) -> MultimodalRAG:
    store = "sqlite" if request.param == "sqlite" else JSONLDescriptionStore()
    rag = MultimodalRAG(ColorEmbedder(), description_store=None if store == "sqlite" else store)  # type: ignore[arg-type]
    rag.add(
        [solid("red"), solid("green"), solid("blue"), solid("yellow"), solid("white")],
        ids=["generator", "lamp", "panel", "torch", "fridge"],
        descriptions=[
            "Portable power station XR-2000, 2000 Wh, red housing",
            "A green desk lamp",
            "Folding solar panel 200 W",
            "Yellow head torch",
            "White fridge, 50 litres",
        ],
        metadata=[{"price": 900}, {"price": 20}, {"price": 150}, {"price": 15}, {"price": 300}],
        progress=False,
    )
    return rag


def test_a_text_is_hybrid_by_default_and_an_image_is_a_vector_search(rag: MultimodalRAG) -> None:
    hits = rag.search(text="solar panel", k=5)
    assert hits[0].id == "panel" and set(hits[0].signals) == {"vector", "lexical"}
    assert all(hit.similarity is not None for hit in hits)  # the gate can judge every hybrid hit
    by_image = rag.search(image=solid("red"), k=2)
    assert by_image[0].id == "generator" and set(by_image[0].signals) == {"vector"}
    assert by_image[0].score == by_image[0].similarity


def test_the_words_of_a_description_find_what_the_vector_alone_misses(rag: MultimodalRAG) -> None:
    # The colour embedder knows nothing of "solar panel": the vector channel ranks at random.
    vector = rag.search(text="XR-2000 power station", k=5, mode="vector")
    lexical = rag.search(text="XR-2000 power station", k=5, mode="lexical")
    hybrid = rag.search(text="XR-2000 power station", k=5, mode="hybrid")
    # The words, and the model number by its identifier index as well.
    assert lexical[0].id == "generator" and lexical[0].similarity is None
    assert set(lexical[0].signals) == {"lexical", "identifier"}
    assert lexical[0].matched == ("power", "station", "XR-2000")
    assert len(lexical) == 1  # only the description with those words
    assert hybrid[0].id == "generator" and len(hybrid) == 5
    assert [h.id for h in vector] != [h.id for h in hybrid] or vector[0].id == "generator"


def test_weighted_fusion_is_an_option(rag: MultimodalRAG) -> None:
    hits = rag.search(text="fridge", k=3, mode="hybrid", fusion="weighted")
    assert hits[0].id == "fridge" and hits[0].score > hits[1].score


def test_a_filter_applies_to_both_channels(rag: MultimodalRAG) -> None:
    hits = rag.search(text="XR-2000 power station", k=5, filter={"price": {"$lt": 200}})
    assert "generator" not in {h.id for h in hits} and {h.metadata["price"] for h in hits} <= {20, 150, 15}
    lexical = rag.search(text="torch lamp", k=5, mode="lexical", filter={"price": {"$gte": 16}})
    assert [h.id for h in lexical] == ["lamp"]
    predicate = rag.search(text="torch lamp", k=5, mode="lexical", filter=lambda id_: id_ != "lamp")
    assert [h.id for h in predicate] == ["torch"]


def test_the_similarity_gate_judges_the_cosine_not_the_fused_score(rag: MultimodalRAG) -> None:
    # A fused score is about 1/60; the gate must compare the cosine similarity instead.
    rag.answerer = ExtractiveAnswerer(min_score=0.5)
    answer = rag.ask("red", k=3, mode="hybrid")
    assert answer.sources and answer.sources[0].id == "generator"
    rag.answerer = ExtractiveAnswerer(min_score=0.9999)
    assert not rag.ask("solar panel", k=3, mode="hybrid").sources


def test_modes_are_checked(rag: MultimodalRAG) -> None:
    with pytest.raises(InvalidInputError, match="mode must be one of"):
        rag.search(text="x", mode="semantic")
    with pytest.raises(InvalidInputError, match="needs a text"):
        rag.search(image=solid("red"), mode="lexical")


def test_a_store_without_full_text_searches_by_vector_and_refuses_lexical() -> None:
    class NoTextStore(JSONLDescriptionStore):
        """A store that keeps no full-text index, as a user's own may not."""

        full_text: ClassVar[bool] = False

    rag = MultimodalRAG(ColorEmbedder(), description_store=NoTextStore())
    rag.add([solid("red")], ids=["r"], descriptions=["red"], progress=False)
    [hit] = rag.search(text="red", k=1)
    assert set(hit.signals) == {"vector"}
    with pytest.raises(InvalidInputError, match="no full-text index"):
        rag.search(text="red", mode="hybrid")


class ReverseReranker:
    """Reverses the candidates it is given, and remembers how many that was."""

    kind: ClassVar[str] = "reverse"
    max_candidates = 3

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def rerank(self, hits: Sequence[Hit], *, text: str | None = None, image: Any = None) -> list[Hit]:
        self.seen.append([h.id for h in hits])
        return list(reversed(hits))

    def config(self) -> dict[str, Any]:
        return {}


def test_a_reranker_reorders_its_candidates_before_the_first_k_are_kept(rag: MultimodalRAG) -> None:
    reranker = ReverseReranker()
    plain = rag.search(image=solid("red"), k=3)
    reranked = rag.search(image=solid("red"), k=2, rerank=reranker)
    assert reranker.seen == [[h.id for h in plain]]  # its max_candidates (3), not k (2)
    assert [h.id for h in reranked] == [plain[2].id, plain[1].id]
    answer = rag.ask("what is it?", image=solid("red"), k=2, rerank=ReverseReranker())
    assert [s.id for s in answer.sources][:1] == [plain[2].id]
