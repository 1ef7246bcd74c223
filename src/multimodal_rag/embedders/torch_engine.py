"""Running a model tower in PyTorch, in fp32, bf16 or fp16.

In a reduced precision the weights of every matrix product the tower uses are stored in it
(norms and embeddings stay fp32, as ``clip.model.convert_weights`` does for fp16) and the
forward pass runs under autocast.

The towers of one model share its modules (both wrap the whole CLIP model), so a tower never
converts the weights it was given: it keeps its own copy of the module, in which only the
matrix weights *it* uses are replaced by converted tensors, and everything else is shared.
Converting the shared model instead would run the other tower, reported as fp32, in bf16
(or crash it: an fp32 input meets a bf16 convolution).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from multimodal_rag._extras import require

if TYPE_CHECKING:
    import torch

__all__ = ["TorchRunner", "import_torch", "reduced_copy", "tensors_used"]

#: The packed projections of ``nn.MultiheadAttention``; any module may hold a projection.
_ATTENTION = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias")
_PROJECTIONS = ("text_projection", "proj")


def import_torch() -> Any:
    return require("torch", user="the torch engine")


class TorchRunner:
    """Calls ``module`` on a numpy batch on ``device`` in ``precision``; returns float32 numpy.

    Args:
        module: A ``torch.nn.Module`` whose forward takes one batch tensor.
        device: The torch device the module lives on (or its name).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        example: A batch like the tower's inputs: `settle` runs one item of it to see
            which weights the tower uses (without it, every matrix weight counts).
    """

    engine = "torch"

    def __init__(
        self,
        module: Any,
        device: torch.device | str,
        precision: str,
        *,
        example: np.ndarray | None = None,
    ) -> None:
        self.module = module
        self.device = import_torch().device(device)
        self.precision = precision
        self.example = example

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        torch = import_torch()
        dtype = _dtype(self.precision)
        autocast = (
            torch.autocast(self.device.type, dtype=dtype)
            if dtype is not None
            else torch.autocast(self.device.type, enabled=False)
        )
        with torch.inference_mode(), autocast:
            batch = torch.from_numpy(inputs).to(self.device, non_blocking=True)
            features = self.module(batch)
        result: np.ndarray = features.float().cpu().numpy()
        return result

    def settle(self) -> None:
        """Store the tower's matrix weights in its precision (which skips per-call casts),
        in a copy of the module that this runner owns."""
        dtype = _dtype(self.precision)
        if dtype is None:
            return
        used = (
            tensors_used(self.module, self.example[:1], self.device)
            if self.example is not None
            else None
        )
        self.module = reduced_copy(self.module, dtype, used=used)


def _dtype(precision: str) -> Any:
    torch = import_torch()
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def tensors_used(module: Any, inputs: np.ndarray, device: Any) -> set[int]:
    """The ids of the module's parameters and buffers that a forward pass on ``inputs`` reads.

    Every torch function call is watched (``TorchFunctionMode``): a weight reaches the
    arithmetic only as an argument of one, however the module reaches it (a submodule's
    forward, a slice of a packed projection, a bare ``@``).
    """
    torch = import_torch()
    owned = {id(t) for t in itertools.chain(module.parameters(), module.buffers())}
    seen: set[int] = set()

    mode: Any = torch.overrides.TorchFunctionMode

    class Watch(mode):  # type: ignore[misc]
        def __torch_function__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            kwargs = kwargs or {}
            seen.update(id(t) for t in _leaves((args, kwargs)) if id(t) in owned)
            return func(*args, **kwargs)

    with torch.inference_mode(), Watch():
        module(torch.from_numpy(inputs).to(device))
    return seen


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    else:
        yield value


def reduced_copy(module: Any, dtype: torch.dtype, *, used: set[int] | None) -> Any:
    """A copy of ``module`` whose matrix weights among ``used`` (ids; None: all) are ``dtype``.

    Only the converted weights are new tensors: every other parameter and buffer is the
    original's, so the copy costs the converted weights and nothing else, and ``module``
    itself is left exactly as it was.
    """
    torch = import_torch()
    tensors = itertools.chain(module.parameters(), module.buffers())
    shared: dict[int, Any] = {id(t): t for t in tensors}
    duplicate = copy.deepcopy(module, memo=dict(shared))
    converted: dict[int, Any] = {}  # a tied weight stays one tensor
    for sub in duplicate.modules():
        for name in _matrix_attributes(torch.nn, sub):
            tensor = getattr(sub, name, None)
            if not isinstance(tensor, torch.Tensor) or id(tensor) not in shared:
                continue
            if used is not None and id(tensor) not in used:
                continue
            if id(tensor) not in converted:
                data = tensor.detach().to(dtype)
                if isinstance(tensor, torch.nn.Parameter):
                    data = torch.nn.Parameter(data, requires_grad=False)
                converted[id(tensor)] = data
            setattr(sub, name, converted[id(tensor)])
    return duplicate


def _matrix_attributes(nn: Any, module: Any) -> tuple[str, ...]:
    """The names of the tensors of ``module`` that take part in matrix products."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
        return ("weight", "bias", *_PROJECTIONS)
    if isinstance(module, nn.MultiheadAttention):
        return (*_ATTENTION, *_PROJECTIONS)
    return _PROJECTIONS
