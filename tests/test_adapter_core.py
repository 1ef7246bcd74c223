"""The adapter on its own: identity start, a synthetic task with a known answer, determinism,
files that are checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from multimodal_rag.adapter.projection import Adapter
from multimodal_rag.adapter.training import fit_adapter_weights, split_pairs
from multimodal_rag.errors import CorruptFileError, InvalidInputError


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def distorted(n: int = 1000, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Image and text vectors related by a hidden linear map plus noise: retrieval starts near chance."""
    rng = np.random.default_rng(seed)
    images = unit(rng.standard_normal((n, dim)))
    texts = unit(images @ rng.standard_normal((dim, dim)) + 0.3 * rng.standard_normal((n, dim)))
    return images, texts


def recall_at_1(texts: np.ndarray, images: np.ndarray, rows: np.ndarray) -> float:
    return float(np.mean(np.argmax(texts[rows] @ images.T, axis=1) == rows))


@pytest.mark.parametrize("kind", ["low-rank", "linear"])
def test_an_identity_adapter_changes_nothing(kind: str) -> None:
    images, _ = distorted(50)
    adapter = Adapter.identity(images.shape[1], kind=kind, rank=4)
    for side in ("image", "text"):
        assert np.allclose(adapter.apply(images, side), images, atol=1e-6)


def test_a_linear_adapter_undoes_a_hidden_distortion() -> None:
    images, texts = distorted()
    train, held = split_pairs(len(images), holdout=0.2, seed=0)
    assert recall_at_1(texts, images, held) < 0.05
    fit = fit_adapter_weights(images, texts, train=train, holdout=held, kind="linear")
    adapter = fit.adapter
    assert recall_at_1(adapter.apply(texts, "text"), adapter.apply(images, "image"), held) >= 0.9
    assert fit.holdout_loss < 0.5 and 0 < fit.best_epoch <= fit.epochs


def test_the_same_inputs_and_seed_give_the_same_adapter() -> None:
    images, texts = distorted(300)
    train, held = split_pairs(len(images), holdout=0.2, seed=3)
    first = fit_adapter_weights(images, texts, train=train, holdout=held, rank=8, seed=1, max_epochs=5)
    second = fit_adapter_weights(images, texts, train=train, holdout=held, rank=8, seed=1, max_epochs=5)
    other = fit_adapter_weights(images, texts, train=train, holdout=held, rank=8, seed=2, max_epochs=5)
    assert first.adapter.sha256 == second.adapter.sha256 != other.adapter.sha256


def test_save_and_load_round_trip_and_a_changed_file_is_refused(tmp_path: Path) -> None:
    images, texts = distorted(200)
    train, held = split_pairs(len(images), holdout=0.25, seed=0)
    adapter = fit_adapter_weights(images, texts, train=train, holdout=held, rank=4, max_epochs=3).adapter
    path = tmp_path / "adapter.npz"
    digest = adapter.save(path)
    loaded = Adapter.load(path, sha256=digest)
    assert loaded.sha256 == digest and np.array_equal(loaded.apply(texts, "text"), adapter.apply(texts, "text"))
    other = Adapter.identity(adapter.dim, rank=4)
    other.save(path)
    with pytest.raises(CorruptFileError, match="changed since it was saved"):
        Adapter.load(path, sha256=digest)
    path.write_bytes(b"not a zip")
    with pytest.raises(CorruptFileError, match="not a readable adapter"):
        Adapter.load(path)
    path.unlink()
    with pytest.raises(CorruptFileError, match="missing"):
        Adapter.load(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "cubic"}, "kind"),
        ({"rank": 99}, "rank"),
        ({"texts": np.zeros((10, 5), dtype=np.float32)}, "one shape"),
    ],
)
def test_bad_fits_are_refused(change: dict, message: str) -> None:
    images, texts = distorted(40, dim=16)
    train, held = split_pairs(40, holdout=0.2, seed=0)
    args = {"kind": "low-rank", "rank": 4, "texts": texts, **change}
    with pytest.raises(InvalidInputError, match=message):
        fit_adapter_weights(images, args.pop("texts"), train=train, holdout=held, **args)


def test_too_few_pairs_or_a_bad_share_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="at least 4"):
        split_pairs(3, holdout=0.2, seed=0)
    with pytest.raises(InvalidInputError, match="holdout"):
        split_pairs(100, holdout=1.0, seed=0)
