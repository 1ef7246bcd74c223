"""Records that cross the library's public boundary."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeAlias, Union, overload

from attrs import field, frozen

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from PIL import Image as PILImage

    from multimodal_rag.ocr import ReadText

    # numpy is imported only by type checkers here; at run time the module's __getattr__
    # builds these two on first use, so importing this module does not import numpy.

    #: One embedding: a float32 array of shape ``(dim,)``.
    Vector: TypeAlias = NDArray[np.float32]
    #: Embeddings, one per row: a float32 array of shape ``(n, dim)``.
    Vectors: TypeAlias = NDArray[np.float32]

#: Anything the library accepts as an image: a file path, encoded bytes or a PIL image.
ImageInput = Union[str, "os.PathLike[str]", bytes, "PILImage.Image"]

# Closed sets of choices. A type checker refuses a misspelling (``mode="hybird"``); at run
# time the same values are checked again, so code without one still gets InvalidInputError
# or UnknownBackendError naming the value. Each set is the one place the choices are
# written: the run-time checks and the backend registry read them with ``typing.get_args``.

#: How a search finds images: by vector, by the descriptions' words, or both fused.
SearchMode = Literal["vector", "lexical", "hybrid"]
#: How hybrid search fuses its two rankings: reciprocal rank, or min-max scaled scores.
Fusion = Literal["rrf", "weighted"]
#: What an embedder runs its model on.
Engine = Literal["auto", "torch", "openvino"]
#: The numeric precision an embedder runs at; ``"auto"`` measures and picks.
Precision = Literal["auto", "fp32", "bf16", "fp16", "int8"]
#: Built-in embedder kinds.
EmbedderKind = Literal["clip", "open-clip"]
#: Built-in vector store kinds. A store of any other class (a custom or installed one) is
#: passed as an instance; manifests, which may name any kind, are read as plain strings.
VectorStoreKind = Literal["faiss-flat", "faiss-hnsw", "faiss-ivf", "hnswlib", "milvus"]
#: Built-in description store kinds; any other store is passed as an instance.
DescriptionStoreKind = Literal["jsonl", "postgres", "sqlite"]
#: Built-in answerer kinds; any other answerer is passed as an instance.
AnswererKind = Literal["extractive", "openai"]
#: Built-in reranker kinds; any other reranker is passed as an instance.
RerankerKind = Literal["vision-llm"]
#: The shapes of adapter a knowledge base fits: a low-rank residual, or a full matrix.
AdapterKind = Literal["low-rank", "linear"]
#: What an ingest does with an image it cannot read: stop, storing nothing, or skip and report it.
OnError = Literal["raise", "skip"]

__all__ = [
    "AdapterKind",
    "AddResult",
    "Answer",
    "AnswererKind",
    "DescribeResult",
    "DescriptionStoreKind",
    "EmbedderKind",
    "Engine",
    "Fusion",
    "Hit",
    "ImageInput",
    "Neighbor",
    "OnError",
    "Precision",
    "ReadTextResult",
    "Record",
    "RerankerKind",
    "SearchMode",
    "Skipped",
    "Source",
    "SyncResult",
    "Vector",
    "VectorStoreKind",
    "Vectors",
]


def __getattr__(name: str) -> Any:
    if name in ("Vector", "Vectors"):
        import numpy as np
        from numpy.typing import NDArray

        return NDArray[np.float32]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Neighbor(NamedTuple):
    """One result of a [`VectorStore`][multimodal_rag.protocols.VectorStore] search."""

    id: str
    score: float


# Typed converters: attrs gives each field's __init__ parameter its converter's parameter
# type, and type checkers cannot solve a bare ``tuple`` or ``dict`` there.
def _frozen_dict(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value or {})


def _int_dict(value: Mapping[str, int] | None) -> dict[str, int]:
    return dict(value or {})


def str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    """A tuple of strings: the typed converter for fields given any iterable of ids or paths."""
    return tuple(value)


def _pairs(value: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(value)


def _skipped(value: Iterable[Skipped]) -> tuple[Skipped, ...]:
    return tuple(value)


def _sources(value: Iterable[Source]) -> tuple[Source, ...]:
    return tuple(value)


@frozen(kw_only=True)
class Record:
    """What the description store keeps about one knowledge-base image.

    Attributes:
        id: Stable id of the image (by default a hash of its bytes).
        image_path: Where the image lives, or ``None`` when it was added from memory
            and not kept on disk. An image the knowledge base keeps (added from memory)
            is stored relative to it (``images/<hash>.png``); ``get``, ``search`` and
            ``ask`` give it as an absolute path.
        description: The text that describes the image, or ``None`` if none was given.
        metadata: Any other JSON-serialisable fields (kept from the descriptions file).
        ocr: The text a [`TextReader`][multimodal_rag.ocr.TextReader] read in the image, with
            each line's confidence and box; ``None`` when it has not been read (an empty
            result when it was read and holds no text). Kept apart from ``description``.
    """

    id: str
    image_path: str | None = None
    description: str | None = None
    metadata: dict[str, Any] = field(factory=dict, converter=_frozen_dict)
    ocr: ReadText | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object, metadata nested under ``"metadata"``.

        The knowledge base's journal stores records in this form, and the command line
        prints them in it. (A JSON Lines descriptions file keeps metadata at the top level
        instead: see `multimodal_rag.descriptions.jsonl`.) ``"ocr"`` is there only when the
        image's text was read, so records without it are written as before.
        """
        obj = {
            "id": self.id,
            "image_path": self.image_path,
            "description": self.description,
            "metadata": dict(self.metadata),
        }
        if self.ocr is not None:
            obj["ocr"] = self.ocr.to_json()
        return obj

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Record:
        """The record [`to_json`][multimodal_rag.types.Record.to_json] gave ``obj`` for.

        Raises:
            KeyError: A key of [`to_json`][multimodal_rag.types.Record.to_json]'s object is missing.
            TypeError, ValueError: ``obj`` is not a mapping, or its metadata is not one.
        """
        ocr = obj.get("ocr")
        if ocr is not None:
            from multimodal_rag.ocr import ReadText

            if not isinstance(ocr, Mapping):
                raise TypeError(f"the read text of {obj['id']!r} is not an object")
            ocr = ReadText.from_json(dict(ocr))
        return cls(
            id=obj["id"],
            image_path=obj["image_path"],
            description=obj["description"],
            metadata=obj["metadata"],
            ocr=ocr,
        )


@frozen(kw_only=True)
class Signal:
    """How one retrieval channel placed a hit.

    Attributes:
        rank: 1-based rank in that channel's results.
        score: That channel's score: cosine similarity for ``"vector"``, BM25 relevance for
            ``"lexical"``, the identifier score for ``"identifier"`` (1 for each query
            identifier found as written, less in part or in a look-alike spelling).
    """

    rank: int
    score: float


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _signals(value: Mapping[str, Signal] | None) -> dict[str, Signal]:
    return dict(value or {})


@frozen(kw_only=True)
class Hit:
    """One search result: the matched image with its description, best first.

    Attributes:
        id: The image's id.
        score: What the results are ordered by: the cosine similarity to the query in
            ``"vector"`` mode, BM25 relevance in ``"lexical"`` mode, the fused score in
            ``"hybrid"`` mode and in ``"lexical"`` mode for a query with an identifier (whose
            identifier channel is fused with the words'); higher is better in every mode.
        image_path: Path of the matched image, if known.
        description: Its description, or ``None``.
        metadata: Its metadata.
        similarity: Cosine similarity of the hit's vector to the query vector, where one was
            computed (always in ``"vector"`` and ``"hybrid"`` mode); the similarity gate of
            answerers compares it with ``min_score``.
        signals: Which channels found it (``"vector"``, ``"lexical"``, ``"identifier"``), with
            their rank and score.
        ocr: The text read in the image (see [`Record.ocr`][multimodal_rag.types.Record.ocr]), or ``None``.
        matched: Why the words found it: the query's words that its description or read text
            holds, and its identifiers that matched the query's, as written there
            (``("battery", "XG-2047")``); empty for a hit only the vector channel found.
    """

    id: str
    score: float
    image_path: str | None = None
    description: str | None = None
    metadata: dict[str, Any] = field(factory=dict, converter=_frozen_dict)
    similarity: float | None = None
    signals: dict[str, Signal] = field(factory=dict, converter=_signals)
    ocr: ReadText | None = None
    matched: tuple[str, ...] = field(factory=tuple, converter=_strings)

    def to_dict(self, *, root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The hit as JSON-ready values.

        Args:
            root: Give ``image_path`` relative to this folder (the knowledge base's), with
                ``/`` separators, so that the machine's own paths stay on the machine; the
                object keeps the absolute path.
        """
        return {
            "id": self.id,
            "score": self.score,
            "similarity": self.similarity,
            "description": self.description,
            "metadata": dict(self.metadata),
            "image_path": relative_path(self.image_path, root),
            "signals": {
                name: {"rank": s.rank, "score": s.score} for name, s in self.signals.items()
            },
            "ocr_text": self.ocr.text if self.ocr is not None else None,
            "matched": list(self.matched),
        }


@frozen(kw_only=True)
class Skipped:
    """An input that was not indexed, and why."""

    source: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The input and the reason, as JSON-ready values."""
        return {"source": self.source, "reason": self.reason}


@frozen(kw_only=True)
class AddResult(Sequence[str]):
    """What an ingest did. Behaves as the sequence of ids of every indexed input.

    Attributes:
        ids: Id of every input that is now in the knowledge base, in input order
            (new ones and ones that were already there).
        added: Ids that were new and have been embedded.
        duplicates: ``(source, id)`` of inputs whose image was already present, in
            the knowledge base or earlier in the same batch; nothing was stored twice.
        skipped: Inputs that could not be indexed (unreadable image, ...), with the reason.
        undescribed: Ids of added images that have no description.
        unread: Added images whose text could not be read (OCR was on), with the reason
            (``source`` is the input); they are stored without it, and
            [`read_text`][multimodal_rag._rag.MultimodalRAG.read_text] or a repair reads them again.
    """

    ids: tuple[str, ...] = field(converter=str_tuple)
    added: tuple[str, ...] = field(converter=str_tuple)
    duplicates: tuple[tuple[str, str], ...] = field(converter=_pairs, default=())
    skipped: tuple[Skipped, ...] = field(converter=_skipped, default=())
    undescribed: tuple[str, ...] = field(converter=str_tuple, default=())
    unread: tuple[Skipped, ...] = field(converter=_skipped, default=())

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self.ids[index]

    def __len__(self) -> int:
        return len(self.ids)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values."""
        return {
            "ids": list(self.ids),
            "added": list(self.added),
            "duplicates": [{"source": source, "id": id_} for source, id_ in self.duplicates],
            "skipped": [skipped.to_dict() for skipped in self.skipped],
            "undescribed": list(self.undescribed),
            "unread": [unread.to_dict() for unread in self.unread],
        }

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)


@frozen(kw_only=True)
class SyncResult:
    """What [`MultimodalRAG.sync`][multimodal_rag._rag.MultimodalRAG.sync] found, and did unless it was a dry run.

    Attributes:
        new: Locations (paths or URLs) of images listed in the source and not in the knowledge base.
        changed: Locations whose bytes changed since they were indexed; each is stored anew, with
            the description and metadata of the record it replaces (unless the descriptions file
            has an entry for it), and that record is removed.
        removed: Locations of images the knowledge base holds under the source that the source no
            longer lists; their records are removed.
        unchanged: How many listed images the knowledge base already holds as they are.
        dry_run: Nothing was changed: the lists above are the plan.
        added: The ingest of the new and changed images (stored, duplicates, skipped), or
            ``None`` on a dry run.
    """

    new: tuple[str, ...] = field(converter=str_tuple, default=())
    changed: tuple[str, ...] = field(converter=str_tuple, default=())
    removed: tuple[str, ...] = field(converter=str_tuple, default=())
    unchanged: int = 0
    dry_run: bool = False
    added: AddResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values."""
        return {
            "new": list(self.new),
            "changed": list(self.changed),
            "removed": list(self.removed),
            "unchanged": self.unchanged,
            "dry_run": self.dry_run,
            "added": self.added.to_dict() if self.added is not None else None,
        }


@frozen(kw_only=True)
class DescribeResult:
    """What [`MultimodalRAG.describe_missing`][multimodal_rag._rag.MultimodalRAG.describe_missing] did.

    Attributes:
        described: Ids that now have a machine-written description.
        skipped: Images left without one, and why (``source`` is the image's id).
    """

    described: tuple[str, ...] = field(converter=str_tuple, default=())
    skipped: tuple[Skipped, ...] = field(converter=_skipped, default=())

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values."""
        return {
            "described": list(self.described),
            "skipped": [skipped.to_dict() for skipped in self.skipped],
        }


@frozen(kw_only=True)
class ReadTextResult:
    """What [`MultimodalRAG.read_text`][multimodal_rag._rag.MultimodalRAG.read_text] did.

    Attributes:
        read: Ids whose image's text was read now (an image without text counts: it stores
            an empty result).
        skipped: Images whose text could not be read, and why (``source`` is the image's id).
    """

    read: tuple[str, ...] = field(converter=str_tuple, default=())
    skipped: tuple[Skipped, ...] = field(converter=_skipped, default=())

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values."""
        return {"read": list(self.read), "skipped": [skipped.to_dict() for skipped in self.skipped]}


@frozen(kw_only=True)
class Source:
    """A knowledge-base item an answer was based on.

    Attributes:
        id: The item's id (``GET /v1/images/{id}`` of the server shows its image).
        score: Its search score.
        description: Its description.
        image_path: Where its image lives (absolute; [`to_dict`][multimodal_rag.types.Source.to_dict] can give it relative
            to the knowledge base).
    """

    id: str
    score: float
    description: str | None = None
    image_path: str | None = None

    def to_dict(self, *, root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The source as JSON-ready values; ``root`` as in [`Hit.to_dict`][multimodal_rag.types.Hit.to_dict]."""
        return {
            "id": self.id,
            "score": self.score,
            "description": self.description,
            "image_path": relative_path(self.image_path, root),
        }


@frozen(kw_only=True)
class Answer:
    """An answer to a question, with what it was based on.

    Attributes:
        text: The answer.
        sources: The matches given to the model, best first.
        model: Which model answered (``"extractive"`` for the offline answerer); empty when
            no model was asked (the similarity gate found no match good enough).
        usage: Token counts reported by the provider, if any.
        latency_s: Seconds spent producing the answer.
    """

    text: str
    sources: tuple[Source, ...] = field(converter=_sources, default=())
    model: str = ""
    usage: dict[str, int] = field(factory=dict, converter=_int_dict)
    latency_s: float = 0.0

    def to_dict(self, *, root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The answer as JSON-ready values; ``root`` as in [`Hit.to_dict`][multimodal_rag.types.Hit.to_dict].

        ``model`` is ``None`` when no model was asked.
        """
        return {
            "text": self.text,
            "sources": [source.to_dict(root=root) for source in self.sources],
            "model": self.model or None,
            "usage": dict(self.usage),
            "latency_s": self.latency_s,
        }


def source_name(image: object) -> str:
    """How an image input is named in messages and reports."""
    if isinstance(image, (str, os.PathLike)):
        name = os.fspath(image)
        if "://" in name:  # a URL may carry a password or a signed-URL secret
            from multimodal_rag._storage import redact

            return redact(name)
        return name
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return "<PIL image>"


def is_path(image: object) -> bool:
    return isinstance(image, (str, Path, os.PathLike))


def relative_path(path: str | None, root: str | os.PathLike[str] | None) -> str | None:
    """``path`` relative to ``root`` with ``/`` separators (``..`` where it lies outside); as is without a root."""
    if path is None or root is None or "://" in path:  # a URL (an image in a bucket) is kept whole
        return path
    return Path(os.path.relpath(path, os.path.abspath(root))).as_posix()
