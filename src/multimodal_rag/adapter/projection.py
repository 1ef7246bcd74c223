"""An adapter: a small learned map applied to the frozen embedder's vectors, one per side.

Image vectors (stored ones and image queries) go through the image map; text queries go
through the text map. Both start as the identity, so an untrained adapter changes nothing:

- ``"low-rank"``: ``v + (v @ down) @ up``, a residual of rank ``r`` (``up`` starts at zero);
  few parameters, so it fits from a few thousand pairs without forgetting what the model knew.
- ``"linear"``: ``v @ weight``, a full matrix (starts as the identity); for a space that is
  far off, with pairs to match.

The output is normalised again, so inner product stays cosine similarity. Weights are kept
as plain arrays in a ``.npz`` file read with ``allow_pickle=False``: loading one runs no code.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from attrs import field, frozen

from multimodal_rag.errors import CorruptFileError, InvalidInputError

__all__ = ["KINDS", "SIDES", "Adapter"]

KINDS = ("low-rank", "linear")
SIDES = ("image", "text")


def _frozen_arrays(value: Mapping[str, Any]) -> dict[str, np.ndarray]:
    arrays = {}
    for name, array in value.items():
        copy = np.array(array, dtype=np.float32, copy=True)
        copy.setflags(write=False)
        arrays[str(name)] = copy
    return arrays


@frozen(kw_only=True, eq=False)
class Adapter:
    """The learned maps, as float32 arrays named ``<side>.<part>``.

    Attributes:
        kind: ``"low-rank"`` or ``"linear"``.
        dim: The embedder's dimension; vectors keep it.
        arrays: ``image.down``/``image.up`` (``dim x r``, ``r x dim``) or ``image.weight``
            (``dim x dim``), and the same for ``text``.
    """

    kind: str
    dim: int
    arrays: Mapping[str, np.ndarray] = field(converter=_frozen_arrays)

    def __attrs_post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInputError(f"adapter kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        expected = _shapes(self.kind, self.dim, self.rank)
        if set(self.arrays) != set(expected):
            raise InvalidInputError(f"a {self.kind} adapter holds {sorted(expected)}, got {sorted(self.arrays)}")
        for name, shape in expected.items():
            array = self.arrays[name]
            if array.shape != shape or not np.isfinite(array).all():
                raise InvalidInputError(f"adapter array {name} must be finite with shape {shape}, got {array.shape}")

    @property
    def rank(self) -> int:
        """The residual's rank (the dimension for a linear adapter)."""
        if self.kind == "linear":
            return self.dim
        return int(self.arrays["image.down"].shape[1]) if "image.down" in self.arrays else 0

    @classmethod
    def identity(cls, dim: int, *, kind: str = "low-rank", rank: int = 32) -> Adapter:
        """An adapter that changes nothing (the starting point of a fit)."""
        arrays: dict[str, np.ndarray] = {}
        for side in SIDES:
            if kind == "linear":
                arrays[f"{side}.weight"] = np.eye(dim, dtype=np.float32)
            else:
                arrays[f"{side}.down"] = np.zeros((dim, rank), dtype=np.float32)
                arrays[f"{side}.up"] = np.zeros((rank, dim), dtype=np.float32)
        return cls(kind=kind, dim=dim, arrays=arrays)

    def apply(self, vectors: np.ndarray, side: str) -> np.ndarray:
        """Map unit vectors of ``side`` (``"image"`` or ``"text"``) and normalise them again.

        Raises:
            InvalidInputError: An unknown side, or vectors of another dimension.
        """
        if side not in SIDES:
            raise InvalidInputError(f"side must be one of {', '.join(SIDES)}; got {side!r}")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InvalidInputError(f"the adapter maps vectors of dimension {self.dim}, got shape {vectors.shape}")
        if self.kind == "linear":
            mapped = vectors @ self.arrays[f"{side}.weight"]
        else:
            mapped = vectors + (vectors @ self.arrays[f"{side}.down"]) @ self.arrays[f"{side}.up"]
        norms = np.maximum(np.linalg.norm(mapped, axis=1, keepdims=True), np.float32(1e-12))
        return np.ascontiguousarray(mapped / norms, dtype=np.float32)

    # -- files -------------------------------------------------------------------

    @property
    def sha256(self) -> str:
        """A digest of what the adapter computes (kind, dimension, every array's values):
        equal for equal adapters, whatever file they came from."""
        digest = hashlib.sha256(f"{self.kind}:{self.dim}".encode())
        for name in sorted(self.arrays):
            digest.update(name.encode() + b"\0")
            digest.update(np.ascontiguousarray(self.arrays[name], dtype="<f4").tobytes())
        return digest.hexdigest()

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the adapter to ``path`` (through a temporary file, so a crash leaves the old
        file or the new one); returns its [`sha256`][multimodal_rag.adapter.projection.Adapter.sha256]."""
        buffer = io.BytesIO()
        header = np.array([KINDS.index(self.kind), self.dim], dtype=np.int64)
        contents: dict[str, Any] = {"__header__": header, **{name: self.arrays[name] for name in sorted(self.arrays)}}
        np.savez(buffer, **contents)
        data = buffer.getvalue()
        path = Path(path)
        temporary = path.with_name(f".{path.name}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        return self.sha256

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, sha256: str | None = None) -> Adapter:
        """Read an adapter file, checking its [`sha256`][multimodal_rag.adapter.projection.Adapter.sha256] when one is given.

        Raises:
            CorruptFileError: The file is missing, changed (another digest), or not an adapter.
        """
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CorruptFileError(f"the adapter file {str(path)!r} is missing") from None
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                header = archive["__header__"]
                arrays = {name: archive[name] for name in archive.files if name != "__header__"}
            adapter = cls(kind=KINDS[int(header[0])], dim=int(header[1]), arrays=arrays)
        except (OSError, ValueError, KeyError, IndexError, InvalidInputError, zipfile.BadZipFile) as exc:
            raise CorruptFileError(f"{str(path)!r} is not a readable adapter file: {exc}") from exc
        if sha256 is not None and adapter.sha256 != sha256:
            raise CorruptFileError(
                f"the adapter file {str(path)!r} changed since it was saved (its SHA-256 differs from the manifest's)"
            )
        return adapter


def _shapes(kind: str, dim: int, rank: int) -> dict[str, tuple[int, int]]:
    if kind == "linear":
        return {f"{side}.weight": (dim, dim) for side in SIDES}
    shapes: dict[str, tuple[int, int]] = {}
    for side in SIDES:
        shapes[f"{side}.down"] = (dim, rank)
        shapes[f"{side}.up"] = (rank, dim)
    return shapes
