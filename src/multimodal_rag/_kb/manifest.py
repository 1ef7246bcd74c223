"""The knowledge base's ``manifest.json``: what it is made of and which files hold it.

A manifest names the format and its version, the library version that wrote it,
each component's kind and config, the embedder's fingerprint and dimension, and
the snapshot directory with the size and SHA-256 checksum of every file in it.
It is the last thing a save writes, atomically, so a knowledge base on disk is
always the state of one complete save.

`Manifest` is the one place that knows the file's keys; everything else
reads its attributes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attrs import evolve, field, frozen

from multimodal_rag.errors import KnowledgeBaseNotFoundError, ManifestError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "AdapterEntry",
    "Component",
    "EmbedderEntry",
    "Manifest",
    "read_manifest",
]

FORMAT_NAME = "multimodal-rag-knowledge-base"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"


@frozen(kw_only=True)
class Component:
    """A component as the manifest records it: its registry kind and the config that rebuilds it."""

    kind: str
    config: dict[str, Any] = field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": self.config}


@frozen(kw_only=True)
class EmbedderEntry(Component):
    """The embedder's entry, with what a reopening embedder must match.

    ``runtime`` is what the saving embedder ran as (engine, precision, fallbacks), for
    people reading the knowledge base; nothing is rebuilt from it. ``random_weights`` is
    what the weights file said of itself (see `multimodal_rag._random_checkpoint`): the
    knowledge base's similarities are then meaningless, and ``info`` and every command say
    so. A fact about the weights, not a setting, so it is no part of ``config``.
    """

    fingerprint: str
    dim: int
    runtime: dict[str, Any] = field(factory=dict)
    random_weights: bool = False

    def to_dict(self) -> dict[str, Any]:
        entry = {**super().to_dict(), "fingerprint": self.fingerprint, "dim": self.dim}
        if self.runtime:
            entry["runtime"] = self.runtime
        # Absent when false, so manifests of real models are written as before.
        if self.random_weights:
            entry["random_weights"] = True
        return entry


@frozen(kw_only=True)
class AdapterEntry:
    """The adapter applied to the knowledge base's vectors (see `multimodal_rag.adapter`).

    ``sha256`` is the adapter's own digest (what it computes), which the knowledge base's
    fingerprint names; the file's checksum is in the manifest's ``files`` like any other.
    """

    kind: str
    rank: int
    sha256: str
    file: str
    fitted_at: str | None = None
    report: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rank": self.rank,
            "sha256": self.sha256,
            "file": self.file,
            "fitted_at": self.fitted_at,
            "report": self.report,
        }

    @classmethod
    def from_dict(cls, entry: Any, *, source: str) -> AdapterEntry:
        if not isinstance(entry, dict):
            raise ManifestError(f"{source}: the adapter entry is not an object")
        strings = ("kind", "sha256", "file")
        if not all(isinstance(entry.get(key), str) for key in strings) or not _is_int(entry.get("rank")):
            raise ManifestError(f"{source}: the adapter entry needs kind, rank, sha256 and file")
        optional = {key: entry.get(key) for key in ("fitted_at", "report")}
        if not all(value is None or isinstance(value, str) for value in optional.values()):
            raise ManifestError(f"{source}: the adapter's fitted_at and report must be strings")
        return cls(kind=entry["kind"], rank=entry["rank"], sha256=entry["sha256"], file=entry["file"], **optional)


@frozen(kw_only=True)
class Manifest:
    """What one save of a knowledge base wrote.

    Attributes:
        embedder: Kind, config, fingerprint and dimension of the embedder.
        vector_store: Kind and config of the vector store.
        description_store: Kind and config of the description store.
        generation: The current snapshot, ``snapshots/<generation:08d>/``.
        files: Each snapshot file (relative to the snapshot) and its SHA-256.
        sizes: Each snapshot file and its size in bytes (absent before 0.2).
        counts: ``{"vectors": n, "descriptions": n}`` at the save.
        created_at: When the knowledge base was created (UTC, ISO 8601).
        saved_at: When this save was made.
        library_version: The version of this library that wrote it.
        adapter: The adapter applied to the stored vectors, or ``None`` (the raw vectors).
        text_reader: Kind and config of the reader that reads the text in every image added
            (OCR), or ``None`` when the knowledge base reads none. Absent from manifests
            without it, so those are written as before and earlier versions read them.
    """

    embedder: EmbedderEntry
    vector_store: Component
    description_store: Component
    generation: int = 0
    files: dict[str, str] = field(factory=dict)
    sizes: dict[str, int] = field(factory=dict)
    counts: dict[str, int] = field(factory=dict)
    created_at: str | None = None
    saved_at: str | None = None
    library_version: str | None = None
    adapter: AdapterEntry | None = None
    text_reader: Component | None = None

    @classmethod
    def of(
        cls,
        embedder: Any,
        vector_store: Any,
        description_store: Any,
        *,
        created_at: str | None,
        adapter: AdapterEntry | None = None,
        text_reader: Component | None = None,
    ) -> Manifest:
        """The manifest of these parts, before a save adds its snapshot's files."""
        from multimodal_rag._registry import kind_of, manifest_embedder_config

        embedder_kind = kind_of(embedder)
        return cls(
            embedder=EmbedderEntry(
                kind=embedder_kind,
                # Only what identifies the model: how it ran is in ``runtime``, for reading.
                config=manifest_embedder_config(embedder_kind, embedder.config()),
                fingerprint=embedder.fingerprint,
                dim=embedder.dim,
                runtime=_runtime_of(embedder),
                random_weights=getattr(embedder, "random_weights", False) is True,
            ),
            vector_store=Component(kind=kind_of(vector_store), config=vector_store.config()),
            description_store=Component(kind=kind_of(description_store), config=description_store.config()),
            counts={
                "vectors": len(vector_store),
                "descriptions": len(description_store),
                **_text_counts(description_store, text_reader),
            },
            created_at=created_at,
            adapter=adapter,
            text_reader=text_reader,
        )

    def saved(self, *, generation: int, files: dict[str, str], sizes: dict[str, int], saved_at: str, library_version: str) -> Manifest:
        """This manifest as a save of snapshot ``generation`` with these files writes it."""
        return evolve(
            self,
            generation=generation,
            files=files,
            sizes=sizes,
            saved_at=saved_at,
            created_at=self.created_at or saved_at,
            library_version=library_version,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``manifest.json``."""
        data: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "library_version": self.library_version,
            "generation": self.generation,
            "created_at": self.created_at,
            "saved_at": self.saved_at,
            "embedder": self.embedder.to_dict(),
            "vector_store": self.vector_store.to_dict(),
            "description_store": self.description_store.to_dict(),
            "counts": self.counts,
            "files": self.files,
            "sizes": self.sizes,
        }
        # Absent without one, so knowledge bases without an adapter are written as before.
        if self.adapter is not None:
            data["adapter"] = self.adapter.to_dict()
        if self.text_reader is not None:
            data["text_reader"] = self.text_reader.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "the manifest") -> Manifest:
        """Validate a manifest's JSON object.

        Raises:
            ManifestError: Not a knowledge-base manifest, an unknown format version, or a
                field of the wrong shape; names ``source``.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise ManifestError(f"{source} is not a multimodal_rag knowledge-base manifest")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ManifestError(
                f"{source} has format version {version!r}; this library reads version "
                f"{FORMAT_VERSION} (written by multimodal_rag {data.get('library_version', '?')})"
            )
        entries = {}
        for key in ("embedder", "vector_store", "description_store"):
            entry = data.get(key)
            if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
                raise ManifestError(f"{source} lacks the {key!r} entry or its kind")
            if not isinstance(entry.get("config", {}), dict):
                raise ManifestError(f"{source}: the config of {key!r} is not an object")
            entries[key] = entry
        embedder = entries["embedder"]
        if not _is_int(embedder.get("dim")) or not isinstance(embedder.get("fingerprint"), str):
            raise ManifestError(f"{source} lacks the embedder's dim or fingerprint")
        if not isinstance(embedder.get("random_weights", False), bool):
            raise ManifestError(f"{source}: the embedder's random_weights must be true or false")
        generation, files, sizes = data.get("generation"), data.get("files"), data.get("sizes", {})
        if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0 or not isinstance(files, dict):
            raise ManifestError(f"{source} lacks the snapshot generation or its file list")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise ManifestError(f"{source}: the file list must map paths to checksums")
        if not isinstance(sizes, dict) or not all(isinstance(k, str) and _is_int(v) for k, v in sizes.items()):
            raise ManifestError(f"{source}: the file sizes must map paths to numbers")
        counts = data.get("counts", {})
        if not isinstance(counts, dict):
            raise ManifestError(f"{source}: the counts are not an object")
        optional = {key: data.get(key) for key in ("created_at", "saved_at", "library_version")}
        if not all(value is None or isinstance(value, str) for value in optional.values()):
            raise ManifestError(f"{source}: created_at, saved_at and library_version must be strings")
        adapter = data.get("adapter")
        reader = data.get("text_reader")
        if reader is not None and (
            not isinstance(reader, dict) or not isinstance(reader.get("kind"), str) or not isinstance(reader.get("config", {}), dict)
        ):
            raise ManifestError(f"{source}: the text_reader entry needs a kind and a config object")
        return cls(
            text_reader=None if reader is None else Component(kind=reader["kind"], config=reader.get("config", {})),
            adapter=None if adapter is None else AdapterEntry.from_dict(adapter, source=source),
            embedder=EmbedderEntry(
                kind=embedder["kind"],
                config=embedder.get("config", {}),
                fingerprint=embedder["fingerprint"],
                dim=embedder["dim"],
                runtime=embedder["runtime"] if isinstance(embedder.get("runtime"), dict) else {},
                random_weights=embedder.get("random_weights", False),
            ),
            vector_store=Component(kind=entries["vector_store"]["kind"], config=entries["vector_store"].get("config", {})),
            description_store=Component(
                kind=entries["description_store"]["kind"], config=entries["description_store"].get("config", {})
            ),
            generation=generation,
            files=files,
            sizes=sizes,
            counts={k: v for k, v in counts.items() if isinstance(k, str) and _is_int(v)},
            **optional,
        )

    @classmethod
    def read(cls, directory: Path) -> Manifest:
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
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, RecursionError, json.JSONDecodeError) as exc:
            raise ManifestError(f"cannot read {str(path)!r}: {exc}") from exc
        return cls.from_dict(data, source=repr(str(path)))

    def write(self, directory: Path) -> None:
        """Replace the manifest in ``directory`` with this one, atomically and durably."""
        from multimodal_rag._kb.fileio import atomic_write_json

        atomic_write_json(Path(directory) / MANIFEST_FILE, self.to_dict())


def _text_counts(description_store: Any, text_reader: Component | None) -> dict[str, int]:
    """With a reader on, how many records have their image's text read, and how many of those hold text."""
    if text_reader is None:
        return {}
    read = [record.ocr for record in description_store if record.ocr is not None]
    return {"text_read": len(read), "with_text": sum(1 for ocr in read if ocr.lines)}


def _runtime_of(embedder: Any) -> dict[str, Any]:
    """An embedder's optional ``runtime`` report (CLIP's engine and precision), if it has one."""
    runtime = getattr(embedder, "runtime", None)
    return dict(runtime) if isinstance(runtime, dict) else {}


def read_manifest(directory: Path) -> Manifest:
    """`Manifest.read`."""
    return Manifest.read(directory)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
