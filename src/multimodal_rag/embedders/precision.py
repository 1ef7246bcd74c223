"""Precisions an embedder may run in, the quality gate a reduced one must pass, and fallbacks.

A reduced precision (bf16, fp16, int8) is used only when, on inputs it was not calibrated
on, its embeddings stay close to the exact fp32 model's: every cosine at least
``min_cosine`` and their mean at least ``mean_cosine``. One that fails falls back to the
next precision in `fallback_chain`; fp32 is always the last resort.
"""

from __future__ import annotations

import math
from typing import Any, get_args

import numpy as np
from attrs import frozen

from multimodal_rag.errors import InvalidInputError
from multimodal_rag.types import Engine, Precision

__all__ = [
    "ENGINES",
    "PRECISIONS",
    "GateResult",
    "QualityGate",
    "auto_candidates",
    "check_engine_and_precision",
    "fallback_chain",
]

# The run-time checks accept exactly what type checkers do.
ENGINES: tuple[Engine, ...] = get_args(Engine)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)


@frozen(kw_only=True)
class GateResult:
    """How close a reduced precision came to fp32 on held-out inputs."""

    min_cosine: float
    mean_cosine: float
    count: int
    passed: bool

    @property
    def finite(self) -> bool:
        """False when the candidate's outputs held a NaN or an infinity: no measurement."""
        return math.isfinite(self.min_cosine) and math.isfinite(self.mean_cosine)

    def to_dict(self) -> dict[str, Any]:
        # A NaN is written as null: JSON has no NaN, and a manifest must stay readable.
        return {
            "min_cosine": round(self.min_cosine, 6) if self.finite else None,
            "mean_cosine": round(self.mean_cosine, 6) if self.finite else None,
            "count": self.count,
            "passed": self.passed,
        }


@frozen(kw_only=True)
class QualityGate:
    """The bounds a reduced precision must keep against fp32 (cosine of the embeddings).

    The defaults keep search results practically unchanged: at cosine 0.99 the nearest
    neighbours of a query rarely reorder, and a mean of 0.998 rules out a precision that
    is merely passable on most inputs.
    """

    min_cosine: float = 0.99
    mean_cosine: float = 0.998

    def check(self, reference: np.ndarray, candidate: np.ndarray) -> GateResult:
        """Compare embeddings row by row (they need not be normalised)."""
        reference = np.asarray(reference, dtype=np.float64)
        candidate = np.asarray(candidate, dtype=np.float64)
        norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
        cosines = np.sum(reference * candidate, axis=1) / np.maximum(norms, 1e-12)
        return self.judge(float(cosines.min()), float(cosines.mean()), len(cosines))

    def judge(self, min_cosine: float, mean_cosine: float, count: int) -> GateResult:
        """A result measured before (and cached) held against this gate's bounds."""
        passed = min_cosine >= self.min_cosine and mean_cosine >= self.mean_cosine
        return GateResult(
            min_cosine=min_cosine, mean_cosine=mean_cosine, count=count, passed=passed
        )


def check_engine_and_precision(engine: str, precision: str, *, on_gpu: bool | None) -> None:
    """Refuse a combination that cannot run, before any model is loaded.

    ``on_gpu=None`` checks the names only, before the device is known.

    Raises:
        InvalidInputError: An unknown engine or precision, int8 on torch, or fp16 on a
            CPU (no CPU runs fp16 matrix products faster than fp32).
    """
    if engine not in ENGINES:
        raise InvalidInputError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if precision not in PRECISIONS:
        raise InvalidInputError(
            f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}"
        )
    if precision == "int8" and engine != "openvino":
        raise InvalidInputError(
            "precision 'int8' needs engine='openvino' (calibrated quantization); "
            "pip install 'multimodal-rag[openvino]'"
        )
    if precision == "fp16" and on_gpu is False:
        raise InvalidInputError(
            "precision 'fp16' needs a CUDA device (or an OpenVINO GPU); use 'bf16', 'int8' "
            "or 'fp32' on a CPU"
        )


def fallback_chain(precision: str) -> tuple[str, ...]:
    """``precision`` then what to try when it fails the gate, ending with fp32."""
    chains = {
        "fp32": ("fp32",),
        "bf16": ("bf16", "fp32"),
        "fp16": ("fp16", "fp32"),
        "int8": ("int8", "bf16", "fp32"),
    }
    return chains[precision]


def auto_candidates(engine: str, *, on_gpu: bool) -> tuple[str, ...]:
    """What ``precision="auto"`` times on this engine and device; fp32 first, as the baseline."""
    reduced = ("fp16", "bf16") if on_gpu else ("bf16",)
    if engine == "openvino":
        reduced = (*reduced, "int8")
    return ("fp32", *reduced)
