"""Training an adapter on the catalogue's own pairs: symmetric InfoNCE, a learned temperature.

The embedder stays frozen: training reads vectors already computed (the knowledge base keeps
the embedder's raw vectors), so a fit takes seconds, not an ingest. Each batch of pairs
``(image, text)`` is a classification in both directions, every image against every text of
the batch (CLIP's own objective); optional image-image pairs (an edited photo and its
original) train the image map the same way, so image queries keep finding their originals.
A share of the pairs is held out; training stops when their loss has not improved for a
while, and the best weights are kept. The same inputs and seed give the same adapter.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from attrs import frozen

from multimodal_rag._validation import check_int
from multimodal_rag.adapter.projection import KINDS, SIDES, Adapter
from multimodal_rag.errors import InvalidInputError
from multimodal_rag.types import AdapterKind

__all__ = ["Fit", "fit_adapter_weights", "split_pairs"]

#: CLIP's starting temperature (logit scale 1 / 0.07) and its cap (100).
_INITIAL_SCALE = math.log(1 / 0.07)
_MAX_SCALE = math.log(100.0)


@frozen(kw_only=True)
class Fit:
    """What a fit made.

    Attributes:
        adapter: The best weights (lowest held-out loss).
        epochs: Epochs run; ``best_epoch`` is the one kept.
        train_loss, holdout_loss: The losses at the best epoch.
        temperature: The learned temperature (1 / logit scale).
        seconds: Training time.
    """

    adapter: Adapter
    epochs: int
    best_epoch: int
    train_loss: float
    holdout_loss: float
    temperature: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.adapter.kind,
            "rank": self.adapter.rank,
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "train_loss": round(self.train_loss, 6),
            "holdout_loss": round(self.holdout_loss, 6),
            "temperature": round(self.temperature, 6),
            "seconds": round(self.seconds, 3),
        }


def split_pairs(count: int, *, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and held-out pairs: a seeded shuffle, at least one of each.

    Raises:
        InvalidInputError: Fewer than 4 pairs, or ``holdout`` outside (0, 0.9].
    """
    if not (isinstance(holdout, (int, float)) and 0 < holdout <= 0.9):
        raise InvalidInputError(f"holdout must be a share of the pairs in (0, 0.9], got {holdout!r}")
    if count < 4:
        raise InvalidInputError(f"an adapter needs at least 4 image-description pairs, got {count}")
    order = np.random.default_rng(seed).permutation(count)
    held = min(count - 2, max(2, int(round(count * holdout))))
    return np.sort(order[held:]), np.sort(order[:held])


def fit_adapter_weights(
    images: np.ndarray,
    texts: np.ndarray,
    *,
    train: np.ndarray,
    holdout: np.ndarray,
    kind: AdapterKind = "low-rank",
    rank: int = 32,
    image_pairs: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
    max_epochs: int = 200,
    patience: int = 10,
    batch_size: int = 256,
    learning_rate: float = 5e-3,
) -> Fit:
    """Fit an adapter to the pairs ``(images[i], texts[i])`` for ``i`` in ``train``.

    Args:
        images, texts: Unit vectors of the same shape ``(n, dim)``, row ``i`` a pair.
        train, holdout: Row indices to train on and to stop on (`split_pairs`).
        kind: ``"low-rank"`` (a residual of ``rank``) or ``"linear"``.
        image_pairs: Optional ``(edited, original)`` image vectors, also trained on.
        seed: Fixes the initial weights and the order of the batches.
        batch_size: Pairs per step, each against the others of its batch. 256 gives each
            pair enough negatives, and costs a quarter of what 1024 does per epoch (the
            logits grow with its square) while converging in fewer epochs.
        max_epochs, patience: Stop after ``max_epochs``, or after ``patience`` epochs
            without a better held-out loss.

    Raises:
        InvalidInputError: Mismatched shapes, an unknown kind, or bad numbers.
    """
    import torch

    images, texts = _pairs(images, texts, "images", "texts")
    if kind not in KINDS:
        raise InvalidInputError(f"adapter kind must be one of {', '.join(KINDS)}; got {kind!r}")
    dim = images.shape[1]
    rank = check_int("rank", rank)
    if kind == "low-rank" and rank > dim:
        raise InvalidInputError(f"rank must be at most the dimension {dim}, got {rank}")
    max_epochs, patience, batch_size = (
        check_int("max_epochs", max_epochs),
        check_int("patience", patience),
        check_int("batch_size", batch_size, minimum=2),
    )
    if image_pairs is not None:
        image_pairs = _pairs(image_pairs[0], image_pairs[1], "edited images", "original images")

    begin = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    params = _initial_params(kind, dim, rank, generator)
    scale = torch.nn.Parameter(torch.tensor(_INITIAL_SCALE))
    optimizer = torch.optim.AdamW([*params.values(), scale], lr=learning_rate, weight_decay=1e-4)

    image_t, text_t = torch.from_numpy(images), torch.from_numpy(texts)
    train_t = torch.from_numpy(np.asarray(train, dtype=np.int64))
    held_t = torch.from_numpy(np.asarray(holdout, dtype=np.int64))
    extra = None if image_pairs is None else (torch.from_numpy(image_pairs[0]), torch.from_numpy(image_pairs[1]))

    def mapped(vectors: Any, side: str) -> Any:
        if kind == "linear":
            out = vectors @ params[f"{side}.weight"]
        else:
            out = vectors + (vectors @ params[f"{side}.down"]) @ params[f"{side}.up"]
        return torch.nn.functional.normalize(out, dim=1)

    def contrastive(left: Any, right: Any) -> Any:
        logits = scale.clamp(max=_MAX_SCALE).exp() * left @ right.T
        target = torch.arange(len(left))
        return (
            torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)
        ) / 2

    def held_out_loss() -> float:
        with torch.no_grad():
            losses = [
                float(contrastive(mapped(image_t[chunk], "image"), mapped(text_t[chunk], "text")))
                for chunk in torch.split(held_t, batch_size)
                if len(chunk) > 1
            ]
        return float(np.mean(losses))

    initial = held_out_loss()
    best = (initial, 0, math.nan, _snapshot(params), float(scale.detach()))
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        order = train_t[torch.randperm(len(train_t), generator=generator)]
        losses = []
        for chunk in torch.split(order, batch_size):
            if len(chunk) < 2:
                continue
            loss = contrastive(mapped(image_t[chunk], "image"), mapped(text_t[chunk], "text"))
            if extra is not None:
                pick = torch.randint(len(extra[0]), (min(len(chunk), len(extra[0])),), generator=generator)
                loss = loss + contrastive(mapped(extra[0][pick], "image"), mapped(extra[1][pick], "image"))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        current = held_out_loss()
        # Better by a thousandth of where it started: a loss creeping towards zero is done.
        if current < best[0] - 1e-3 * initial:
            best = (current, epoch, float(np.mean(losses)), _snapshot(params), float(scale.detach()))
        elif epoch - best[1] >= patience:
            break
    holdout_loss, best_epoch, train_loss, arrays, best_scale = best
    return Fit(
        adapter=Adapter(kind=kind, dim=dim, arrays=arrays),
        epochs=epoch,
        best_epoch=best_epoch,
        train_loss=train_loss,
        holdout_loss=holdout_loss,
        temperature=math.exp(-min(best_scale, _MAX_SCALE)),
        seconds=time.perf_counter() - begin,
    )


def _pairs(left: Any, right: Any, left_name: str, right_name: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.ascontiguousarray(left, dtype=np.float32)
    b = np.ascontiguousarray(right, dtype=np.float32)
    if a.ndim != 2 or a.shape != b.shape or len(a) == 0:
        raise InvalidInputError(f"{left_name} and {right_name} must be 2-D arrays of one shape, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InvalidInputError(f"{left_name} and {right_name} must be finite")
    return a, b


def _initial_params(kind: str, dim: int, rank: int, generator: Any) -> dict[str, Any]:
    import torch

    params = {}
    for side in SIDES:
        if kind == "linear":
            params[f"{side}.weight"] = torch.nn.Parameter(torch.eye(dim))
        else:
            # `up` starts at zero, so the adapter starts as the identity; `down` random, so
            # the gradient reaching `up` is not zero.
            down = torch.randn(dim, rank, generator=generator) / math.sqrt(dim)
            params[f"{side}.down"] = torch.nn.Parameter(down)
            params[f"{side}.up"] = torch.nn.Parameter(torch.zeros(rank, dim))
    return params


def _snapshot(params: dict[str, Any]) -> dict[str, np.ndarray]:
    return {name: value.detach().numpy().copy() for name, value in params.items()}
