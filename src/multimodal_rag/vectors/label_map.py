"""The map between a vector store's string ids and the int64 labels its index stores."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from multimodal_rag.errors import CorruptFileError, NotFoundError

__all__ = ["LabelMap"]


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
