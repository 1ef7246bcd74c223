"""What reading the text of a knowledge base's images did."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from multimodal_rag.types import Skipped

__all__ = ["ReadTextResult"]


def _ids(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _skipped(value: Iterable[Skipped]) -> tuple[Skipped, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class ReadTextResult:
    """What [`MultimodalRAG.read_text`][multimodal_rag._rag.MultimodalRAG.read_text] did.

    Attributes:
        read: Ids whose text was read now (an image without text counts: it stores an empty result).
        skipped: Images whose text could not be read, and why (``source`` is the id).
    """

    read: tuple[str, ...] = attrs.field(converter=_ids, default=())
    skipped: tuple[Skipped, ...] = attrs.field(converter=_skipped, default=())

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values."""
        return {"read": list(self.read), "skipped": [s.to_dict() for s in self.skipped]}
