"""The kit for writing a backend of your own: an embedder, a vector store, a description
store, an answerer, a reranker or an image describer.

Everything a backend needs from the library is importable from here: the protocols to
implement, the types they take and return, the checks the built-in backends run on their
input (so a custom store refuses exactly what they refuse, with the same errors), reading an
image as every built-in embedder does, metadata filters, and the text normalisation every
built-in full-text index applies (`index_text` for what is indexed, `search_terms` for a
query), so that a store of your own finds Persian and Arabic words however they are typed. The errors a backend raises are
in `multimodal_rag.errors`; the contract suites that hold a backend to the protocols are in
`multimodal_rag.testing`. See docs/custom-backend.md for a worked example.

Importing this module loads neither torch, faiss nor openai.
"""

from __future__ import annotations

from multimodal_rag._images import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_PIXELS,
    content_id,
    open_image,
)
from multimodal_rag._text_normalisation import index_text, search_terms
from multimodal_rag._validation import (
    MAX_ID_BYTES,
    MAX_METADATA_DEPTH,
    RESERVED_KEYS,
    check_id,
    check_ids,
    check_int,
    check_metadata,
    check_queries,
    check_question,
    check_record,
    check_timeout,
    check_vectors,
    load_json,
)
from multimodal_rag.filters import MetadataFilter, NotExpressible, parse_filter
from multimodal_rag.protocols import (
    Answerer,
    DescriptionStore,
    EmbeddedBatch,
    Embedder,
    IdFilter,
    ImageDescriber,
    Reranker,
    VectorStore,
)
from multimodal_rag.types import Answer, Hit, ImageInput, Neighbor, Record, Source, Vector, Vectors

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "MAX_ID_BYTES",
    "MAX_METADATA_DEPTH",
    "RESERVED_KEYS",
    "Answer",
    "Answerer",
    "DescriptionStore",
    "EmbeddedBatch",
    "Embedder",
    "Hit",
    "IdFilter",
    "ImageDescriber",
    "ImageInput",
    "MetadataFilter",
    "Neighbor",
    "NotExpressible",
    "Record",
    "Reranker",
    "Source",
    "Vector",
    "VectorStore",
    "Vectors",
    "check_id",
    "check_ids",
    "check_int",
    "check_metadata",
    "check_queries",
    "check_question",
    "check_record",
    "check_timeout",
    "check_vectors",
    "content_id",
    "index_text",
    "load_json",
    "open_image",
    "parse_filter",
    "search_terms",
]
