"""What ``engine="auto"`` (the default) runs on: OpenVINO where it is installed, torch otherwise.

OpenVINO is the faster CPU engine (int8 held to the quality gate), so it is the choice on a
CPU when its extra is installed. torch runs the towers where OpenVINO cannot help or cannot
run: on a CUDA GPU, and on a machine without ``pip install 'multimodal-rag[openvino]'``.
The choice and its reason are recorded in the embedder's ``runtime`` (the knowledge base's
manifest keeps it, ``info`` shows it), so a slower machine says why it is slower.

Nothing heavy is imported to decide: OpenVINO is looked up, not imported, and a CUDA GPU is
recognised by its driver's files rather than by importing torch.
"""

from __future__ import annotations

from pathlib import Path

from attrs import frozen

from multimodal_rag.errors import MissingDependencyError
from multimodal_rag.types import Engine

__all__ = ["EngineChoice", "choose_engine"]

#: Files the NVIDIA driver creates: a CUDA GPU is present where one of them exists.
_NVIDIA_FILES = ("/proc/driver/nvidia/version", "/dev/nvidia0")


@frozen(kw_only=True)
class EngineChoice:
    """The engine that runs, the one asked for, and why it runs (for ``runtime``)."""

    engine: Engine
    requested: Engine
    reason: str


def choose_engine(engine: Engine, device: str | None) -> EngineChoice:
    """The engine ``engine`` means on this machine for ``device`` (a torch-style name).

    ``"torch"`` and ``"openvino"`` mean themselves (a missing extra is reported later, as
    for any engine asked for by name); ``"auto"`` is decided here.
    """
    if engine != "auto":
        return EngineChoice(engine=engine, requested=engine, reason="asked for")
    if device is not None and device.lower().split(":")[0] not in ("cpu", "gpu"):
        # CUDA, or a name only torch can judge (and refuse with its reason).
        return EngineChoice(
            engine="torch", requested="auto", reason=f"device {device!r}: torch runs it"
        )
    if device is None and any(Path(path).exists() for path in _NVIDIA_FILES):
        return EngineChoice(
            engine="torch", requested="auto", reason="a CUDA GPU is present: torch runs it"
        )
    from multimodal_rag.embedders.openvino_engine import check_engine_installed

    try:
        check_engine_installed()
    except MissingDependencyError as exc:
        return EngineChoice(
            engine="torch", requested="auto", reason=f"openvino is not usable here: {exc}"
        )
    return EngineChoice(engine="openvino", requested="auto", reason="openvino is installed")
