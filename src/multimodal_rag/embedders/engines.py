"""Building an embedder's towers on an engine in a precision that is measured, not guessed.

An embedder hands `EngineBuilder` its towers (the parts of the model that turn a batch
of preprocessed images, or of tokens, into features), a way to load their torch modules, and
what identifies its weights. The builder then, for the requested precision:

- builds each tower on the engine (torch, or OpenVINO: converted, int8 quantized on a
  calibration sample; both cached on disk);
- holds every reduced precision to the `QualityGate`
  against the torch fp32 tower on held-out inputs (not the calibration ones). A precision
  the caller asked for that fails it (or cannot run here) is a `PrecisionError`, unless the
  caller allowed a fallback: then the tower falls back along `fallback_chain`, with a
  warning and a note in the report;
- for ``"auto"``, times every candidate that passes on a few batches, takes the fastest,
  and caches the decision for this CPU model and engine version, so the next load on
  this machine goes straight to it.

The torch modules are loaded only when something needs them: converting a tower, computing
the fp32 references of a gate not yet measured, or running on the torch engine. On OpenVINO,
once a machine has converted, quantized and measured a model, later loads never import torch
nor read its weights: they compile the cached models (a process holds a fraction of the memory,
and starts in a fraction of the time). Nothing here is CLIP-specific: any embedder on the
shared pipeline can build its towers the same way.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from attrs import define, field, frozen

from multimodal_rag._memory import release_memory
from multimodal_rag.embedders import openvino_engine as ov_engine
from multimodal_rag.embedders.engine_cache import EngineCache, cpu_model
from multimodal_rag.embedders.precision import (
    GateResult,
    QualityGate,
    auto_candidates,
    fallback_chain,
)
from multimodal_rag.embedders.torch_engine import TorchRunner, import_torch
from multimodal_rag.errors import PrecisionError

__all__ = ["BuiltEngine", "EngineBuilder", "EngineReport", "Runner", "Tower", "split_sample"]

logger = logging.getLogger(__name__)

#: Held-out inputs kept from a sample for the quality gate (at most).
HELD_OUT = 32
#: Timed calls per candidate when ``precision="auto"`` measures (after one warm-up call).
TIMED_CALLS = 3


class Runner(Protocol):
    """One tower on one engine: a numpy batch in, float32 features out."""

    engine: str
    precision: str

    def __call__(self, inputs: np.ndarray) -> np.ndarray: ...

    def settle(self) -> None:
        """Called once this runner is chosen (torch stores its weights in the precision)."""


@define(kw_only=True)
class Tower:
    """A part of the model that embeds one kind of input.

    Attributes:
        name: ``"image"``, ``"text"``...; part of cache keys, and the key of its module in
            what the builder's ``load`` returns.
        example: A small representative batch: the shape conversion and timing use.
        probe: Fixed inputs that stand in for a sample when none is given (synthetic
            images, built-in sentences).
    """

    name: str
    example: np.ndarray
    probe: np.ndarray


@frozen(kw_only=True)
class EngineReport:
    """What was built: JSON-ready, for ``repr``, logs and the manifest.

    Attributes:
        towers: The precision each tower runs in (its weights on torch, its compiled
            model's precision on OpenVINO).
        decided: Where each tower's precision came from: ``"asked for"``, ``"fell back
            from <precision>"`` (``fallbacks`` says why), ``"auto, measured now"`` or
            ``"auto, cached decision"`` (measured by an earlier load on this machine).
        fallbacks: Each precision that was skipped, and why (a failed gate names the
            cosines it measured; ``"auto"`` names the speeds of the slower candidates).
        gates: ``"<tower>:<precision>"`` -> the gate's measurement, with its ``source``:
            ``"measured now"`` or ``"cached"``.
        measured: ``"<tower>:<precision>"`` -> items per second, when ``"auto"`` timed them.
    """

    engine: str
    requested: str
    device: str
    towers: Mapping[str, str]
    decided: Mapping[str, str] = field(factory=dict)
    fallbacks: tuple[str, ...] = ()
    gates: Mapping[str, Mapping[str, Any]] = field(factory=dict)
    measured: Mapping[str, float] = field(factory=dict)

    @property
    def precision(self) -> str:
        """The towers' precision (``"int8, text bf16"`` when one tower fell back further)."""
        first, *others = self.towers.items()
        if all(precision == first[1] for _, precision in others):
            return first[1]
        return ", ".join(
            [
                first[1],
                *(f"{name} {precision}" for name, precision in others if precision != first[1]),
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "engine": self.engine,
            "precision": self.precision,
            "requested": self.requested,
            "device": self.device,
            "towers": dict(self.towers),
            "decided": dict(self.decided),
        }
        if self.fallbacks:
            report["fallbacks"] = list(self.fallbacks)
        if self.gates:
            report["quality_gate"] = {k: dict(v) for k, v in self.gates.items()}
        if self.measured:
            report["items_per_s"] = {k: round(v, 1) for k, v in self.measured.items()}
        return report


@frozen(kw_only=True)
class BuiltEngine:
    runners: Mapping[str, Runner]
    report: EngineReport


class _Unavailable(Exception):
    """This precision cannot run here (the device refuses the hint, say)."""


#: Where a gate result came from (``"failed"``: no number, neither cached nor a verdict).
_MEASURED_NOW, _CACHED, _FAILED = "measured now", "cached", "failed"


def split_sample(sample: np.ndarray, *, calibration_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibration inputs and held-out inputs from one sample; the two never overlap."""
    count = len(sample)
    held = count // 2 if count <= 2 * HELD_OUT else min(HELD_OUT, count // 5)
    return sample[: count - held][:calibration_size], sample[count - held :]


class EngineBuilder:
    """Builds towers on ``engine`` in ``precision`` (see the module's docstring).

    Args:
        towers: The towers, all parts of one model.
        load: Returns each tower's ``torch.nn.Module`` by name, all from one model in fp32
            on ``device``; called at most once, and only when a module is needed.
        engine: ``"torch"`` or ``"openvino"``.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"int8"``.
        device: The torch device of the towers.
        openvino_device: ``"CPU"`` or ``"GPU"`` for the OpenVINO engine.
        identity: What identifies the weights and preprocessing (weights checksum,
            preprocessing version...): part of every cache key.
        cache: Where converted models, gate results and decisions are kept.
        gate: The bounds a reduced precision must keep.
        calibration_size: Most inputs int8 calibration uses.
        allow_fallback: Let a tower whose asked-for precision fails the gate (or cannot run
            here) fall back along `fallback_chain`; without it, that is a `PrecisionError`.
            ``"auto"`` always chooses among the precisions that pass.
    """

    def __init__(
        self,
        towers: Sequence[Tower],
        *,
        load: Callable[[], Mapping[str, Any]],
        engine: str,
        precision: str,
        device: Any,
        openvino_device: str = "CPU",
        identity: Mapping[str, Any],
        cache: EngineCache,
        gate: QualityGate,
        calibration_size: int = 300,
        allow_fallback: bool = False,
    ) -> None:
        self.towers = {tower.name: tower for tower in towers}
        self._load: Callable[[], Mapping[str, Any]] | None = load
        self._modules: dict[str, Any] | None = None
        self.engine = engine
        self.precision = precision
        self.device = device
        self.openvino_device = openvino_device
        self.identity = dict(identity)
        self.cache = cache
        self.gate = gate
        self.calibration_size = calibration_size
        self.allow_fallback = allow_fallback
        # Part of every cache key: a new engine release is measured and converted afresh.
        self._versions = (
            ov_engine.engine_versions()
            if engine == "openvino"
            else {"torch": str(import_torch().__version__)}
        )
        self._references: dict[str, np.ndarray] = {}
        self._held_out: dict[str, np.ndarray] = {}
        self._calibration: dict[str, np.ndarray] = {}

    # -- what a build needs ------------------------------------------------------------

    def to_calibrate(self) -> set[str]:
        """The towers whose build would quantize (no int8 model cached for them yet).

        An embedder defers the build until it has real inputs for these, when it can.
        """
        if self.engine != "openvino" or self.precision not in ("int8", "auto"):
            return set()
        missing = {name for name in self.towers if not self._ir_cached(name, "int8")}
        if self.precision == "auto":
            decision = self._decision()
            chosen = decision.get("towers") if decision is not None else None
            if isinstance(chosen, dict):
                return {name for name in missing if chosen.get(name) == "int8"}
        return missing

    # -- building ----------------------------------------------------------------------

    def build(self, samples: Mapping[str, np.ndarray | None] | None = None) -> BuiltEngine:
        """Build every tower; ``samples`` are real inputs per tower (calibration and gate).

        Each tower gets its own precision: one whose int8 fails the gate (text, say) falls
        back alone, without costing the other its speed.
        """
        for name, tower in self.towers.items():
            sample = (samples or {}).get(name)
            if sample is None or len(sample) < 2:
                sample = tower.probe
            calibration, held_out = split_sample(sample, calibration_size=self.calibration_size)
            self._calibration[name], self._held_out[name] = calibration, held_out
        self._fallbacks: list[str] = []
        self._gates: dict[str, dict[str, Any]] = {}
        self._measured: dict[str, float] = {}
        self._decided: dict[str, str] = {}
        self._compiled_fresh: set[tuple[str, str]] = set()
        # Set when a measurement gave no number: nothing is decided on it for later loads.
        self._unsettled = False
        if self.engine == "openvino":
            self._release_torch()
        runners: dict[str, Runner] = {}
        if self.precision != "auto":
            for name in self.towers:
                runners[name] = self._chain(name, self.precision)
        else:
            decision = self._decision() or {}
            chosen = decision.get("towers")
            if isinstance(chosen, dict) and set(chosen) == set(self.towers):
                self._reuse(decision)
                for name in self.towers:
                    runners[name] = self._chain(name, str(chosen[name]))
                    if runners[name].precision == chosen[name]:
                        self._decided[name] = "auto, cached decision"
            else:
                for name in self.towers:
                    runners[name] = self._auto(name)
                if not self._unsettled:  # a failed measurement is measured again next time
                    self.cache.write_json(
                        "decisions",
                        self._decision_key(),
                        {
                            "towers": {name: r.precision for name, r in runners.items()},
                            "items_per_s": self._measured,
                            "quality_gate": self._gates,
                            "fallbacks": self._fallbacks,
                        },
                    )
        for name, runner in runners.items():
            runner.settle()
            # The first call on a model sets it up once (OpenVINO prepares its kernels and
            # weights: about 0.1 s for ViT-B/32): paid here, at load, not by the first query.
            runner(self.towers[name].example[:1])
        report = EngineReport(
            engine=self.engine,
            requested=self.precision,
            device=self.openvino_device if self.engine == "openvino" else str(self.device),
            towers={name: runner.precision for name, runner in runners.items()},
            decided=self._decided,
            fallbacks=tuple(self._fallbacks),
            gates=self._gates,
            measured=self._measured,
        )
        # The converted fp32 models and the torch modules are no longer needed here.
        self.towers.clear()
        self._modules = None
        self._load = None
        return BuiltEngine(runners=runners, report=report)

    def _release_torch(self) -> None:
        """Do now whatever needs the torch modules (convert what is not cached, compute the
        fp32 references of gates not yet measured), then drop them: OpenVINO compiles with
        no torch copy of the weights. When everything is cached, they are never loaded."""
        decision = self._decision() if self.precision == "auto" else None
        chosen = (decision or {}).get("towers")
        chosen = chosen if isinstance(chosen, dict) else {}
        for name in self.towers:
            self._ir_path(name, "fp32")  # converted here if not cached
            # The precision whose fallback chain the build walks (auto's cached choice).
            walked = self.precision if self.precision != "auto" else chosen.get(name)
            if walked is not None:
                needs_reference = self._chain_unjudged(name, fallback_chain(str(walked)))
            else:  # auto times every candidate that passes: each needs its gate
                candidates = auto_candidates(self.engine, on_gpu=self._on_gpu())
                needs_reference = any(
                    self._cached_gate(name, p) is None for p in candidates if p != "fp32"
                )
            if needs_reference:
                self._reference(name)
        self._modules = None
        self._load = None
        release_memory()

    def _chain_unjudged(self, name: str, chain: Sequence[str]) -> bool:
        """Whether walking ``chain`` meets a precision whose gate was never measured here,
        before one that passed (fp32 always does, unmeasured)."""
        for precision in chain:
            if precision == "fp32":
                return False
            if self._known_unavailable(name, precision):
                continue  # it does not run here: no gate to measure
            cached = self._cached_gate(name, precision)
            if cached is None:
                return True
            if cached.passed:
                return False
        return False

    def _module(self, name: str) -> Any:
        """The tower's torch module, loading the model the first time one is needed."""
        if self._modules is None:
            if self._load is None:  # pragma: no cover - a bug, not a user's mistake
                raise AssertionError("the torch modules were needed after they were let go")
            self._modules = dict(self._load())
        return self._modules[name]

    def _chain(self, name: str, precision: str) -> Runner:
        """The tower in ``precision``, or in the first of its fallbacks that passes the gate.

        A precision the caller asked for falls back only when allowed; one that ``auto``
        chose (a cached decision) always may, since auto promises only a precision that
        passes.
        """
        chain = fallback_chain(precision)
        may_fall_back = self.allow_fallback or self.precision == "auto"
        for position, candidate in enumerate(chain):
            runner = self._gated(
                name,
                candidate,
                then=chain[position + 1 : position + 2],
                refuse=not may_fall_back and position == 0,
            )
            if runner is not None:
                self._decided[name] = (
                    "asked for" if candidate == precision else f"fell back from {precision}"
                )
                return runner
        raise AssertionError("fp32 ends every fallback chain")  # pragma: no cover

    def _auto(self, name: str) -> Runner:
        """The fastest of the candidates that pass the gate, timed on the tower's example."""
        timed: dict[str, float] = {}
        # Each runner holds a compiled model. Only the fastest so far is kept, and on OpenVINO
        # none: the winner is compiled again at the end (imported from the blob cache), so
        # that no compiled tower is held while the next candidate is made (int8's
        # quantization needs the memory most).
        keep = self.engine != "openvino"
        best, fastest = "", None
        for candidate in auto_candidates(self.engine, on_gpu=self._on_gpu()):
            runner = self._gated(name, candidate, then=())
            if runner is None:
                continue
            speed = self._items_per_second(runner, self.towers[name].example)
            if not (math.isfinite(speed) and speed > 0):
                self._unsettled = True
                self._fallbacks.append(
                    f"{name} tower: timing {candidate} gave no number ({speed}): not a "
                    "candidate this time, timed again at the next load"
                )
                continue
            self._measured[f"{name}:{candidate}"] = timed[candidate] = speed
            if not best or speed > timed[best]:
                best, fastest = candidate, (runner if keep else None)
            del runner
            release_memory()
        if not best:  # not even fp32 ran here: its reason is among the fallbacks
            raise PrecisionError(
                f"precision='auto' found nothing that runs the {name} tower here: "
                + "; ".join(self._fallbacks),
                precision="fp32",
                tower=name,
            )
        logger.info(
            "precision='auto' timed the %s tower at %s; chose %s",
            name,
            ", ".join(f"{k} {v:.1f}/s" for k, v in timed.items()),
            best,
        )
        for candidate, speed in timed.items():
            if candidate != best:
                self._fallbacks.append(
                    f"{name} tower: {candidate} passed the quality gate but ran at "
                    f"{speed:.1f}/s, {best} at {timed[best]:.1f}/s: not chosen"
                )
        self._decided[name] = "auto, measured now"
        if fastest is None:
            fastest = self._runner(name, best, fresh=(name, best) in self._compiled_fresh)
        return fastest

    def _reuse(self, decision: Mapping[str, Any]) -> None:
        """Report what an earlier load measured for the cached ``decision``."""
        self._measured.update({k: float(v) for k, v in decision.get("items_per_s", {}).items()})
        for key, gate in (decision.get("quality_gate") or {}).items():
            if isinstance(gate, dict):
                self._gates[str(key)] = {**gate, "source": _CACHED}
        self._fallbacks.extend(str(note) for note in decision.get("fallbacks") or ())

    def _gated(
        self, name: str, precision: str, *, then: Sequence[str], refuse: bool = False
    ) -> Runner | None:
        """The tower in ``precision`` if it runs here and passes the gate; else None, noted.

        Raises:
            PrecisionError: It does not, and ``refuse`` is set (the caller asked for it).
        """
        try:
            runner = self._runner(name, precision)
        except _Unavailable as exc:
            if precision != "fp32" and not self._known_unavailable(name, precision):
                # Remembered, so that a later load walking the same chain knows it is settled
                # without the gate's fp32 reference (and so without loading the torch model).
                # Not fp32: every chain ends there, so its failure is never a settled fact
                # of the machine but something to retry (a full disk, a killed compile).
                self.cache.write_json(
                    "unavailable", self._gate_key(name, precision), {"reason": str(exc)}
                )
            if refuse:
                raise self._refusal(name, precision, f"cannot run in it here ({exc})") from exc
            self._fallbacks.append(f"{name} {precision} is not available here ({exc})")
            return None
        if precision == "fp32":
            return runner
        result, source = self._gate(name, precision, runner)
        if source == _FAILED:
            # Measured again on a runner built afresh (on OpenVINO: compiled, not imported
            # from the compiled-blob cache), before the precision is given up for this load.
            runner = self._runner(name, precision, fresh=True)
            result, source = self._gate(name, precision, runner)
            self._compiled_fresh.add((name, precision))  # not from the blob cache again
        self._gates[f"{name}:{precision}"] = {**result.to_dict(), "source": source}
        if result.passed:
            return runner
        if refuse:
            if source == _FAILED:
                why = (
                    f"gave outputs that are not numbers (NaN or inf) on {result.count} held-out "
                    "inputs, twice"
                )
            else:
                why = (
                    f"failed the quality gate against fp32: min cosine {result.min_cosine:.6f}, "
                    f"mean {result.mean_cosine:.6f} over {result.count} held-out inputs (needs "
                    f"min >= {self.gate.min_cosine}, mean >= {self.gate.mean_cosine})"
                )
            raise self._refusal(name, precision, why, gate=result.to_dict())
        after = f"using {then[0]} instead" if then else "not a candidate"
        if source == _FAILED:
            self._unsettled = True
            message = (
                f"{name} tower: {precision} gave outputs that are not numbers (NaN or inf) on "
                f"{result.count} held-out inputs, twice: {after}; not cached, measured again "
                "at the next load"
            )
        else:
            message = (
                f"{name} tower: {precision} failed the quality gate against fp32 (min cosine "
                f"{result.min_cosine:.6f}, mean {result.mean_cosine:.6f} over {result.count} "
                f"held-out inputs; needs min >= {self.gate.min_cosine}, mean >= "
                f"{self.gate.mean_cosine}): {after}"
            )
        # A warning when it is measured; a result this machine measured before is a note,
        # so that every later load does not repeat the warning (``runtime`` still says it).
        logger.log(logging.INFO if source == _CACHED else logging.WARNING, message)
        self._fallbacks.append(message)
        return None

    def _refusal(
        self, name: str, precision: str, why: str, *, gate: dict[str, Any] | None = None
    ) -> PrecisionError:
        """The error for a precision the caller asked for that the tower cannot keep."""
        rest = " then ".join(fallback_chain(precision)[1:])
        if rest:
            remedy = (
                f"Pass allow_fallback=True to accept {rest} instead (the first that passes), "
                "or precision='auto' for the fastest precision that passes"
            )
        else:  # fp32 ends every chain: only another engine is left
            remedy = "Nothing follows fp32; engine='torch' runs the model without OpenVINO"
        return PrecisionError(
            f"precision {precision!r} was asked for, but the {name} tower {why}. {remedy}",
            precision=precision,
            tower=name,
            gate=gate,
        )

    # -- runners -----------------------------------------------------------------------

    def _on_gpu(self) -> bool:
        if self.engine == "openvino":
            return self.openvino_device == "GPU"
        return bool(getattr(self.device, "type", "cpu") == "cuda")

    def _runner(self, name: str, precision: str, *, fresh: bool = False) -> Runner:
        """The tower in ``precision``; ``fresh`` compiles without the compiled-blob cache."""
        if self.engine == "torch":
            if precision == "fp16" and not self._on_gpu():
                raise _Unavailable("fp16 runs on CUDA only")
            example = self.towers[name].example
            return TorchRunner(self._module(name), self.device, precision, example=example)
        try:
            # From the file, not a model object: with OpenVINO's compiled-blob cache, a model
            # compiled before on this machine is imported without reading its weights at all
            # (blobs are filed and checked by the files' content: see compile_model).
            compiled = ov_engine.compile_model(
                self._ir_path(name, precision),
                self.openvino_device,
                precision,
                # One blob cache per precision hint: OpenVINO's blob key leaves the hint out,
                # so a bf16 compile would import the blob compiled for fp32 from the same file
                # (what ``auto`` compiles first), and run that instead of a bf16 compilation.
                cache_dir=None if fresh else self.cache.root / "openvino-compiled" / precision,
            )
        except RuntimeError as exc:  # the device refuses the precision hint
            raise _Unavailable(ov_engine.error_reason(exc)) from exc
        if not ov_engine.runs_in(compiled, precision):
            # Reported as what it is, not as the precision asked for.
            raise _Unavailable(f"{self.openvino_device} runs another precision for this hint")
        return ov_engine.OpenVINORunner(compiled, precision)

    def _ir_key(self, name: str, stage: str) -> dict[str, Any]:
        return {**self.identity, **self._versions, "tower": name, "stage": stage}

    def _ir_folder(self, name: str, stage: str) -> Path:
        return self.cache.entry(f"openvino/{name}-{stage}", self._ir_key(name, stage))

    def _ir_cached(self, name: str, stage: str) -> bool:
        """Whether the tower's model for ``stage`` is cached and its files are as written
        (checked by SHA-256; one that is not is removed, so that it is made again)."""
        folder = self._ir_folder(name, stage)
        return self.cache.verified_dir(folder, self._ir_key(name, stage)) is not None

    def _ir_path(self, name: str, precision: str) -> Path:
        """The OpenVINO model file of this tower: int8 quantized, or fp32 for the other
        hints; converted (or quantized) and cached first when it is not there yet."""
        stage = "int8" if precision == "int8" else "fp32"
        folder = self._ir_folder(name, stage)
        if not self._ir_cached(name, stage):
            if stage == "fp32":
                model = ov_engine.convert_module(self._module(name), self.towers[name].example)
            else:
                calibration = [item[None] for item in self._calibration[name]]
                model = ov_engine.quantize(
                    self._fp32_model(name), calibration, subset_size=len(calibration)
                )
            # Processes that convert at once each publish a whole copy; one rename wins.
            self.cache.publish_dir(folder, self._ir_key(name, stage), _saver(model))
        return ov_engine.model_file(folder)

    def _fp32_model(self, name: str) -> Any:
        """The tower's fp32 OpenVINO model, which int8 quantization starts from (read for
        it and not kept: held, it would stay in memory beside every compiled tower)."""
        return ov_engine.read_model(self._ir_path(name, "fp32").parent)

    # -- the gate and the clock --------------------------------------------------------

    def _gate_key(self, name: str, precision: str) -> dict[str, Any]:
        return {
            **self.identity,
            **self._versions,
            "tower": name,
            "engine": self.engine,
            "precision": precision,
            "device": self.openvino_device if self.engine == "openvino" else str(self.device),
            "cpu": cpu_model(),
        }

    def _known_unavailable(self, name: str, precision: str) -> bool:
        """Whether an earlier load on this machine found the tower cannot run in ``precision``."""
        return self.cache.read_json("unavailable", self._gate_key(name, precision)) is not None

    def _cached_gate(self, name: str, precision: str) -> GateResult | None:
        """The gate's earlier measurement on this machine, held against today's bounds."""
        cached = self.cache.read_json("gates", self._gate_key(name, precision)) or {}
        try:
            result = self.gate.judge(
                float(cached["min_cosine"]), float(cached["mean_cosine"]), int(cached["count"])
            )
        except (KeyError, TypeError, ValueError):
            return None  # absent or unreadable: measured again
        # A NaN is a failed measurement, never a verdict (earlier releases cached them).
        return result if result.finite else None

    def _gate(self, name: str, precision: str, runner: Runner) -> tuple[GateResult, str]:
        """The gate's result and where it came from: measured now, cached, or failed (the
        outputs held a NaN or an infinity: no verdict, so nothing is cached)."""
        cached = self._cached_gate(name, precision)
        if cached is not None:
            return cached, _CACHED
        result = self.gate.check(self._reference(name), runner(self._held_out[name]))
        if not result.finite:
            return result, _FAILED
        self.cache.write_json("gates", self._gate_key(name, precision), result.to_dict())
        return result, _MEASURED_NOW

    def _reference(self, name: str) -> np.ndarray:
        if name not in self._references:
            exact = TorchRunner(self._module(name), self.device, "fp32")
            self._references[name] = exact(self._held_out[name])
        return self._references[name]

    def _items_per_second(self, runner: Runner, example: np.ndarray) -> float:
        """Throughput on the example batch: the median of a few calls after a warm-up."""
        runner(example)  # the first call compiles kernels and sizes buffers
        seconds = statistics.median(_timed(runner, example) for _ in range(TIMED_CALLS))
        return len(example) / max(seconds, 1e-9)

    # -- the auto decision -------------------------------------------------------------

    def _decision_key(self) -> dict[str, Any]:
        return {
            **self.identity,
            **self._versions,
            "engine": self.engine,
            "device": self.openvino_device if self.engine == "openvino" else str(self.device),
            "cpu": cpu_model(),
            "gate": [self.gate.min_cosine, self.gate.mean_cosine],
            # Not "towers": the identity may hold that key (the version of the tower code).
            "tower_names": sorted(self.towers),
        }

    def _decision(self) -> dict[str, Any] | None:
        decision = self.cache.read_json("decisions", self._decision_key())
        gates = (decision or {}).get("quality_gate") or {}
        if any(
            isinstance(gate, dict) and not _finite(gate.get("min_cosine"), gate.get("mean_cosine"))
            for gate in gates.values()
        ):
            return None  # decided on a failed measurement (by an earlier release): measure again
        return decision


def _finite(*values: Any) -> bool:
    try:
        return all(math.isfinite(float(value)) for value in values)
    except (TypeError, ValueError):
        return False


def _saver(model: Any) -> Callable[[Path], None]:
    return lambda folder: ov_engine.save_model(model, folder)


def _timed(runner: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray) -> float:
    start = time.perf_counter()
    runner(inputs)
    return time.perf_counter() - start
