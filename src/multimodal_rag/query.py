"""A search, from the caller's terms to the stores' and back: the query vector, the filter, the hits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from multimodal_rag.errors import InvalidInputError, NotFoundError
from multimodal_rag.protocols import DescriptionStore, Embedder, IdFilter
from multimodal_rag.types import Hit, ImageInput, Neighbor, Record

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Filter", "id_filter", "make_hits", "query_vector"]

#: A search filter: metadata that must match exactly, or a predicate over ids.
Filter = Mapping[str, Any] | IdFilter


def query_vector(embedder: Embedder, image: ImageInput | None, text: str | None, *, text_weight: float) -> np.ndarray:
    """The unit query vector for an image, a text, or both (see :meth:`MultimodalRAG.embed_query`).

    Raises:
        InvalidInputError: Neither an image nor a text, a text that is not a string, a
            weight outside [0, 1], an embedder's output that is not a finite vector, or
            image and text vectors that cancel out.
    """
    import numpy as np

    from multimodal_rag.validation import check_vectors

    if image is None and text is None:
        raise InvalidInputError("search needs an image, a text, or both")
    if text is not None and not isinstance(text, str):
        raise InvalidInputError(f"text must be a string, got {type(text).__name__}")
    if not 0.0 <= text_weight <= 1.0:
        raise InvalidInputError(f"text_weight must be between 0 and 1, got {text_weight}")
    dim = embedder.dim
    vector = np.zeros(dim, dtype=np.float32)
    # A custom embedder's output is checked like stored vectors are: NaN, shape, dtype.
    if image is not None:
        image_vector = check_vectors(embedder.embed_images([image]), dim, count=1, what="image query vectors")
        vector += (1.0 - text_weight if text is not None else 1.0) * image_vector[0]
    if text is not None:
        text_vector = check_vectors(embedder.embed_texts([text]), dim, count=1, what="text query vectors")
        vector += (text_weight if image is not None else 1.0) * text_vector[0]
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        raise InvalidInputError("the image and text vectors cancel out; change text_weight")
    return vector / norm


def id_filter(description_store: DescriptionStore, filter: Filter | None) -> IdFilter | None:
    """The predicate over ids that a vector store applies for ``filter``.

    Raises:
        InvalidInputError: ``filter`` is neither a mapping nor a callable.
    """
    if filter is None or callable(filter):
        return filter
    if not isinstance(filter, Mapping):
        raise InvalidInputError(f"filter must be a mapping or a callable, got {type(filter).__name__}")
    wanted = dict(filter)

    def keep(id_: str) -> bool:
        try:
            metadata = description_store.get(id_).metadata
        except NotFoundError:
            return False
        return all(metadata.get(key) == value for key, value in wanted.items())

    return keep


def make_hits(neighbors: Sequence[Neighbor], records: Mapping[str, Record]) -> list[Hit]:
    """Hits, in the neighbours' order, with each one's stored record (an empty one where missing)."""
    hits = []
    for neighbor in neighbors:
        record = records.get(neighbor.id) or Record(id=neighbor.id)
        hits.append(
            Hit(
                id=neighbor.id,
                score=neighbor.score,
                image_path=record.image_path,
                description=record.description,
                metadata=record.metadata,
            )
        )
    return hits
