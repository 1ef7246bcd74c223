"""Finds a component class by the kind named in a manifest.

Built-in backends are known by a short kind (``"faiss-flat"``, ``"sqlite"``) and
imported only when first used, so a knowledge base never pays for backends it
does not use. An installed package adds its own kinds through entry points,
in the groups of `ENTRY_POINT_GROUPS`:

```toml
[project.entry-points."multimodal_rag.vector_stores"]
lance = "mrag_lance:LanceVectorStore"
```

Installing a package is the user's choice, so its kinds are found like the
built-in ones (which win when names clash). Any other class is named by its
dotted path (``"mypackage.stores:MyStore"``). Because a manifest may come from
someone else, such a module is imported only when the caller allows it
(``allow_modules``): opening a knowledge base never runs code that the caller
did not choose.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from multimodal_rag.errors import UnknownBackendError

Role = Literal["embedder", "vector_store", "description_store", "answerer", "reranker", "text_reader"]

# kind -> "module:Class". Keep each role's table sorted by kind.
BUILTINS: dict[Role, dict[str, str]] = {
    "embedder": {
        "clip": "multimodal_rag.embedders.clip:CLIPEmbedder",
        "open-clip": "multimodal_rag.embedders.openclip:OpenCLIPEmbedder",
    },
    "vector_store": {
        "faiss-flat": "multimodal_rag.vectors.faiss_flat:FaissFlatStore",
        "faiss-hnsw": "multimodal_rag.vectors.faiss_hnsw:FaissHNSWStore",
        "faiss-ivf": "multimodal_rag.vectors.faiss_ivf:FaissIVFStore",
        "hnswlib": "multimodal_rag.vectors.hnswlib_store:HNSWLibStore",
        "milvus": "multimodal_rag.vectors.milvus:MilvusVectorStore",
    },
    "description_store": {
        "jsonl": "multimodal_rag.descriptions.jsonl:JSONLDescriptionStore",
        "postgres": "multimodal_rag.descriptions.postgres:PostgresDescriptionStore",
        "sqlite": "multimodal_rag.descriptions.sqlite:SQLiteDescriptionStore",
    },
    "answerer": {
        "extractive": "multimodal_rag.answerers.extractive:ExtractiveAnswerer",
        "openai": "multimodal_rag.answerers.openai:OpenAIAnswerer",
    },
    "reranker": {
        "vision-llm": "multimodal_rag.rerankers.vision_llm:VisionLLMReranker",
    },
    "text_reader": {
        "rapidocr": "multimodal_rag.ocr.rapid:RapidOCRReader",
    },
}

#: Entry-point group per role, where installed packages register their kinds.
ENTRY_POINT_GROUPS: dict[Role, str] = {
    "embedder": "multimodal_rag.embedders",
    "vector_store": "multimodal_rag.vector_stores",
    "description_store": "multimodal_rag.description_stores",
    "answerer": "multimodal_rag.answerers",
    "reranker": "multimodal_rag.rerankers",
    "text_reader": "multimodal_rag.text_readers",
}

#: The config keys a manifest may give each built-in embedder kind: what identifies the model
#: (its name, pretrained tag, weights and tokenizer files), which the fingerprint then checks.
#: How the model runs here (engine, precision, device, batch size, worker threads, cache
#: directory, pixel limit, calibration images, download folder) is the caller's choice: a
#: manifest may come from someone else, and these options write files, lift limits or spend
#: this machine's time. A kind without an entry here (a custom or installed embedder, whose
#: code the caller chose to run) gets its whole config.
EMBEDDER_MANIFEST_KEYS: dict[str, frozenset[str]] = {
    "clip": frozenset({"model", "checkpoint"}),
    "open-clip": frozenset({"model", "pretrained", "checkpoint", "tokenizer"}),
}

# Runtime settings earlier versions recorded in every manifest: dropped without a warning.
_RECORDED_RUNTIME = frozenset({"engine", "precision", "draft", "download_root"})

_log = logging.getLogger(__name__)

_PROTOCOLS = {
    "embedder": "Embedder",
    "vector_store": "VectorStore",
    "description_store": "DescriptionStore",
    "answerer": "Answerer",
    "reranker": "Reranker",
    "text_reader": "TextReader",
}


def kind_of(component: object) -> str:
    """The kind to record in a manifest for ``component``.

    Built-in classes are named by their short kind; any other class by its
    ``module:qualname`` path, so that it can be found again.
    """
    cls = type(component)
    path = f"{cls.__module__}:{cls.__qualname__}"
    for table in BUILTINS.values():
        for kind, target in table.items():
            if target == path:
                return kind
    for role in ENTRY_POINT_GROUPS:
        for kind, target in installed_kinds(role).items():
            if target == path:
                return kind
    return path


def installed_kinds(role: Role) -> dict[str, str]:
    """Kinds that installed packages register for ``role`` (entry points), as ``kind -> "module:Class"``.

    Built-in kinds are not among them, whatever a package declares.
    """
    from importlib.metadata import entry_points

    return {
        point.name: point.value
        for point in entry_points(group=ENTRY_POINT_GROUPS[role])
        if point.name not in BUILTINS[role]
    }


def manifest_embedder_config(kind: str, config: Mapping[str, Any], *, source: str | None = None) -> dict[str, Any]:
    """The part of an embedder's ``config`` that identifies the model (see
    `EMBEDDER_MANIFEST_KEYS`): what a manifest records, and what rebuilding the
    embedder from a manifest may take from it.

    Other keys are left out. Reading a manifest (``source`` names it), one that earlier
    versions did not write themselves is logged as a warning, since someone put it there.
    """
    allowed = EMBEDDER_MANIFEST_KEYS.get(kind)
    if allowed is None:
        return dict(config)
    ignored = sorted(key for key in config if key not in allowed and key not in _RECORDED_RUNTIME)
    if ignored and source is not None:
        _log.warning(
            "%s: ignoring the %s embedder option(s) %s: a manifest names only the model (%s); "
            "how it runs here is the caller's choice (pass MultimodalRAG.open(path, embedder=...))",
            source,
            kind,
            ", ".join(ignored),
            ", ".join(sorted(allowed)),
        )
    return {key: value for key, value in config.items() if key in allowed}


def resolve(role: Role, kind: str, *, allow_modules: Iterable[str] = ()) -> type[Any]:
    """Import and return the class registered as ``kind`` for ``role``.

    Args:
        role: Which protocol the class must implement.
        kind: A built-in short kind, a kind an installed package registers, or
            ``"package.module:Class"``.
        allow_modules: Top-level packages (or full module names) whose classes may be
            imported by dotted path. Built-in and installed kinds are always allowed.

    Raises:
        UnknownBackendError: Unknown kind, a module not allowed, or a class that
            does not implement the role's protocol.
    """
    from multimodal_rag import protocols

    table = BUILTINS[role]
    installed = installed_kinds(role) if kind not in table and ":" not in kind else {}
    if kind in table:
        target = table[kind]
    elif kind in installed:
        target = installed[kind]
    elif ":" in kind:
        module_name = kind.split(":", 1)[0]
        allowed = set(allow_modules)
        parts = module_name.split(".")
        if not any(".".join(parts[:i]) in allowed for i in range(1, len(parts) + 1)):
            raise UnknownBackendError(
                f"the {role.replace('_', ' ')} {kind!r} comes from module {module_name!r}, "
                f"which is not allowed; pass allow_modules=[{parts[0]!r}] to import it"
            )
        target = kind
    else:
        known = ", ".join(sorted(table)) or "none"
        plugins = f"; installed: {', '.join(sorted(installed))}" if installed else ""
        raise UnknownBackendError(
            f"unknown {role.replace('_', ' ')} kind {kind!r}; built-in kinds: {known}{plugins}; "
            f"a custom class is named 'package.module:ClassName', or registered by an installed "
            f"package in the entry-point group {ENTRY_POINT_GROUPS[role]!r}"
        )
    module_name, _, qualname = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for attr in qualname.split("."):
            obj = getattr(obj, attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownBackendError(f"cannot import {target!r} for kind {kind!r}: {exc}") from exc
    if role == "text_reader":
        from multimodal_rag import ocr

        protocol: type = ocr.TextReader
    else:
        protocol = getattr(protocols, _PROTOCOLS[role])
    if not isinstance(obj, type) or not _implements(obj, protocol):
        raise UnknownBackendError(f"{target!r} does not implement {protocol.__name__}")
    return obj


def _implements(cls: type, protocol: type) -> bool:
    if protocol in cls.__mro__:
        return True
    # Duck-typed class: it must provide every method the protocol requires.
    # TextReader declares its methods without @abstractmethod: it is named by them here.
    required = getattr(protocol, "__abstractmethods__", ()) or _TEXT_READER_METHODS
    return all(hasattr(cls, name) for name in required)


_TEXT_READER_METHODS = ("read", "config")
