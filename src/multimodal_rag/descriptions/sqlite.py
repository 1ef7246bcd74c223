"""Descriptions in SQLite: indexed lookups, transactional updates, one portable file."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from multimodal_rag.errors import CorruptFileError, KnowledgeBaseAccessError, NotFoundError
from multimodal_rag.protocols import DescriptionStore
from multimodal_rag.types import Record
from multimodal_rag.validation import check_record

__all__ = ["SQLiteDescriptionStore"]

_FILE = "descriptions.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY NOT NULL,
    image_path TEXT,
    description TEXT,
    metadata TEXT NOT NULL DEFAULT '{}'
) WITHOUT ROWID
"""
# SQLite limits the number of bound parameters per statement; stay well under it.
_CHUNK = 500


class SQLiteDescriptionStore(DescriptionStore):
    """Records in an SQLite database.

    The working copy lives in memory and :meth:`save` writes a consistent
    snapshot with SQLite's online-backup API, so the file in a knowledge base
    only ever changes together with the rest of the knowledge base.
    """

    kind: ClassVar[str] = "sqlite"

    def __init__(self) -> None:
        # One connection shared by all threads, serialised by our own lock.
        self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()

    def config(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def _record(row: tuple[str, str | None, str | None, str]) -> Record:
        return Record(id=row[0], image_path=row[1], description=row[2], metadata=json.loads(row[3]))

    def get(self, id: str) -> Record:
        with self._lock:
            row = self._db.execute(
                "SELECT id, image_path, description, metadata FROM records WHERE id = ?", (id,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"no description record with id {id!r}")
        return self._record(row)

    def get_many(self, ids: Sequence[str]) -> dict[str, Record]:
        ids = list(ids)
        out: dict[str, Record] = {}
        with self._lock:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT id, image_path, description, metadata FROM records WHERE id IN ({marks})",
                    chunk,
                ).fetchall()
                out.update((row[0], self._record(row)) for row in rows)
        return out

    def put(self, records: Iterable[Record]) -> None:
        rows = []
        for record in records:
            check_record(record)
            rows.append(
                (record.id, record.image_path, record.description, json.dumps(record.metadata, ensure_ascii=False))
            )
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def delete(self, ids: Iterable[str]) -> int:
        if isinstance(ids, str):
            ids = [ids]
        with self._lock:
            before = self._db.total_changes
            self._db.executemany("DELETE FROM records WHERE id = ?", ((i,) for i in ids))
            return self._db.total_changes - before

    def __iter__(self) -> Iterator[Record]:
        with self._lock:
            rows = self._db.execute("SELECT id, image_path, description, metadata FROM records").fetchall()
        return (self._record(row) for row in rows)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def __contains__(self, id: object) -> bool:
        if not isinstance(id, str):
            return False
        with self._lock:
            return self._db.execute("SELECT 1 FROM records WHERE id = ?", (id,)).fetchone() is not None

    def save(self, directory: Path) -> None:
        target = sqlite3.connect(Path(directory) / _FILE)
        try:
            with self._lock:
                self._db.backup(target)
        finally:
            target.close()

    @classmethod
    def load(cls, directory: Path, **config: Any) -> SQLiteDescriptionStore:
        store = cls(**config)
        path = Path(directory) / _FILE
        try:
            source = _open_read_only(path)
        except sqlite3.Error as exc:
            # Also what a reader sees when a writer's save removes the snapshot it is loading.
            raise CorruptFileError(f"cannot open the description database {str(path)!r}: {exc}") from exc
        try:
            source.backup(store._db)
            store._db.execute("SELECT id, image_path, description, metadata FROM records LIMIT 1")
            # The backup copies pages as they are; a damaged one shows only when read.
            verdict = store._db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise sqlite3.DatabaseError(verdict)
            _check_rows(store._db)
        except sqlite3.DatabaseError as exc:
            raise CorruptFileError(f"cannot read the description database {str(path)!r}: {exc}") from exc
        finally:
            source.close()
        return store

    @classmethod
    def salvage(cls, directory: Path, **config: Any) -> SQLiteDescriptionStore:
        """Every row that SQLite can still read: the whole file if it reads, else the rows
        before the damage (in id order) and the rows after it (read backwards)."""
        try:
            return cls.load(directory, **config)
        except CorruptFileError:
            pass
        store = cls(**config)
        path = Path(directory) / _FILE
        try:
            source = _open_read_only(path)
        except sqlite3.Error:
            return store
        rows: dict[str, tuple[Any, ...]] = {}
        try:
            for order in ("ASC", "DESC"):
                try:
                    cursor = source.execute(
                        f"SELECT id, image_path, description, metadata FROM records ORDER BY id {order}"
                    )
                    while batch := cursor.fetchmany(256):
                        rows.update((row[0], row) for row in batch)
                except sqlite3.DatabaseError:
                    continue  # the damage: read from the other end
        finally:
            source.close()
        records = []
        for row in rows.values():
            try:
                record = cls._record(row)
                check_record(record)
            except (ValueError, TypeError, RecursionError):
                continue  # a row whose fields were damaged
            records.append(record)
        store.put(records)
        return store


def _check_rows(db: sqlite3.Connection) -> None:
    """Refuse a database whose rows this store could not have written.

    A file with a matching checksum may still come from someone else: every row must
    decode (UTF-8 text, JSON metadata) now rather than fail in the middle of a search.
    """
    wrong = db.execute(
        "SELECT id FROM records WHERE typeof(id) != 'text' OR typeof(metadata) != 'text' "
        "OR typeof(image_path) NOT IN ('text', 'null') OR typeof(description) NOT IN ('text', 'null') "
        "OR NOT json_valid(metadata) OR json_type(metadata) != 'object' LIMIT 1"
    ).fetchone()
    if wrong is not None:
        raise sqlite3.DatabaseError(f"a row of an unexpected shape (id {wrong[0]!r})")
    try:
        for _ in db.execute("SELECT id, image_path, description FROM records"):
            pass  # decoding each text value is the check
    except sqlite3.OperationalError as exc:
        raise sqlite3.DatabaseError(str(exc)) from exc


def _open_read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise CorruptFileError(f"the description database {str(path)!r} is missing")
    if not os.access(path, os.R_OK):
        raise KnowledgeBaseAccessError(
            f"cannot read the description database {str(path)!r}: permission denied (a permission problem, not damage)"
        )
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
