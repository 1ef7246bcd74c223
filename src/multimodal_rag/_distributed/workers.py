"""What runs on the Ray workers of a distributed ingest: reading tasks and embedding actors.

A batch travels as columns (Ray Data's numpy batch format):

- in: ``pos`` (the image's place in the listing) and ``path``;
- `read_images` (a task) adds ``id`` (the hash of the bytes), ``state`` (``"new"``, ``"stored"``:
  already in the knowledge base, ``"unreadable"``), ``reason`` (why unreadable) and ``payload``:
  the model's input pixels as float32 bytes (embedders with a numpy preprocessing, such as
  CLIP's), or else the image's encoded bytes; empty unless ``"new"``;
- `EmbeddingActor` (one per worker, the model loaded once) replaces ``payload`` by ``vector``
  and adds ``worker``, ``runtime`` (engine and precision), and on the batch's first row (0 on
  the others) ``seconds`` (its embedding time) and ``started`` (when it began, ``time.time()``),
  for the driver's progress and rates.

Nothing here writes to a store: the driver does, so a worker that dies mid-batch leaves nothing
half-written, and Ray's retry of the batch stores it once.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from attrs import frozen

__all__ = ["FAULT_ENV", "Decoding", "EmbeddingActor", "FaultPlan", "read_images"]

#: Fault injection for the tests of Ray's retries: ``"<marker file>:<n>"`` makes an embedding
#: actor's process exit on its n-th batch, once (the marker file records that it did);
#: ``"<marker file>:@<p>"`` makes it exit on every batch that holds the p-th listed image (a
#: batch that kills every worker it meets; the marker file gets a line per exit). The driver
#: reads it and hands it to the actors, so it reaches workers on any cluster.
FAULT_ENV = "MULTIMODAL_RAG_RAY_EXIT_ON_BATCH"

NEW, STORED, UNREADABLE = "new", "stored", "unreadable"


@frozen
class Decoding:
    """How a reading task turns an image into the model's input: the embedder's own
    preprocessing, draft decoding and pixel limit, so the pixels equal those the local
    ingest gives the model."""

    preprocess: Any  # an ImagePreprocess: numpy and PIL only, no torch
    draft: bool
    max_pixels: int


@frozen
class FaultPlan:
    """Exit the actor's process on its ``batch``-th batch, unless ``marker`` exists (then
    create it); or, with ``position``, on every batch holding that listed image."""

    marker: str
    batch: int
    position: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> FaultPlan | None:
        value = environ.get(FAULT_ENV)
        if not value:
            return None
        marker, _, where = value.rpartition(":")
        if where.startswith("@"):
            return cls(marker, 0, int(where[1:]))
        return cls(marker, int(where))


_stored_cache: dict[str, np.ndarray] = {}


def _stored_ids(stored: Any) -> np.ndarray:
    """The sorted ids already in the knowledge base; fetched once per worker process."""
    if isinstance(stored, np.ndarray):
        return stored
    key = stored.hex()  # an ObjectRef
    if key not in _stored_cache:
        import ray

        _stored_cache.clear()
        _stored_cache[key] = ray.get(stored)
    return _stored_cache[key]


def read_images(
    batch: dict[str, np.ndarray], *, stored: Any, decoding: Decoding | None
) -> dict[str, np.ndarray]:
    """Read, hash and (with ``decoding``) decode a batch of image files; see the module's docstring.

    Args:
        batch: ``pos`` and ``path`` columns.
        stored: The ids already stored, sorted, as a numpy bytes array or a Ray object ref to one.
        decoding: The embedder's preprocessing, or ``None`` to pass encoded bytes to the actor.
    """
    from multimodal_rag._images import content_id, image_bytes
    from multimodal_rag.errors import ImageError

    known = _stored_ids(stored)
    paths = [str(path) for path in batch["path"]]
    ids, states, reasons, payloads = [], [], [], []
    for path in paths:
        id_, state, reason, payload = "", NEW, "", b""
        try:
            data = image_bytes(path)
            id_ = content_id(data)
            if _contains(known, id_):
                state = STORED
            elif decoding is None:
                payload = data
            else:
                payload = _pixels(data, decoding).tobytes()
        except ImageError as exc:
            # Decoded from the bytes already read, whose errors say "<bytes>": name the file.
            state, reason = (
                UNREADABLE,
                str(exc).replace("'<bytes>'", repr(path)).replace("<bytes>", repr(path)),
            )
        ids.append(id_)
        states.append(state)
        reasons.append(reason)
        payloads.append(payload)
    return {
        "pos": np.asarray(batch["pos"], dtype=np.int64),
        "path": np.array(paths, dtype=object),
        "id": np.array(ids, dtype=object),
        "state": np.array(states, dtype=object),
        "reason": np.array(reasons, dtype=object),
        "payload": np.array(payloads, dtype=object),
    }


def _contains(sorted_ids: np.ndarray, id_: str) -> bool:
    key = id_.encode()
    at = int(np.searchsorted(sorted_ids, key))
    return at < len(sorted_ids) and bytes(sorted_ids[at]) == key


def _pixels(data: bytes, decoding: Decoding) -> np.ndarray:
    from multimodal_rag.embedders.preprocess import load_pixels

    pixels = load_pixels(
        data, decoding.preprocess, draft=decoding.draft, max_pixels=decoding.max_pixels
    )
    return np.ascontiguousarray(pixels, dtype=np.float32)


class EmbeddingActor:
    """The knowledge base's embedder, rebuilt on one worker from its kind and config.

    Engine and precision are chosen here, on the worker, by the same quality gate (and
    cached decision) a local load uses: a GPU worker and a CPU worker may run different
    precisions of one model, and the gate holds each to the fp32 reference.

    Raises:
        EmbedderMismatchError: The embedder built here has another fingerprint than the
            knowledge base's (other weights at the checkpoint's path on this worker).
    """

    def __init__(
        self,
        kind: str,
        config: Mapping[str, Any],
        *,
        fingerprint: str,
        allow_modules: Sequence[str] = (),
        pixel_shape: tuple[int, ...] | None = None,
        fault: FaultPlan | None = None,
    ) -> None:
        from multimodal_rag._registry import resolve
        from multimodal_rag.errors import EmbedderMismatchError

        embedder = resolve("embedder", kind, allow_modules=allow_modules)(**config)
        if embedder.fingerprint != fingerprint:
            raise EmbedderMismatchError(
                f"the embedder built on worker {socket.gethostname()!r} is {embedder.fingerprint!r}, "
                f"but the knowledge base was built with {fingerprint!r}: give every worker the same weights"
            )
        self.embedder = embedder
        self.pixel_shape = pixel_shape
        self.fault = fault
        self.batches = 0
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.batches += 1
        self._maybe_fail(batch["pos"])
        states = np.array(batch["state"], dtype=object)
        reasons = np.array(batch["reason"], dtype=object)
        vectors = np.zeros((len(states), self.embedder.dim), dtype=np.float32)
        new = np.flatnonzero(states == NEW)
        payloads = [bytes(batch["payload"][i]) for i in new]
        pixels = None
        if payloads and self.pixel_shape is not None:
            pixels = np.stack(
                [np.frombuffer(p, dtype=np.float32).reshape(self.pixel_shape) for p in payloads]
            )
            self._build_engine(pixels)
        started, start = time.time(), time.perf_counter()  # the model is ready: embedding starts
        if pixels is not None:
            vectors[new] = np.asarray(self.embedder.embed_pixels(pixels), dtype=np.float32)
        elif payloads:
            for embedded in self.embedder.iter_embed_images(payloads, batch_size=len(payloads)):
                vectors[new[embedded.indices]] = embedded.vectors
                for index, error in embedded.failures:
                    states[new[index]] = UNREADABLE
                    reasons[new[index]] = str(error)
        seconds = time.perf_counter() - start
        rest = [0.0] * (len(states) - 1)  # the batch's figures go on its first row only
        return {
            "pos": np.asarray(batch["pos"], dtype=np.int64),
            "path": np.array(batch["path"], dtype=object),
            "id": np.array(batch["id"], dtype=object),
            "state": states,
            "reason": reasons,
            "vector": vectors,
            "worker": np.array([self.worker] * len(states), dtype=object),
            "runtime": np.array([self._runtime()] * len(states), dtype=object),
            "seconds": np.array([seconds, *rest], dtype=np.float64),
            "started": np.array([started, *rest], dtype=np.float64),
        }

    def _build_engine(self, pixels: np.ndarray) -> None:
        """Build the model's engine before the first batch is timed; int8 calibrates on the
        collection's own first batch, as a local ingest does."""
        build = getattr(self.embedder, "_build_engine", None)
        if build is not None and getattr(self.embedder, "_engine", None) is None:
            build(pixels)

    def _runtime(self) -> str:
        runtime = getattr(self.embedder, "runtime", None)
        if isinstance(runtime, dict):
            return f"{runtime.get('engine', '?')} {runtime.get('precision', '?')}"
        return type(self.embedder).__name__

    def _maybe_fail(self, positions: np.ndarray) -> None:
        fault = self.fault
        if fault is not None and fault.position is not None and fault.position in positions:
            with open(fault.marker, "a", encoding="utf-8") as exits:
                exits.write(f"{self.worker}\n")
            os._exit(1)
        if fault is None or self.batches != fault.batch:
            return
        marker = Path(fault.marker)
        try:
            marker.touch(exist_ok=False)
        except FileExistsError:
            return  # it failed once already: this is Ray's retry
        os._exit(1)  # a worker lost mid-batch: nothing of this batch reached the driver
