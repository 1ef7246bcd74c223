"""Choosing the facade's components: a store named by its kind, or the default for a use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from multimodal_rag._registry import resolve
from multimodal_rag.errors import DimensionMismatchError

if TYPE_CHECKING:
    from multimodal_rag.protocols import Answerer, DescriptionStore, VectorStore
    from multimodal_rag.types import DescriptionStoreKind, VectorStoreKind

__all__ = ["answerer_or_default", "description_store_of", "vector_store_of"]


def vector_store_of(
    dim: int, given: VectorStoreKind | VectorStore | None, *, expected_size: int | None = None
) -> VectorStore:
    """``given`` itself, a new store of the kind it names, or (for ``None``) the default kind
    for ``expected_size`` vectors (docs/choosing-an-index.md), holding ``dim``-d vectors.

    Raises:
        DimensionMismatchError: ``given`` is a store of vectors of another dimension.
    """
    if given is None:
        from multimodal_rag.vectors.defaults import default_vector_store

        return default_vector_store(dim, expected_size=expected_size)
    if isinstance(given, str):
        store: VectorStore = resolve("vector_store", given)(dim)
        return store
    if given.dim != dim:
        raise DimensionMismatchError(
            f"the embedder makes {dim}-d vectors but the vector store holds {given.dim}-d"
        )
    return given


def description_store_of(given: DescriptionStoreKind | DescriptionStore | None) -> DescriptionStore:
    """``given`` itself, a new store of the kind it names, or (for ``None``) one in memory."""
    if given is None:
        from multimodal_rag.descriptions.sqlite import SQLiteDescriptionStore

        return SQLiteDescriptionStore()
    if isinstance(given, str):
        store: DescriptionStore = resolve("description_store", given)()
        return store
    return given


def answerer_or_default(given: Answerer | None) -> tuple[Answerer, str]:
    """``given``, or the default answerer; with the reason it is the one in use."""
    if given is not None:
        return given, "given by the caller"
    from multimodal_rag.answerers.default import choose_answerer

    return choose_answerer()
