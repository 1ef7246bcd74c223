"""Multimodal retrieval-augmented generation: find the knowledge-base images most like a
photo or a text, and answer questions about it from their descriptions.

Every public name is importable from here. Names resolve on first use (PEP 562),
so ``import multimodal_rag`` stays fast and pulls in neither torch, faiss nor openai
until a component that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from multimodal_rag._version import __version__

# Public name -> module that defines it. Keep sorted.
_EXPORTS: dict[str, str] = {
    "Adapter": "multimodal_rag.adapter.projection",
    "AdapterReport": "multimodal_rag.adapter.fitting",
    "AddResult": "multimodal_rag.types",
    "Answer": "multimodal_rag.types",
    "AnswerStream": "multimodal_rag.streaming",
    "Answerer": "multimodal_rag.protocols",
    "AnswererAuthenticationError": "multimodal_rag.errors",
    "AnswererBadRequestError": "multimodal_rag.errors",
    "AnswererConnectionError": "multimodal_rag.errors",
    "AnswererError": "multimodal_rag.errors",
    "AnswererRateLimitError": "multimodal_rag.errors",
    "AnswererTimeoutError": "multimodal_rag.errors",
    "AsyncAnswerStream": "multimodal_rag.streaming",
    "BackendConnectionError": "multimodal_rag.errors",
    "BackendError": "multimodal_rag.errors",
    "CLIPEmbedder": "multimodal_rag.embedders.clip",
    "CorruptFileError": "multimodal_rag.errors",
    "DescribeResult": "multimodal_rag.types",
    "DescriptionStore": "multimodal_rag.protocols",
    "DimensionMismatchError": "multimodal_rag.errors",
    "EmbeddedBatch": "multimodal_rag.protocols",
    "Embedder": "multimodal_rag.protocols",
    "EmbedderMismatchError": "multimodal_rag.errors",
    "ExtractiveAnswerer": "multimodal_rag.answerers.extractive",
    "FaissFlatStore": "multimodal_rag.vectors.faiss_flat",
    "FaissHNSWStore": "multimodal_rag.vectors.faiss_hnsw",
    "FaissIVFStore": "multimodal_rag.vectors.faiss_ivf",
    "HNSWLibStore": "multimodal_rag.vectors.hnswlib_store",
    "Hit": "multimodal_rag.types",
    "IdFilter": "multimodal_rag.protocols",
    "ImageDescriber": "multimodal_rag.protocols",
    "ImageError": "multimodal_rag.errors",
    "InvalidInputError": "multimodal_rag.errors",
    "JSONLDescriptionStore": "multimodal_rag.descriptions.jsonl",
    "KnowledgeBaseAccessError": "multimodal_rag.errors",
    "KnowledgeBaseError": "multimodal_rag.errors",
    "KnowledgeBaseExistsError": "multimodal_rag.errors",
    "KnowledgeBaseLockedError": "multimodal_rag.errors",
    "KnowledgeBaseNotFoundError": "multimodal_rag.errors",
    "ManifestError": "multimodal_rag.errors",
    "MetadataFilter": "multimodal_rag.filters",
    "MigrationError": "multimodal_rag.errors",
    "MigrationReport": "multimodal_rag.migrate",
    "MilvusVectorStore": "multimodal_rag.vectors.milvus",
    "MissingDependencyError": "multimodal_rag.errors",
    "ModelLoadError": "multimodal_rag.errors",
    "MultimodalRAG": "multimodal_rag.rag",
    "MultimodalRAGError": "multimodal_rag.errors",
    "Neighbor": "multimodal_rag.types",
    "NotFoundError": "multimodal_rag.errors",
    "OpenAIAnswerer": "multimodal_rag.answerers.openai",
    "OpenCLIPEmbedder": "multimodal_rag.embedders.openclip",
    "PostgresDescriptionStore": "multimodal_rag.descriptions.postgres",
    "PrecisionError": "multimodal_rag.errors",
    "Problem": "multimodal_rag.verify",
    "ProblemKind": "multimodal_rag.verify",
    "PromptTemplate": "multimodal_rag.answerers.prompt",
    "ReadOnlyError": "multimodal_rag.errors",
    "Record": "multimodal_rag.types",
    "RepairReport": "multimodal_rag.verify",
    "Reranker": "multimodal_rag.protocols",
    "SQLiteDescriptionStore": "multimodal_rag.descriptions.sqlite",
    "Skipped": "multimodal_rag.types",
    "Source": "multimodal_rag.types",
    "UnknownBackendError": "multimodal_rag.errors",
    "VectorStore": "multimodal_rag.protocols",
    "VerificationReport": "multimodal_rag.verify",
    "VisionLLMReranker": "multimodal_rag.rerankers.vision_llm",
    "make_random_clip_checkpoint": "multimodal_rag.random_checkpoint",
    "migrate": "multimodal_rag.migrate",
    "parse_filter": "multimodal_rag.filters",
    "render_contact_sheet": "multimodal_rag.contact_sheet",
}

# Written out, not computed from _EXPORTS: type checkers only read a literal list.
# tests/test_package.py checks that it is sorted and matches _EXPORTS and the imports below.
__all__ = [
    "Adapter",
    "AdapterReport",
    "AddResult",
    "Answer",
    "AnswerStream",
    "Answerer",
    "AnswererAuthenticationError",
    "AnswererBadRequestError",
    "AnswererConnectionError",
    "AnswererError",
    "AnswererRateLimitError",
    "AnswererTimeoutError",
    "AsyncAnswerStream",
    "BackendConnectionError",
    "BackendError",
    "CLIPEmbedder",
    "CorruptFileError",
    "DescribeResult",
    "DescriptionStore",
    "DimensionMismatchError",
    "EmbeddedBatch",
    "Embedder",
    "EmbedderMismatchError",
    "ExtractiveAnswerer",
    "FaissFlatStore",
    "FaissHNSWStore",
    "FaissIVFStore",
    "HNSWLibStore",
    "Hit",
    "IdFilter",
    "ImageDescriber",
    "ImageError",
    "InvalidInputError",
    "JSONLDescriptionStore",
    "KnowledgeBaseAccessError",
    "KnowledgeBaseError",
    "KnowledgeBaseExistsError",
    "KnowledgeBaseLockedError",
    "KnowledgeBaseNotFoundError",
    "ManifestError",
    "MetadataFilter",
    "MigrationError",
    "MigrationReport",
    "MilvusVectorStore",
    "MissingDependencyError",
    "ModelLoadError",
    "MultimodalRAG",
    "MultimodalRAGError",
    "Neighbor",
    "NotFoundError",
    "OpenAIAnswerer",
    "OpenCLIPEmbedder",
    "PostgresDescriptionStore",
    "PrecisionError",
    "Problem",
    "ProblemKind",
    "PromptTemplate",
    "ReadOnlyError",
    "Record",
    "RepairReport",
    "Reranker",
    "SQLiteDescriptionStore",
    "Skipped",
    "Source",
    "UnknownBackendError",
    "VectorStore",
    "VerificationReport",
    "VisionLLMReranker",
    "__version__",
    "make_random_clip_checkpoint",
    "migrate",
    "parse_filter",
    "render_contact_sheet",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'multimodal_rag' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    # The real names, for type checkers and IDEs; the literal __all__ above marks them as
    # re-exported (mypy --strict and pyright --strict read it).
    from multimodal_rag.adapter.fitting import AdapterReport
    from multimodal_rag.adapter.projection import Adapter
    from multimodal_rag.answerers.extractive import ExtractiveAnswerer
    from multimodal_rag.answerers.openai import OpenAIAnswerer
    from multimodal_rag.answerers.prompt import PromptTemplate
    from multimodal_rag.contact_sheet import render_contact_sheet
    from multimodal_rag.descriptions.jsonl import JSONLDescriptionStore
    from multimodal_rag.descriptions.postgres import PostgresDescriptionStore
    from multimodal_rag.descriptions.sqlite import SQLiteDescriptionStore
    from multimodal_rag.embedders.clip import CLIPEmbedder
    from multimodal_rag.embedders.openclip import OpenCLIPEmbedder
    from multimodal_rag.errors import (
        AnswererAuthenticationError,
        AnswererBadRequestError,
        AnswererConnectionError,
        AnswererError,
        AnswererRateLimitError,
        AnswererTimeoutError,
        BackendConnectionError,
        BackendError,
        CorruptFileError,
        DimensionMismatchError,
        EmbedderMismatchError,
        ImageError,
        InvalidInputError,
        KnowledgeBaseAccessError,
        KnowledgeBaseError,
        KnowledgeBaseExistsError,
        KnowledgeBaseLockedError,
        KnowledgeBaseNotFoundError,
        ManifestError,
        MigrationError,
        MissingDependencyError,
        ModelLoadError,
        MultimodalRAGError,
        NotFoundError,
        PrecisionError,
        ReadOnlyError,
        UnknownBackendError,
    )
    from multimodal_rag.filters import MetadataFilter, parse_filter
    from multimodal_rag.migrate import MigrationReport, migrate
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
    from multimodal_rag.rag import MultimodalRAG
    from multimodal_rag.random_checkpoint import make_random_clip_checkpoint
    from multimodal_rag.rerankers.vision_llm import VisionLLMReranker
    from multimodal_rag.streaming import AnswerStream, AsyncAnswerStream
    from multimodal_rag.types import (
        AddResult,
        Answer,
        DescribeResult,
        Hit,
        Neighbor,
        Record,
        Skipped,
        Source,
    )
    from multimodal_rag.vectors.faiss_flat import FaissFlatStore
    from multimodal_rag.vectors.faiss_hnsw import FaissHNSWStore
    from multimodal_rag.vectors.faiss_ivf import FaissIVFStore
    from multimodal_rag.vectors.hnswlib_store import HNSWLibStore
    from multimodal_rag.vectors.milvus import MilvusVectorStore
    from multimodal_rag.verify import Problem, ProblemKind, RepairReport, VerificationReport
