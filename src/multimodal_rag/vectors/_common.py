"""Pieces every vector store shares: input checks and the id <-> label map."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from multimodal_rag.errors import (
    CorruptFileError,
    DimensionMismatchError,
    InvalidInputError,
    NotFoundError,
)

__all__ = [
    "UNIT_NORM_TOLERANCE",
    "LabelMap",
    "bad_vector_rows",
    "check_ids",
    "check_queries",
    "check_vectors",
    "exact_top_k",
    "filtered_search",
    "top_k",
]


#: How far from 1 a stored vector's norm may be. Scores are inner products, which equal
#: cosines only for unit vectors; a vector of norm 1e38 would outrank every other.
#: Vectors computed in bf16 or fp16 and normalised in float32 are well within this.
UNIT_NORM_TOLERANCE = 1e-2


def bad_vector_rows(vectors: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The rows of a float32 ``(n, dim)`` array that are not finite unit vectors, and why each is not."""
    with np.errstate(over="ignore", invalid="ignore"):
        # Squares of huge rows overflow to inf in float32: refused below like NaN.
        squares = np.einsum("ij,ij->i", vectors, vectors)
    # A slightly wider test than |norm - 1| <= tolerance, settled exactly row by row.
    candidates = np.flatnonzero(~(np.abs(squares - 1.0) <= 2.1 * UNIT_NORM_TOLERANCE))
    rows, reasons = [], []
    for row in candidates.tolist():
        vector = vectors[row].astype(np.float64)
        norm = float(np.linalg.norm(vector)) if np.isfinite(vector).all() else None
        if norm is None:
            reason = "contains NaN or infinity"
        elif norm == 0:
            reason = "is all zeros"
        elif abs(norm - 1.0) > UNIT_NORM_TOLERANCE:
            reason = f"has norm {norm:.6g}, not 1 (vectors must be normalised to unit length)"
        else:
            continue
        rows.append(row)
        reasons.append(reason)
    return np.asarray(rows, dtype=np.int64), reasons


def check_ids(ids: Sequence[str]) -> list[str]:
    """Validate ids for an add: non-empty strings, no repeats within the call."""
    if isinstance(ids, str):
        raise InvalidInputError("ids must be a sequence of strings, not a single string")
    out = list(ids)
    for id_ in out:
        if not isinstance(id_, str) or not id_:
            raise InvalidInputError(f"every id must be a non-empty string, got {id_!r}")
    if len(set(out)) != len(out):
        seen: set[str] = set()
        repeated = next(i for i in out if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise InvalidInputError(f"id {repeated!r} appears more than once in one add")
    return out


def check_vectors(
    vectors: Any, dim: int, *, count: int | None = None, what: str = "vectors", unit: bool = True
) -> np.ndarray:
    """Validate and return vectors as a C-contiguous float32 ``(n, dim)`` array.

    Args:
        unit: Require every row's norm to be within :data:`UNIT_NORM_TOLERANCE` of 1,
            as the embedder protocol promises (otherwise only refuse zero rows).

    Raises:
        DimensionMismatchError: Wrong dimension.
        InvalidInputError: Wrong shape or dtype, NaN/inf values, zero vectors, rows
            that are not unit vectors (with ``unit``), or a row count that differs
            from ``count``. The message names the first bad row.
    """
    try:
        array = np.asarray(vectors)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} must be a numeric array: {exc}") from exc
    if array.dtype.kind not in "fiu":
        raise InvalidInputError(f"{what} must be numeric, got dtype {array.dtype}")
    if array.ndim == 1 and count in (None, 1):
        array = array[None, :]
    if array.ndim != 2:
        raise InvalidInputError(f"{what} must have shape (n, {dim}), got {array.shape}")
    if array.shape[1] != dim:
        raise DimensionMismatchError(
            f"{what} have dimension {array.shape[1]}, but this store holds dimension {dim}"
        )
    if count is not None and array.shape[0] != count:
        raise InvalidInputError(f"got {count} ids but {array.shape[0]} {what}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = int(np.argwhere(~np.isfinite(array).all(axis=1))[0, 0])
        raise InvalidInputError(f"{what} row {bad} contains NaN or infinity")
    if unit:
        rows, reasons = bad_vector_rows(array)
        if len(rows):
            raise InvalidInputError(f"{what} row {int(rows[0])} {reasons[0]}")
        return array
    norms = np.linalg.norm(array, axis=1)
    if (norms == 0).any():
        raise InvalidInputError(f"{what} row {int(np.argmin(norms))} is all zeros")
    return array


def check_queries(queries: Any, dim: int, k: int) -> np.ndarray:
    """Validate ``k`` and the queries (as :func:`check_vectors` does).

    A query's norm only scales its scores, never its ranking, so queries need not be
    unit vectors (only stored vectors must be).
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    if (
        isinstance(queries, np.ndarray)
        and queries.dtype == np.float32
        and queries.ndim == 2
        and queries.shape[1] == dim
        and queries.flags.c_contiguous
        and np.isfinite(queries.sum())
        and queries.any(axis=1).all()
    ):
        # Fast path for the common case, a few microseconds cheaper per search: a finite
        # sum means no NaN or infinity (a huge-but-finite sum overflowing to inf only
        # sends the queries through the full check below), and no row is all zeros.
        return queries
    return check_vectors(queries, dim, what="queries", unit=False)


class LabelMap:
    """Maps string ids to the int64 labels an index stores.

    Labels come from a counter that only grows and is saved with the store, so a
    removed label is never handed out again and two vectors never share one.
    """

    def __init__(self) -> None:
        self.next_label = 0
        self.label_of: dict[str, int] = {}
        self.id_of: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.label_of)

    def __contains__(self, id_: object) -> bool:
        return id_ in self.label_of

    def assign(self, ids: Sequence[str]) -> np.ndarray:
        """Fresh labels for ``ids`` (callers remove replaced ids first)."""
        labels = np.arange(self.next_label, self.next_label + len(ids), dtype=np.int64)
        self.next_label += len(ids)
        for id_, label in zip(ids, labels.tolist()):
            self.label_of[id_] = label
            self.id_of[label] = id_
        return labels

    def pop(self, ids: Iterable[str]) -> np.ndarray:
        """Forget the known ``ids``; return their labels."""
        labels = []
        for id_ in ids:
            label = self.label_of.pop(id_, None)
            if label is not None:
                del self.id_of[label]
                labels.append(label)
        return np.asarray(labels, dtype=np.int64)

    def labels(self, ids: Sequence[str]) -> np.ndarray:
        try:
            return np.asarray([self.label_of[i] for i in ids], dtype=np.int64)
        except KeyError as exc:
            raise NotFoundError(f"id {exc.args[0]!r} is not in the vector store") from None

    def save(self, path: Path) -> None:
        data = {"next_label": self.next_label, "ids": list(self.label_of), "labels": list(self.label_of.values())}
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> LabelMap:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            ids, labels, next_label = data["ids"], data["labels"], int(data["next_label"])
            if len(ids) != len(labels):
                raise ValueError("ids and labels differ in length")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptFileError(f"cannot read the id map {str(path)!r}: {exc}") from exc
        new = cls()
        new.next_label = next_label
        new.label_of = dict(zip(ids, (int(label) for label in labels)))
        new.id_of = {label: id_ for id_, label in new.label_of.items()}
        return new


def filtered_search(
    search: Any,
    queries: np.ndarray,
    k: int,
    size: int,
    keep: Any,
) -> list[list[Any]]:
    """Search with a filter by over-fetching, widening until ``k`` results pass.

    Args:
        search: ``search(queries, n) -> list[list[Neighbor]]`` without a filter.
        queries: The query rows.
        k: Results wanted per query.
        size: Number of live vectors (the most a search can return).
        keep: Predicate over ids.
    """
    results: list[list[Any]] = [[] for _ in range(len(queries))]
    pending = list(range(len(queries)))
    fetch = min(size, max(4 * k, 32))
    while pending:
        batch = search(queries[pending], fetch)
        still = []
        for row, neighbors in zip(pending, batch):
            kept = [n for n in neighbors if keep(n.id)]
            if len(kept) >= k or fetch >= size:
                results[row] = kept[:k]
            else:
                still.append(row)
        pending = still
        fetch = min(size, fetch * 4)
    return results


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` highest scores of each row, best first, and their column positions.

    ``argpartition`` finds the top k in linear time; only those k are then sorted.
    """
    k = min(k, scores.shape[1])
    if k < scores.shape[1]:
        columns = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(scores, columns, axis=1)
    else:
        columns = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(columns, order, axis=1)


def exact_top_k(
    queries: np.ndarray, k: int, chunks: Iterable[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product search over ``(labels, vectors)`` chunks, merged chunk by chunk.

    Approximate stores use it when their index cannot produce enough results (a
    selective filter, many removed vectors), so memory stays bounded by one chunk.

    Returns:
        ``(scores, labels)`` of shape ``(len(queries), <= k)``, best first.
    """
    best_scores = np.empty((len(queries), 0), dtype=np.float32)
    best_labels = np.empty((len(queries), 0), dtype=np.int64)
    for labels, vectors in chunks:
        scores = np.concatenate([best_scores, queries @ vectors.T], axis=1)
        candidates = np.concatenate(
            [best_labels, np.broadcast_to(np.asarray(labels, dtype=np.int64), (len(queries), len(labels)))],
            axis=1,
        )
        best_scores, columns = top_k(scores, k)
        best_labels = np.take_along_axis(candidates, columns, axis=1)
    return best_scores, best_labels
