"""Fusing channels: reciprocal-rank and weighted-score fusion against hand-computed figures."""

from __future__ import annotations

import pytest

from multimodal_rag._fusion import RRF_K, fuse
from multimodal_rag.errors import InvalidInputError


def test_reciprocal_rank_fusion_adds_one_over_k_plus_rank_per_channel() -> None:
    vector = [("a", 0.9), ("b", 0.8), ("c", 0.7)]
    lexical = [("c", 12.0), ("d", 8.0), ("a", 1.0)]
    fused = fuse({"vector": vector, "lexical": lexical})
    scores = {id_: score for id_, score, _ in fused}
    # a: 1/61 + 1/63; c: 1/63 + 1/61 (the same: a tie, kept in the order first listed);
    # b: 1/62; d: 1/62 (a tie: b was listed first, by the vector channel).
    assert scores["a"] == pytest.approx(1 / (RRF_K + 1) + 1 / (RRF_K + 3))
    assert scores["c"] == pytest.approx(scores["a"])
    assert scores["b"] == pytest.approx(1 / (RRF_K + 2)) == pytest.approx(scores["d"])
    assert [id_ for id_, _, _ in fused] == ["a", "c", "b", "d"]
    signals = {id_: s for id_, _, s in fused}
    assert signals["a"]["vector"].rank == 1 and signals["a"]["lexical"].rank == 3
    assert signals["d"].keys() == {"lexical"} and signals["d"]["lexical"].score == 8.0


def test_an_id_both_channels_rank_well_beats_one_only_a_single_channel_ranks_first() -> None:
    fused = fuse({"vector": [("solo", 0.99), ("both", 0.98)], "lexical": [("other", 5.0), ("both", 4.0)]})
    assert fused[0][0] == "both"


def test_weighted_fusion_scales_each_channel_to_zero_one_and_weights_them() -> None:
    vector = [("a", 0.9), ("b", 0.7), ("c", 0.5)]  # scaled: a 1.0, b 0.5, c 0.0
    lexical = [("c", 10.0), ("a", 2.0)]  # scaled: c 1.0, a 0.0
    fused = fuse({"vector": vector, "lexical": lexical}, method="weighted", weights={"vector": 0.25, "lexical": 0.75})
    scores = {id_: score for id_, score, _ in fused}
    assert scores == pytest.approx({"a": 0.25, "b": 0.125, "c": 0.75})
    assert [id_ for id_, _, _ in fused] == ["c", "a", "b"]


def test_one_channel_keeps_its_order_and_duplicates_count_once() -> None:
    fused = fuse({"lexical": [("x", 3.0), ("y", 2.0), ("x", 1.0)]})
    assert [id_ for id_, _, _ in fused] == ["x", "y"]
    assert fused[0][2]["lexical"].rank == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"method": "borda"}, "fusion must be one of"), ({"weights": {"vector": -1.0}}, "non-negative"), ({"weights": {"image": 1.0}}, "non-negative")],
)
def test_bad_fusion_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        fuse({"vector": [("a", 1.0)], "lexical": []}, **kwargs)
