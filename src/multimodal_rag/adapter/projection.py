"""An adapter: a small learned map applied to the frozen embedder's vectors, one per side.

Image vectors (stored ones and image queries) go through the image map; text queries go
through the text map. Both start as the identity, so an untrained adapter changes nothing:

- ``"low-rank"``: ``v + (v @ down) @ up``, a residual of rank ``r`` (``up`` starts at zero);
  few parameters, so it fits from a few thousand pairs without forgetting what the model knew.
- ``"linear"``: ``v @ weight``, a full matrix (starts as the identity); for a space that is
  far off, with pairs to match.

The output is normalised again, so inner product stays cosine similarity. Weights are kept
as plain arrays in a ``.npz`` file read with ``allow_pickle=False``: loading one runs no code.
Nor does it allocate what a crafted file declares: every array's shape (from its npy header)
and size (from the zip's directory) are checked against the dimension and rank expected
before any array is read.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import numpy as np
from attrs import field, frozen

from multimodal_rag.errors import CorruptFileError, InvalidInputError
from multimodal_rag.types import AdapterKind

__all__ = ["KINDS", "SIDES", "Adapter"]

KINDS: tuple[AdapterKind, ...] = get_args(AdapterKind)
SIDES = ("image", "text")
_ALL_ARRAYS = frozenset(f"{side}.{part}" for side in SIDES for part in ("down", "up", "weight"))


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

    kind: AdapterKind
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
    def identity(cls, dim: int, *, kind: AdapterKind = "low-rank", rank: int = 32) -> Adapter:
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
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        sha256: str | None = None,
        dim: int | None = None,
        rank: int | None = None,
    ) -> Adapter:
        """Read an adapter file, checking its [`sha256`][multimodal_rag.adapter.projection.Adapter.sha256] when one is given.

        Args:
            path: The ``.npz`` file.
            sha256: The digest it must have.
            dim: The dimension it must map (the embedder's); ``None``: the one it declares.
            rank: The rank a low-rank adapter must have; ``None``: the one its arrays have.

        Raises:
            CorruptFileError: The file is missing, changed (another digest), not an adapter,
                or of another dimension or rank (found before any array is read).
        """
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CorruptFileError(f"the adapter file {str(path)!r} is missing") from None
        try:
            _check_archive(data, dim=dim, rank=rank)
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


# An adapter array's npy header is about a hundred bytes; numpy's own ceiling is 10,000.
_MAX_NPY_HEADER = 1024


def _check_archive(data: bytes, *, dim: int | None, rank: int | None) -> None:
    """Refuse an adapter file whose arrays are not the ones an adapter of ``dim`` and ``rank`` holds.

    Reads only the zip's directory, each member's npy header (``numpy.lib.format``) and the
    16-byte ``__header__``: a member declaring a (10**6, 10**6) array, or inflating to
    gigabytes, is refused before anything of that size is allocated, since each member's
    uncompressed size must be exactly its header plus the array its shape declares.

    Raises:
        ValueError: What is wrong, naming the array.
        zipfile.BadZipFile: Not a zip file.
    """
    arrays: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if name in arrays or name != "__header__" and name not in _ALL_ARRAYS:
                raise ValueError(f"it holds {info.filename!r}, which is no adapter array (or twice)")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ValueError(f"{name} is compressed with method {info.compress_type}; adapter files are plain zip")
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(member, max_header_size=_MAX_NPY_HEADER)
                header_size = member.tell()
            if dtype.hasobject or dtype.kind not in ("f" if name != "__header__" else "iu") or dtype.itemsize > 8:
                raise ValueError(f"{name} holds {dtype}, not the numbers an adapter is made of")
            # In float64, so that a forged shape cannot overflow into a small number of bytes.
            size = header_size + float(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            if info.file_size != size:
                raise ValueError(f"{name} declares shape {shape} ({size:.0f} bytes) but holds {info.file_size} bytes")
            arrays[name] = (shape, dtype)
        if arrays.get("__header__", ((),))[0] != (2,):
            raise ValueError("its __header__ is missing or not (kind, dimension)")
        header = np.lib.format.read_array(io.BytesIO(archive.read("__header__.npy")), allow_pickle=False)
    kind_index, declared = int(header[0]), int(header[1])
    if not 0 <= kind_index < len(KINDS) or declared < 1:
        raise ValueError(f"its __header__ names kind {kind_index} and dimension {declared}")
    kind = KINDS[kind_index]
    if dim is not None and declared != dim:
        raise ValueError(f"it maps vectors of dimension {declared}, the embedder's have {dim}")
    down = arrays.get("image.down", ((),))[0]
    declared_rank = int(down[-1]) if down else 0
    if rank is not None and kind == "low-rank" and declared_rank != rank:
        raise ValueError(f"its rank is {declared_rank}, the manifest's is {rank}")
    expected = _shapes(kind, declared, declared_rank)
    found = {name: shape for name, (shape, _) in arrays.items() if name != "__header__"}
    if found != expected:
        raise ValueError(f"a {kind} adapter of dimension {declared} holds {expected}, this file {found}")


def _shapes(kind: str, dim: int, rank: int) -> dict[str, tuple[int, int]]:
    if kind == "linear":
        return {f"{side}.weight": (dim, dim) for side in SIDES}
    shapes: dict[str, tuple[int, int]] = {}
    for side in SIDES:
        shapes[f"{side}.down"] = (dim, rank)
        shapes[f"{side}.up"] = (rank, dim)
    return shapes
