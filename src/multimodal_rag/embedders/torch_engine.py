"""Running a model tower in PyTorch, in fp32, bf16 or fp16.

In a reduced precision the weights of every matrix product are stored in it (norms and
embeddings stay fp32, as ``clip.model.convert_weights`` does for fp16) and the forward
pass runs under autocast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from multimodal_rag._extras import require

if TYPE_CHECKING:
    import torch

__all__ = ["TorchRunner", "convert_matrix_weights", "import_torch"]


def import_torch() -> Any:
    return require("torch", user="the torch engine")


class TorchRunner:
    """Calls ``module`` on a numpy batch on ``device`` in ``precision``; returns float32 numpy.

    Args:
        module: A ``torch.nn.Module`` whose forward takes one batch tensor.
        device: The torch device the module lives on (or its name).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    """

    engine = "torch"

    def __init__(self, module: Any, device: torch.device | str, precision: str) -> None:
        self.module = module
        self.device = import_torch().device(device)
        self.precision = precision

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        torch = import_torch()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
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
        """Store the matrix weights in the chosen precision, which skips per-call casts."""
        if self.precision != "fp32":
            torch = import_torch()
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            convert_matrix_weights(self.module, dtype)


def convert_matrix_weights(model: Any, dtype: torch.dtype) -> None:
    """Store the weights of matrix products in ``dtype``; keep norms and embeddings in fp32.

    The same split as ``clip.model.convert_weights`` (which only knows fp16).
    """
    torch = import_torch()
    nn = torch.nn
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            module.weight.data = module.weight.data.to(dtype)
            if module.bias is not None:
                module.bias.data = module.bias.data.to(dtype)
        if isinstance(module, nn.MultiheadAttention):
            for attr in (
                "in_proj_weight",
                "q_proj_weight",
                "k_proj_weight",
                "v_proj_weight",
                "in_proj_bias",
            ):
                tensor = getattr(module, attr)
                if tensor is not None:
                    tensor.data = tensor.data.to(dtype)
        for attr in ("text_projection", "proj"):
            tensor = getattr(module, attr, None)
            if isinstance(tensor, torch.Tensor):
                tensor.data = tensor.data.to(dtype)
