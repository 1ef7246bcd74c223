"""Multimodal retrieval-augmented generation: find the knowledge-base images most like a
photo or a text, and answer questions about it from their descriptions.

What an application needs is importable from here: the facade, the four protocols, the
built-in backends most knowledge bases use, the results it returns and the root error. The
rest of the public API lives in its own module: `multimodal_rag.errors` (every error),
`multimodal_rag.types`, `multimodal_rag.protocols`, `multimodal_rag.filters`, the backend
packages (`multimodal_rag.vectors`, `.descriptions`, `.embedders`, `.answerers`,
`.rerankers`, `.adapter`), `multimodal_rag.tools` (migration, verification reports, contact
sheets, the random checkpoint), and for writing a backend `multimodal_rag.backend` and
`multimodal_rag.testing`. Modules whose names start with an underscore are private.

Names resolve on first use (PEP 562), so ``import multimodal_rag`` stays fast and pulls in
neither torch, faiss nor openai until a component that needs them is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multimodal_rag import _lazy
from multimodal_rag import errors as _errors
from multimodal_rag._version import __version__

# Public name -> module that defines it: the one table the lazy imports come from. Keep sorted.
_EXPORTS: dict[str, str] = {
    "AddResult": "multimodal_rag.types",
    "Answer": "multimodal_rag.types",
    "AnswerStream": "multimodal_rag._streaming",
    "Answerer": "multimodal_rag.protocols",
    "AsyncAnswerStream": "multimodal_rag._streaming",
    "CLIPEmbedder": "multimodal_rag.embedders.clip",
    "DescribeResult": "multimodal_rag.types",
    "DescriptionStore": "multimodal_rag.protocols",
    "Embedder": "multimodal_rag.protocols",
    "ExtractiveAnswerer": "multimodal_rag.answerers.extractive",
    "FaissFlatStore": "multimodal_rag.vectors.faiss_flat",
    "FaissHNSWStore": "multimodal_rag.vectors.faiss_hnsw",
    "HNSWLibStore": "multimodal_rag.vectors.hnswlib_store",
    "Hit": "multimodal_rag.types",
    "JSONLDescriptionStore": "multimodal_rag.descriptions.jsonl",
    "MultimodalRAG": "multimodal_rag._rag",
    "MultimodalRAGError": "multimodal_rag.errors",
    "OpenAIAnswerer": "multimodal_rag.answerers.openai",
    "OpenCLIPEmbedder": "multimodal_rag.embedders.openclip",
    "Record": "multimodal_rag.types",
    "SQLiteDescriptionStore": "multimodal_rag.descriptions.sqlite",
    "Skipped": "multimodal_rag.types",
    "Source": "multimodal_rag.types",
    "VectorStore": "multimodal_rag.protocols",
}

# Names this module offered in 0.1 and where they are imported from now: they still
# resolve, with a DeprecationWarning, until the next minor version.
_MOVED: dict[str, str] = {
    # Every error but the root, from the one list multimodal_rag.errors keeps (a light module).
    **dict.fromkeys(
        (name for name in _errors.__all__ if name != "MultimodalRAGError"), "multimodal_rag.errors"
    ),
    "Adapter": "multimodal_rag.adapter",
    "AdapterReport": "multimodal_rag.adapter",
    "EmbeddedBatch": "multimodal_rag.protocols",
    "FaissIVFStore": "multimodal_rag.vectors",
    "IdFilter": "multimodal_rag.protocols",
    "ImageDescriber": "multimodal_rag.protocols",
    "MetadataFilter": "multimodal_rag.filters",
    "MigrationReport": "multimodal_rag.tools",
    "MilvusVectorStore": "multimodal_rag.vectors",
    "Neighbor": "multimodal_rag.types",
    "PostgresDescriptionStore": "multimodal_rag.descriptions",
    "Problem": "multimodal_rag.tools",
    "ProblemKind": "multimodal_rag.tools",
    "PromptTemplate": "multimodal_rag.answerers",
    "RepairReport": "multimodal_rag.tools",
    "Reranker": "multimodal_rag.protocols",
    "VerificationReport": "multimodal_rag.tools",
    "VisionLLMReranker": "multimodal_rag.rerankers",
    "make_random_clip_checkpoint": "multimodal_rag.tools",
    "migrate": "multimodal_rag.tools",
    "parse_filter": "multimodal_rag.filters",
    "render_contact_sheet": "multimodal_rag.tools",
}

# Written out, not computed from _EXPORTS: type checkers only read a literal list.
# tests/test_package.py checks that it is sorted and matches _EXPORTS and the imports below.
__all__ = [
    "AddResult",
    "Answer",
    "AnswerStream",
    "Answerer",
    "AsyncAnswerStream",
    "CLIPEmbedder",
    "DescribeResult",
    "DescriptionStore",
    "Embedder",
    "ExtractiveAnswerer",
    "FaissFlatStore",
    "FaissHNSWStore",
    "HNSWLibStore",
    "Hit",
    "JSONLDescriptionStore",
    "MultimodalRAG",
    "MultimodalRAGError",
    "OpenAIAnswerer",
    "OpenCLIPEmbedder",
    "Record",
    "SQLiteDescriptionStore",
    "Skipped",
    "Source",
    "VectorStore",
    "__version__",
]


def __getattr__(name: str) -> Any:
    return _lazy.attribute(__name__, name, _EXPORTS, _MOVED)


def __dir__() -> list[str]:
    return _lazy.names(__name__, _EXPORTS)


if TYPE_CHECKING:
    # The real names, for type checkers and IDEs; the literal __all__ above marks them as
    # re-exported (mypy --strict and pyright --strict read it).
    from multimodal_rag._rag import MultimodalRAG
    from multimodal_rag._streaming import AnswerStream, AsyncAnswerStream
    from multimodal_rag.answerers.extractive import ExtractiveAnswerer
    from multimodal_rag.answerers.openai import OpenAIAnswerer
    from multimodal_rag.descriptions.jsonl import JSONLDescriptionStore
    from multimodal_rag.descriptions.sqlite import SQLiteDescriptionStore
    from multimodal_rag.embedders.clip import CLIPEmbedder
    from multimodal_rag.embedders.openclip import OpenCLIPEmbedder
    from multimodal_rag.errors import MultimodalRAGError
    from multimodal_rag.protocols import Answerer, DescriptionStore, Embedder, VectorStore
    from multimodal_rag.types import AddResult, Answer, DescribeResult, Hit, Record, Skipped, Source
    from multimodal_rag.vectors.faiss_flat import FaissFlatStore
    from multimodal_rag.vectors.faiss_hnsw import FaissHNSWStore
    from multimodal_rag.vectors.hnswlib_store import HNSWLibStore
