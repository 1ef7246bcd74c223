"""The parts of a search: the query vector, the mode, a filter resolved to ids (or kept as a
metadata filter for a vector store that applies it), exact search among the ids a filter
allows, and hits built from neighbours and records.

`Querying` (the facade's search and answer methods) composes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

from multimodal_rag.errors import InvalidInputError
from multimodal_rag.protocols import DescriptionStore, Embedder, IdFilter, VectorStore
from multimodal_rag.types import Hit, ImageInput, Neighbor, Record

if TYPE_CHECKING:
    import numpy as np

    from multimodal_rag.filters import MetadataFilter
    from multimodal_rag.types import Signal

__all__ = [
    "CHANNEL_DEPTH",
    "MODES",
    "RERANK_CANDIDATES",
    "SUBSET_SEARCH",
    "SUBSET_SHARE",
    "Filter",
    "choose_mode",
    "exact_among",
    "filter_ids",
    "fuse_channels",
    "id_filter",
    "identifier_channel",
    "make_hits",
    "matching_set",
    "native_filter",
    "query_vector",
]

#: A search filter: metadata conditions (see `multimodal_rag.filters`), or a predicate over ids.
Filter = Union[Mapping[str, Any], "MetadataFilter", IdFilter]
#: Search modes.
MODES = ("vector", "lexical", "hybrid")
#: Results each channel contributes to a fusion: fusing deeper lists than ``k`` lets an id that
#: both channels rank moderately well overtake one that only one channel ranks first.
CHANNEL_DEPTH = 50
#: Candidates a reranker is given.
RERANK_CANDIDATES = 20
#: A filter allowing at most this many ids, or this share of the store, is searched exactly
#: among those ids' vectors instead of through the index.
SUBSET_SEARCH = 4096
SUBSET_SHARE = 0.05


def query_vector(
    embedder: Embedder, image: ImageInput | None, text: str | None, *, text_weight: float, adapter: Any = None
) -> np.ndarray:
    """The unit query vector for an image, a text, or both (see [`MultimodalRAG.embed_query`][multimodal_rag._rag.MultimodalRAG.embed_query]).

    With an ``adapter`` (the knowledge base's, see `multimodal_rag.adapter`), the image
    vector goes through its image map and the text vector through its text map before they
    are combined: each side is mapped as it was trained, and the sum lives in the index's space.

    Raises:
        InvalidInputError: Neither an image nor a text, a text that is not a string, a
            weight outside [0, 1], an embedder's output that is not a finite vector, or
            image and text vectors that cancel out.
    """
    import numpy as np

    from multimodal_rag._text_normalisation import normalise
    from multimodal_rag._validation import check_vectors

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
        if adapter is not None:
            image_vector = adapter.apply(image_vector, "image")
        vector += (1.0 - text_weight if text is not None else 1.0) * image_vector[0]
    if text is not None:
        # The same spelling the lexical channel searches: a query typed with Arabic letter forms
        # or another script's digits gets the vector of its Persian, ASCII-digit spelling.
        text_vector = check_vectors(embedder.embed_texts([normalise(text)]), dim, count=1, what="text query vectors")
        if adapter is not None:
            text_vector = adapter.apply(text_vector, "text")
        vector += (text_weight if image is not None else 1.0) * text_vector[0]
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        raise InvalidInputError("the image and text vectors cancel out; change text_weight")
    return vector / norm


def id_filter(description_store: DescriptionStore, filter: Filter | None) -> IdFilter | None:
    """The predicate over ids that a vector store applies for ``filter``.

    A metadata filter is parsed ([`parse_filter`][multimodal_rag.filters.parse_filter]) before
    anything is searched, and the description store finds the ids it matches in one call
    ([`matching_ids`][multimodal_rag.protocols.DescriptionStore.matching_ids], a single query on
    SQLite and PostgreSQL). The predicate is that set's membership test, which Milvus
    sends to the server as an ``id in [...]`` expression when the set is small enough.

    Raises:
        InvalidInputError: ``filter`` is neither a mapping nor a callable, or a mapping
            that is not a valid filter (the message names the bad part).
    """
    if filter is None or callable(filter):
        return filter
    return matching_set(description_store, filter).__contains__


def matching_set(description_store: DescriptionStore, filter: Any) -> set[str]:
    """The ids whose metadata a (mapping) filter matches, found by the description store at once.

    Raises:
        InvalidInputError: Not a mapping, or not a valid filter (the message names the bad part).
    """
    from multimodal_rag.filters import MetadataFilter, parse_filter

    if not isinstance(filter, (Mapping, MetadataFilter)):
        raise InvalidInputError(f"filter must be a mapping or a callable, got {type(filter).__name__}")
    parsed = parse_filter(filter)
    # A duck-typed store without the method gets the protocol's default: a scan.
    matching = getattr(description_store, "matching_ids", None)
    ids = matching(parsed) if callable(matching) else DescriptionStore.matching_ids(description_store, parsed)
    return set(ids)


def native_filter(vector_store: VectorStore, filter: Filter | None) -> MetadataFilter | None:
    """The parsed metadata filter, when ``vector_store`` applies metadata filters itself
    ([`filters_metadata`][multimodal_rag.protocols.VectorStore.filters_metadata]) so the search is one
    request; otherwise None, and the ids come from the description store.
    """
    if filter is None or callable(filter) or not getattr(vector_store, "filters_metadata", False):
        return None
    from multimodal_rag.filters import MetadataFilter, parse_filter

    if not isinstance(filter, (Mapping, MetadataFilter)):
        return None  # refused, with the reason, where the ids are found
    return parse_filter(filter)


def choose_mode(mode: str | None, image: ImageInput | None, text: str | None, store: DescriptionStore) -> str:
    """The search mode: the one asked for, checked, or hybrid for a text when the store has full text.

    Raises:
        InvalidInputError: An unknown mode; lexical or hybrid without a text or full text.
    """
    if image is None and text is None:
        raise InvalidInputError("search needs an image, a text, or both")
    full_text = bool(getattr(store, "full_text", False))
    if mode is None:
        return "hybrid" if text is not None and full_text else "vector"
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if mode != "vector":
        if text is None:
            raise InvalidInputError(f"a {mode} search needs a text: the words are what it looks for")
        if not full_text:
            raise InvalidInputError(
                f"the description store {type(store).__name__} has no full-text index, so only mode='vector' "
                "searches it"
            )
    return mode


def filter_ids(store: DescriptionStore, filter: Filter | None) -> tuple[set[str] | None, IdFilter | None]:
    """For the lexical channel: the ids a metadata filter allows (pushed down to the store),
    or the predicate a callable filter is."""
    if filter is None:
        return None, None
    if callable(filter):
        return None, filter
    return matching_set(store, filter), None


def identifier_channel(
    store: DescriptionStore, text: str, fetch: int, allowed: set[str] | None, predicate: IdFilter | None
) -> list[tuple[str, float, list[str]]]:
    """The identifier channel of a lexical or hybrid search: the records holding the text's
    identifiers (``(id, score, forms matched)``), or nothing when the store keeps no identifier index
    or the text has no identifier."""
    if not getattr(store, "identifier_search", False):
        return []
    found = store.search_identifiers(text, fetch if predicate is None else 4 * fetch, ids=allowed)
    if predicate is not None:
        found = [entry for entry in found if predicate(entry[0])][:fetch]
    return found


def fuse_channels(
    vector: Sequence[tuple[str, float]] | None, words: Mapping[str, Sequence[tuple[str, float]]], fusion: str
) -> list[tuple[str, float, dict[str, Signal]]]:
    """A lexical or hybrid search's ranking: the ``vector`` channel (None in lexical mode) fused with
    the ``words`` channels (``lexical``, and ``identifier`` when the text has identifiers), in that
    order, which breaks ties. The lexical channel alone is its own ranking."""
    from multimodal_rag._fusion import fuse
    from multimodal_rag.types import Signal

    channels: dict[str, Sequence[tuple[str, float]]] = {} if vector is None else {"vector": vector}
    channels.update(words)
    if len(channels) == 1:
        return [(id_, score, {name: Signal(rank=rank, score=score)}) for name, ranked in channels.items() for rank, (id_, score) in enumerate(ranked, 1)]
    return fuse(channels, method=fusion)


def exact_among(store: VectorStore, query: Any, allowed: set[str], k: int) -> list[Neighbor]:
    """The ``k`` nearest of the ``allowed`` ids, by exact comparison with their stored vectors."""
    import numpy as np

    from multimodal_rag.vectors.ranking import top_k

    ids = sorted(id_ for id_ in allowed if id_ in store)
    if not ids:
        return []
    vectors = np.asarray(store.get_vectors(ids), dtype=np.float32)
    scores, columns = top_k((vectors @ np.asarray(query, dtype=np.float32))[None, :], k)
    return [Neighbor(id=ids[c], score=float(sc)) for sc, c in zip(scores[0].tolist(), columns[0].tolist())]


def make_hits(neighbors: Sequence[Neighbor], records: Mapping[str, Record]) -> list[Hit]:
    """Hits, in the neighbours' order, with each one's stored record (an empty one where missing)."""
    from multimodal_rag.types import Signal

    hits = []
    for rank, neighbor in enumerate(neighbors, start=1):
        record = records.get(neighbor.id) or Record(id=neighbor.id)
        hits.append(
            Hit(
                id=neighbor.id,
                score=neighbor.score,
                similarity=neighbor.score,
                signals={"vector": Signal(rank=rank, score=neighbor.score)},
                image_path=record.image_path,
                description=record.description,
                metadata=record.metadata,
                ocr=record.ocr,
            )
        )
    return hits
