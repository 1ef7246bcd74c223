"""Descriptions kept in memory and saved as JSON Lines, the cookbook's ``description.json`` format.

Each line is one JSON object: ``{"image_path": ..., "description": ..., ...}``.
Keys other than ``id``, ``image_path`` and ``description``
(`RESERVED_KEYS`) are the record's metadata, so a
file written by the cookbook or by hand reads back unchanged. The full-text index
lives in memory only: it is made when the file is read and follows every change.

The text read in the images (`Record.ocr`) is kept in a second file, ``ocr.jsonl``, one
``{"id": ..., "ocr": {...}}`` object per record that has it, so that ``descriptions.jsonl``
stays the cookbook's format and no metadata key is taken. A snapshot without that file
(written before the text was read, or by an earlier version) holds no read text.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from multimodal_rag._validation import RESERVED_KEYS, check_read_text, check_record
from multimodal_rag.descriptions.full_text import (
    DEFAULT_TEXT_FIELDS,
    MemoryTextIndex,
    check_text_fields,
    check_tokenizer,
)
from multimodal_rag.errors import (
    CorruptFileError,
    InvalidInputError,
    KnowledgeBaseAccessError,
    KnowledgeBaseError,
    NotFoundError,
)
from multimodal_rag.protocols import DescriptionStore
from multimodal_rag.types import Record

if TYPE_CHECKING:
    from multimodal_rag.ocr import ReadText

__all__ = ["JSONLDescriptionStore", "parse_jsonl", "read_jsonl", "record_from_json", "record_to_json"]

_FILE = "descriptions.jsonl"
_OCR_FILE = "ocr.jsonl"


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSON Lines file.

    Raises:
        CorruptFileError: A line that is not UTF-8 or not a JSON object; the
            message names the file and the line.
    """
    with open(path, "rb") as f:
        yield from parse_jsonl(f, str(path))


def parse_jsonl(lines: Iterable[bytes], name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """`read_jsonl` of lines read otherwise (a file fetched by URL), named ``name`` in errors."""
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise CorruptFileError(f"{name!r} line {number} is not valid UTF-8: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise CorruptFileError(f"{name!r} line {number} is not valid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise CorruptFileError(f"{name!r} line {number} is not a JSON object")
        yield number, obj


def record_to_json(record: Record) -> dict[str, Any]:
    """One JSONL object for ``record`` (metadata keys at top level)."""
    clash = RESERVED_KEYS.intersection(record.metadata)
    if clash:
        raise InvalidInputError(f"metadata of {record.id!r} uses reserved key(s) {sorted(clash)}")
    return {"id": record.id, "image_path": record.image_path, "description": record.description, **record.metadata}


def record_from_json(obj: dict[str, Any], *, id: str | None = None) -> Record:
    """A record from one JSONL object; ``id`` overrides the object's own."""
    metadata = {k: v for k, v in obj.items() if k not in RESERVED_KEYS}
    record_id = id if id is not None else obj.get("id")
    if not isinstance(record_id, str) or not record_id:
        raise InvalidInputError(f"record has no usable id: {str(obj)[:120]}")
    return Record(
        id=record_id, image_path=obj.get("image_path"), description=obj.get("description"), metadata=metadata
    )


class JSONLDescriptionStore(DescriptionStore):
    """Records in a dict, saved as one JSON Lines file. Simple, diffable, human-editable.

    Full-text search runs on an SQLite FTS5 index in memory that holds no copy of the
    text; ``text_fields`` and ``tokenizer`` are as for
    [`SQLiteDescriptionStore`][multimodal_rag.descriptions.sqlite.SQLiteDescriptionStore], and give the same scores.
    """

    kind: ClassVar[str] = "jsonl"
    full_text: ClassVar[bool] = True
    identifier_search: ClassVar[bool] = True

    def __init__(
        self, *, text_fields: Sequence[str] = DEFAULT_TEXT_FIELDS, tokenizer: str = "unicode61"
    ) -> None:
        self._text_fields = check_text_fields(text_fields)
        self._tokenizer = check_tokenizer(tokenizer)
        self._records: dict[str, Record] = {}
        self._index = MemoryTextIndex(self._text_fields, self._tokenizer)
        self._lock = threading.Lock()

    def config(self) -> dict[str, Any]:
        return {"text_fields": list(self._text_fields), "tokenizer": self._tokenizer}

    def get(self, id: str) -> Record:
        try:
            return self._records[id]
        except KeyError:
            raise NotFoundError(f"no description record with id {id!r}") from None

    def get_many(self, ids: Sequence[str]) -> dict[str, Record]:
        records = self._records
        return {i: records[i] for i in ids if i in records}

    def put(self, records: Iterable[Record]) -> None:
        records = list(records)
        for record in records:
            check_record(record)
        with self._lock:
            latest = {r.id: r for r in records}  # the last of an id repeated in the call wins
            self._index.update((self._records.get(id_), r) for id_, r in latest.items())
            self._records.update(latest)

    def delete(self, ids: Iterable[str]) -> int:
        if isinstance(ids, str):
            ids = [ids]
        with self._lock:
            gone = [r for r in (self._records.pop(i, None) for i in dict.fromkeys(ids)) if r is not None]
            self._index.update((r, None) for r in gone)
            return len(gone)

    def __iter__(self) -> Iterator[Record]:
        return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, id: object) -> bool:
        return id in self._records

    def search_text(self, query: str, k: int, *, ids: Collection[str] | None = None) -> list[tuple[str, float]]:
        """BM25 over the in-memory FTS5 index (the score is ``-bm25()``); ties by id."""
        with self._lock:
            return self._index.search(query, k, ids)

    def search_identifiers(
        self, query: str, k: int, *, ids: Collection[str] | None = None
    ) -> list[tuple[str, float, list[str]]]:
        """The in-memory trigram index of identifiers, ranked as the SQLite store ranks them."""
        with self._lock:
            return self._index.search_identifiers(query, k, ids)

    def save(self, directory: Path) -> None:
        with self._lock:
            records = list(self._records.values())
        with open(Path(directory) / _FILE, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record_to_json(record), ensure_ascii=False) + "\n")
        read = [record for record in records if record.ocr is not None]
        if read:  # absent when nothing was read, so such snapshots are written as before
            with open(Path(directory) / _OCR_FILE, "w", encoding="utf-8") as f:
                for record in read:
                    f.write(json.dumps({"id": record.id, "ocr": record.ocr.to_json()}, ensure_ascii=False) + "\n")  # type: ignore[union-attr]

    @classmethod
    def load(cls, directory: Path, **config: Any) -> JSONLDescriptionStore:
        store = cls(**config)
        path = Path(directory) / _FILE
        try:
            for number, obj in read_jsonl(path):
                try:
                    record = record_from_json(obj)
                except InvalidInputError as exc:
                    raise CorruptFileError(f"{str(path)!r} line {number}: {exc}") from exc
                store._records[record.id] = record
        except OSError as exc:
            raise _read_error(path, exc) from exc
        store._read_ocr(Path(directory) / _OCR_FILE, strict=True)
        store._index.update((None, r) for r in store._records.values())
        return store

    def _read_ocr(self, path: Path, *, strict: bool) -> None:
        """Attach the read text of ``ocr.jsonl`` (if there is one) to the records loaded.

        Raises:
            CorruptFileError: With ``strict``, a line that is not a record's read text; without,
                such lines are skipped.
        """
        if not path.exists():
            return
        try:
            with open(path, "rb") as f:
                for number, raw in enumerate(f, start=1):
                    if not raw.strip():
                        continue
                    try:
                        id_, read = _ocr_line(raw)
                    except (ValueError, TypeError, KeyError, RecursionError) as exc:
                        if strict:
                            raise CorruptFileError(f"{str(path)!r} line {number} is not a record's read text: {exc}") from exc
                        continue
                    record = self._records.get(id_)
                    if record is not None:
                        self._records[id_] = attrs.evolve(record, ocr=read)
        except OSError as exc:
            raise _read_error(path, exc) from exc

    @classmethod
    def salvage(cls, directory: Path, **config: Any) -> JSONLDescriptionStore:
        """Every line that still reads as a record; damaged lines are skipped."""
        store = cls(**config)
        path = Path(directory) / _FILE
        try:
            with open(path, "rb") as f:
                for raw in f:
                    try:
                        obj = json.loads(raw.decode("utf-8"))
                        record = record_from_json(obj) if isinstance(obj, dict) else None
                        if record is not None:
                            check_record(record)
                    except (ValueError, TypeError, RecursionError):  # JSON, UTF-8 and record errors
                        continue
                    if record is not None:
                        store._records[record.id] = record
        except OSError as exc:
            raise _read_error(path, exc) from exc
        store._read_ocr(Path(directory) / _OCR_FILE, strict=False)
        store._index.update((None, r) for r in store._records.values())
        return store


def _ocr_line(raw: bytes) -> tuple[str, ReadText]:
    """The id and read text of one line of ``ocr.jsonl``, checked as a store's ``put`` checks it."""
    from multimodal_rag.ocr import ReadText

    obj = json.loads(raw.decode("utf-8"))
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str) or not isinstance(obj.get("ocr"), dict):
        raise ValueError("expected an object with a string id and an ocr object")
    read = ReadText.from_json(obj["ocr"])
    check_read_text(read, owner=f"record {obj['id']!r}")
    return obj["id"], read


def _read_error(path: Path, exc: OSError) -> KnowledgeBaseError:
    if isinstance(exc, KnowledgeBaseError):
        return exc
    if isinstance(exc, PermissionError):
        return KnowledgeBaseAccessError(f"cannot read {str(path)!r}: {exc.strerror or exc} (a permission problem, not damage)")
    return CorruptFileError(f"cannot read {str(path)!r}: {exc}")
