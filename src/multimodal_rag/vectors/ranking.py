"""Ranking shared by the vector stores: top-k selection, exact search in chunks, and
filtered search by over-fetching."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["exact_top_k", "filtered_search", "top_k"]


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
