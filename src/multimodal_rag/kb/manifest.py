"""The knowledge base's ``manifest.json``: what it is made of and which files hold it.

A manifest names the format and its version, the library version that wrote it,
each component's kind and config, the embedder's fingerprint and dimension, and
the snapshot directory with a SHA-256 checksum of every file in it. It is the
last thing a save writes, atomically, so a knowledge base on disk is always the
state of one complete save.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from multimodal_rag.errors import KnowledgeBaseNotFoundError, ManifestError

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "MANIFEST_FILE", "read_manifest"]

FORMAT_NAME = "multimodal-rag-knowledge-base"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"

_COMPONENTS = ("embedder", "vector_store", "description_store")


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read and validate the manifest of the knowledge base in ``directory``.

    Raises:
        KnowledgeBaseNotFoundError: No manifest there.
        ManifestError: Not JSON, not a knowledge-base manifest, an unknown format
            version, or missing fields.
    """
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise KnowledgeBaseNotFoundError(
            f"no knowledge base at {str(directory)!r} (missing {MANIFEST_FILE}); "
            "create one with MultimodalRAG.create()"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"cannot read {str(path)!r}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ManifestError(f"{str(path)!r} is not a multimodal_rag knowledge-base manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ManifestError(
            f"{str(path)!r} has format version {version!r}; this library reads version "
            f"{FORMAT_VERSION} (written by multimodal_rag {manifest.get('library_version', '?')})"
        )
    for key in _COMPONENTS:
        entry = manifest.get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
            raise ManifestError(f"{str(path)!r} lacks the {key!r} entry or its kind")
        if not isinstance(entry.get("config", {}), dict):
            raise ManifestError(f"{str(path)!r}: the config of {key!r} is not an object")
    embedder = manifest["embedder"]
    if not isinstance(embedder.get("dim"), int) or not isinstance(embedder.get("fingerprint"), str):
        raise ManifestError(f"{str(path)!r} lacks the embedder's dim or fingerprint")
    if not isinstance(manifest.get("generation"), int) or not isinstance(manifest.get("files"), dict):
        raise ManifestError(f"{str(path)!r} lacks the snapshot generation or its file list")
    return manifest
