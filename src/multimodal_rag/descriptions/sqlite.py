"""Descriptions in SQLite: indexed lookups, transactional updates, full-text search, one portable file.

The ``records`` table holds each record once, its text exactly as given, and beside it
one ``search_<i>`` column per text field: that field's text as the index sees it
(`indexed_text`: Persian and Arabic letter forms, digits, ZWNJ and marks normalised).
An FTS5 table indexes those columns with ``records`` as external content (the index keeps
no copy of its own), and triggers on ``records`` keep it in step with every insert,
update and delete. ``PRAGMA user_version`` records the normalisation the columns were
written with (`NORMALISATION_VERSION`). Files of another layout or normalisation (an
earlier version's: no FTS5 table, ``WITHOUT ROWID``, raw text indexed) are migrated in
memory when loaded, their text indexed anew from the records (nothing is embedded
again); the next save writes the new layout.

The text read in each image (`Record.ocr`) is kept as JSON in ``ocr`` and its lines joined in
``ocr_text``; its normalised form, ``search_ocr``, is a column of the full-text index of its
own after the text fields, so that a match in the read text can be told from one in the
description. Being columns of ``records``, they can feed a second FTS5 table too (a trigram
one over ``description`` and ``ocr_text``) with the same external-content triggers. Files
written before the read text existed have none of them; they are migrated like other earlier
layouts.

Identifiers (model numbers: "XG-2047") of the description and the read text are kept in
``identifiers`` and ``identifiers_like`` (`multimodal_rag.descriptions.identifiers`), which a
second FTS5 table, ``records_ident``, indexes by trigrams with triggers of its own; files
written before it are migrated when loaded, without anything being embedded again.

Metadata fields named in ``indexed_fields`` get two generated columns each (the value's
JSON type and the value) with an index on the pair, which filters on those fields use; a
partial index finds the few records whose metadata holds NUL, which filters test in Python.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from multimodal_rag._text_normalisation import NORMALISATION_VERSION, index_text
from multimodal_rag._validation import check_record
from multimodal_rag.descriptions.bm25_pruning import TermCounts
from multimodal_rag.descriptions.full_text import (
    DEFAULT_TEXT_FIELDS,
    TOKENIZERS,
    check_text_fields,
    check_tokenizer,
    fts5_search,
    indexed_ocr_text,
    indexed_text,
)
from multimodal_rag.descriptions.identifiers import fts5_identifier_search, identifier_text
from multimodal_rag.errors import (
    CorruptFileError,
    InvalidInputError,
    KnowledgeBaseAccessError,
    NotFoundError,
)
from multimodal_rag.filters.sqlite import sqlite_path
from multimodal_rag.protocols import DescriptionStore
from multimodal_rag.types import Record

if TYPE_CHECKING:
    from multimodal_rag.filters import MetadataFilter

__all__ = ["SQLiteDescriptionStore"]

_FILE = "descriptions.sqlite"
# How json.dumps writes NUL, as an SQL literal (SQL strings have no backslash escapes).
_NUL_JSON = "'\\u0000'"
# The same text in the partial index and in the query, so that the query uses the index.
_HAS_NUL = f"instr(metadata, {_NUL_JSON}) > 0"
# SQLite limits the number of bound parameters per statement; stay well under it.
_CHUNK = 500
# A file may come from someone else, so the work of reading it is bounded by its size: a view
# over a recursive query (endless rows) or a generated column building huge values would
# otherwise hang a load. SQLite calls the progress handler every _PROGRESS_EVERY virtual-machine
# steps; a load may take _STEPS_PER_BYTE steps per byte of the file (a file this store wrote
# needs about 0.1 per byte), and _STEPS_FLOOR for a small one.
_PROGRESS_EVERY = 10_000
_STEPS_PER_BYTE = 100
_STEPS_FLOOR = 10_000_000
# What this store (and its earlier versions) puts in a database; sqlite_* are SQLite's own.
_TABLES = re.compile(
    r"records|records_(fts|ident)(_data|_idx|_content|_docsize|_config)?|sqlite_stat\d|sqlite_sequence"
)
_INDEXES = re.compile(r"sqlite_autoindex_records_\d+|records_field_\d+|records_nul")
_TRIGGERS = frozenset(
    {"records_ai", "records_ad", "records_au", "records_ident_ai", "records_ident_ad", "records_ident_au"}
)
# text_<i>: the generated columns of files whose index held the raw text (before search_<i>).
_COLUMNS = re.compile(
    r"seq|id|image_path|description|metadata|ocr|ocr_text|search_\d+|search_ocr|identifiers|identifiers_like"
    r"|text_\d+|field_\d+(_type)?"
)
_REQUIRED_COLUMNS = frozenset({"id", "image_path", "description", "metadata"})
# What records are read from in files of layouts without the read text (see `_salvage_rows`).
_FIELDS_BEFORE_OCR = "id, image_path, description, metadata, NULL"
# What a record is read from, in `SQLiteDescriptionStore._record`'s order.
_FIELDS = "id, image_path, description, metadata, ocr"


@lru_cache(maxsize=16)
def _upsert(fields: int) -> str:
    """Insert or update a record, its read text, the normalised texts its index reads
    (``fields`` text fields' and the read text's) and its identifiers (see `_row`)."""
    columns = ["id", "image_path", "description", "metadata", "ocr", "ocr_text"]
    columns += [f"search_{i}" for i in range(fields)] + ["search_ocr", "identifiers", "identifiers_like"]
    return (
        f"INSERT INTO records ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})\n"
        "ON CONFLICT (id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
    )


class SQLiteDescriptionStore(DescriptionStore):
    """Records in an SQLite database.

    The working copy lives in memory and `save` writes a consistent
    snapshot with SQLite's online-backup API, so the file in a knowledge base
    only ever changes together with the rest of the knowledge base.

    Args:
        text_fields: What the full-text index holds: ``"description"``, ``"image_path"``
            and metadata keys (a metadata value that is not a string is indexed as JSON).
        tokenizer: How text is cut into terms: ``"unicode61"`` (words; English, Persian,
            Arabic and any language that puts spaces between words), ``"porter"``
            (English words by their stems) or ``"trigram"`` (any three characters in a
            row: Chinese, Japanese, Korean, part numbers such as "XR-2000").
        indexed_fields: Metadata keys to index for filters: a filter's conditions on them use
            an index instead of reading every record's metadata. Keys of printable ASCII
            without quotes or backslashes, not starting with ``$``.

    Raises:
        InvalidInputError: An unknown tokenizer or an unusable field name.
    """

    kind: ClassVar[str] = "sqlite"
    full_text: ClassVar[bool] = True
    identifier_search: ClassVar[bool] = True

    def __init__(
        self,
        *,
        text_fields: Sequence[str] = DEFAULT_TEXT_FIELDS,
        tokenizer: str = "unicode61",
        indexed_fields: Sequence[str] = (),
    ) -> None:
        self._text_fields = check_text_fields(text_fields)
        self._tokenizer = check_tokenizer(tokenizer)
        self._indexed_fields = _check_indexed_fields(indexed_fields)
        self._columns = {key: (f"field_{i}_type", f"field_{i}") for i, key in enumerate(self._indexed_fields)}
        # One connection shared by all threads, serialised by our own lock.
        self._db = _connect()
        self._term_counts = TermCounts()
        for statement in _schema(self._text_fields, self._tokenizer, self._indexed_fields):
            self._db.execute(statement)
        self._db.execute(f"PRAGMA user_version = {NORMALISATION_VERSION}")
        self._lock = threading.Lock()

    def config(self) -> dict[str, Any]:
        return {
            "text_fields": list(self._text_fields),
            "tokenizer": self._tokenizer,
            "indexed_fields": list(self._indexed_fields),
        }

    @staticmethod
    def _record(row: tuple[Any, ...]) -> Record:
        read = None
        if row[4] is not None:
            from multimodal_rag.ocr import ReadText

            read = ReadText.from_json(json.loads(row[4]))
        return Record(id=row[0], image_path=row[1], description=row[2], metadata=json.loads(row[3]), ocr=read)

    def get(self, id: str) -> Record:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_FIELDS} FROM records WHERE id = ?", (id,)
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
                    f"SELECT {_FIELDS} FROM records WHERE id IN ({marks})",
                    chunk,
                ).fetchall()
                out.update((row[0], self._record(row)) for row in rows)
        return out

    def put(self, records: Iterable[Record]) -> None:
        rows = []
        for record in records:
            check_record(record)
            rows.append(_row(record, self._text_fields))
        with self._lock:
            self._db.execute("BEGIN")
            try:
                # An upsert, not INSERT OR REPLACE: it fires the update trigger that keeps
                # the full-text index in step (REPLACE's implicit delete fires none).
                self._db.executemany(_upsert(len(self._text_fields)), rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def delete(self, ids: Iterable[str]) -> int:
        if isinstance(ids, str):
            ids = [ids]
        with self._lock:
            # rowcount, unlike total_changes, leaves out the rows the triggers change.
            cursor = self._db.executemany("DELETE FROM records WHERE id = ?", ((i,) for i in ids))
            return max(cursor.rowcount, 0)

    def __iter__(self) -> Iterator[Record]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_FIELDS} FROM records ORDER BY id"
            ).fetchall()
        return (self._record(row) for row in rows)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def __contains__(self, id: object) -> bool:
        if not isinstance(id, str):
            return False
        with self._lock:
            return self._db.execute("SELECT 1 FROM records WHERE id = ?", (id,)).fetchone() is not None

    def matching_ids(self, filter: MetadataFilter) -> set[str]:
        """One query, the filter in SQL ([`MetadataFilter.to_sqlite`][multimodal_rag.filters.MetadataFilter.to_sqlite]).

        SQLite's JSON functions cut strings short at NUL, so a record whose metadata holds
        one (JSON text ``\\u0000``) is tested in Python, and so is every record for a
        filter that holds one. With indexed fields those records are found by their own
        partial index, so that the filter's query can use the fields' indexes.
        """
        if filter.contains_nul:
            return super().matching_ids(filter)
        if self._indexed_fields:
            where, params = filter.to_sqlite("metadata", indexed=self._columns)
            with self._lock:
                nul = self._db.execute(f"SELECT id, metadata FROM records WHERE {_HAS_NUL}").fetchall()
                found = {row[0] for row in self._db.execute(f"SELECT id FROM records WHERE {where}", params)}
            found.difference_update(id_ for id_, _ in nul)
            found.update(id_ for id_, raw in nul if filter.matches(json.loads(raw)))
            return found
        where, params = filter.to_sqlite("metadata")
        query = (
            f"SELECT id, CASE WHEN instr(metadata, {_NUL_JSON}) > 0 THEN metadata END FROM records "
            f"WHERE instr(metadata, {_NUL_JSON}) > 0 OR ({where})"
        )
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return {id_ for id_, raw in rows if raw is None or filter.matches(json.loads(raw))}

    def search_text(self, query: str, k: int, *, ids: Collection[str] | None = None) -> list[tuple[str, float]]:
        """BM25 over the FTS5 index (the score is ``-bm25()``, so higher is better); ties by id."""
        with self._lock:
            return fts5_search(
                self._db, query, k, ids, table="records_fts", id_table="records", counts=self._term_counts
            )

    def search_identifiers(
        self, query: str, k: int, *, ids: Collection[str] | None = None
    ) -> list[tuple[str, float, list[str]]]:
        """The trigram index of identifiers (``records_ident``), ranked by `identifier_score`."""
        with self._lock:
            return fts5_identifier_search(self._db, query, k, ids, table="records_ident", id_table="records")

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
        budget = _WorkBudget(path)
        try:
            source.backup(store._db)
            with budget.bound(store._db):
                _check_schema(store._db)
                store._db.execute("SELECT id, image_path, description, metadata FROM records LIMIT 1")
                # The backup copies pages as they are; a damaged one shows only when read.
                verdict = store._db.execute("PRAGMA quick_check").fetchone()[0]
                if verdict != "ok":
                    raise sqlite3.DatabaseError(verdict)
                _check_rows(store._db)
                store._db = _with_full_text(
                    store._db, store._text_fields, store._tokenizer, store._indexed_fields, bound=budget.bound
                )
        except (sqlite3.DatabaseError, MemoryError) as exc:  # NOMEM: a damaged file declaring absurd sizes
            raise CorruptFileError(f"cannot read the description database {str(path)!r}: {budget.explain(exc)}") from exc
        finally:
            source.close()
        return store

    @classmethod
    def salvage(cls, directory: Path, **config: Any) -> SQLiteDescriptionStore:
        """Every row that SQLite can still read: the whole file if it reads, else each row it can
        reach, read one at a time from both ends and from seeks into the rowids between (see
        `_salvage_rows`). The full-text index is made anew from the rows kept."""
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
        budget = _WorkBudget(path)
        rows: dict[str, tuple[Any, ...]] = {}
        try:
            with budget.bound(source):
                # Only the records are read, so other objects (which load refuses) do no harm here.
                _check_records_table(source)
                _salvage_rows(source, rows)
        except (sqlite3.DatabaseError, MemoryError):
            pass  # no readable table of records, or the work ran out: keep what was read
        finally:
            source.close()
        records = []
        for row in rows.values():
            try:
                record = cls._record(row)
                check_record(record)
            except (ValueError, TypeError, KeyError, RecursionError):
                continue  # a row whose fields were damaged
            records.append(record)
        store.put(records)
        return store


def _row(record: Record, text_fields: tuple[str, ...]) -> tuple[str | None, ...]:
    """``records``' columns for ``record`` (`_upsert`'s order): its own, its read text, the
    normalised text of each text field and of the read text, then its identifiers."""
    read = record.ocr
    return (
        record.id,
        record.image_path,
        record.description,
        json.dumps(record.metadata, ensure_ascii=False),
        None if read is None else json.dumps(read.to_json(), ensure_ascii=False),
        None if read is None else read.text,
        *(indexed_text(record, field) for field in text_fields),
        indexed_ocr_text(record),
        *identifier_text([record.description, None if read is None else read.text]),
    )


class _WorkBudget:
    """How many SQLite steps reading one file may take, shared by the connections that read it."""

    def __init__(self, path: Path) -> None:
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        self._size = size
        self._ticks = (_STEPS_FLOOR + _STEPS_PER_BYTE * size) // _PROGRESS_EVERY
        self.spent = False

    def _tick(self) -> int:
        self._ticks -= 1
        if self._ticks < 0:
            self.spent = True
            return 1  # SQLite interrupts the statement: OperationalError "interrupted"
        return 0

    @contextlib.contextmanager
    def bound(self, db: sqlite3.Connection) -> Iterator[None]:
        db.set_progress_handler(self._tick, _PROGRESS_EVERY)
        try:
            yield
        except sqlite3.OperationalError as exc:
            if self.spent:
                raise sqlite3.DatabaseError(self.explain(exc)) from exc
            raise
        finally:
            with contextlib.suppress(sqlite3.ProgrammingError):  # closed, replaced by a migrated copy
                db.set_progress_handler(None, 0)

    def explain(self, exc: BaseException) -> str:
        if not self.spent:
            return str(exc)
        return (
            f"reading it takes more work than a file of {self._size} bytes written by this store needs "
            "(a crafted file: a view or generated column that never ends), so it was stopped"
        )


def _check_schema(db: sqlite3.Connection) -> None:
    """Refuse a database holding anything but this store's tables, indexes and triggers.

    Rows are read from ``records`` only once it is known to be a table of known columns
    (`_check_records_table`); any other object (a view, someone else's trigger or
    table) means the file is not one this store wrote, and is refused rather than dropped.
    """
    for kind, name in db.execute("SELECT type, name FROM sqlite_master"):
        allowed = {"table": _TABLES, "index": _INDEXES}.get(kind)
        if kind == "trigger" and name in _TRIGGERS:
            continue
        if allowed is None or not isinstance(name, str) or not allowed.fullmatch(name):
            raise sqlite3.DatabaseError(f"it holds a {kind} {name!r:.80}, which this store never writes")
    _check_records_table(db)


def _check_records_table(db: sqlite3.Connection) -> None:
    """Refuse a ``records`` that is not a plain table of this store's columns.

    A view of that name (say, over a recursive query) could yield rows without end, and
    a virtual table runs a module's code for each row.
    """
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'records' AND type = 'table'").fetchone()
    if sql is None or not isinstance(sql[0], str) or not sql[0].lstrip().upper().startswith("CREATE TABLE"):
        raise sqlite3.DatabaseError("it has no table 'records'")
    columns = {row[1] for row in db.execute("PRAGMA table_xinfo(records)")}
    unknown = sorted(name for name in columns if not isinstance(name, str) or not _COLUMNS.fullmatch(name))
    if unknown or not columns.issuperset(_REQUIRED_COLUMNS):
        raise sqlite3.DatabaseError(f"its table 'records' has the columns {sorted(map(str, columns))!r:.200}")


def _salvage_rows(source: sqlite3.Connection, rows: dict[str, tuple[Any, ...]]) -> None:
    """Put into ``rows`` every row of a damaged file that SQLite can still reach.

    A table with rowids (``seq``) is read from both ends and then, between the last rows
    reached from either side, by seeking into the middle of each range not yet read: a
    seek walks the interior pages to the leaf that holds its rowid, past any damaged leaf
    before it. Files of earlier versions (``WITHOUT ROWID``, no ``seq``) are read by id
    from both ends.
    """
    columns = {row[1] for row in source.execute("PRAGMA table_xinfo(records)")}
    fields = _FIELDS if "ocr" in columns else _FIELDS_BEFORE_OCR
    if "seq" not in columns:
        for descending in (False, True):
            _read_run(source, "id", rows, set(), descending=descending, fields=fields)
        return
    up: set[Any] = set()
    down: set[Any] = set()
    if _read_run(source, "seq", rows, up, descending=False, fields=fields):
        return
    _read_run(source, "seq", rows, down, descending=True, fields=fields)
    read = sorted(seq for seq in up | down if isinstance(seq, int))
    # Ranges of rowids not read: between the rows reached from either end, and at an end
    # whose first page was damaged (this store numbers rows from 1; the last page holds
    # at most a row per four bytes).
    unknown = [(a + 1, b - 1) for a, b in zip(read, read[1:]) if b - a > 1]
    page_size = int(source.execute("PRAGMA page_size").fetchone()[0])
    if not up:
        unknown.append((1, (read[0] if read else 1 + page_size) - 1))
    if not down and read:
        unknown.append((read[-1] + 1, read[-1] + page_size // 4))
    # A probe reads ascending from the middle of a range; a seek that fails at once shows
    # that rowid's leaf damaged, so each probe reads a row or rules one rowid out. A crafted
    # file can spread few rows over a vast range of rowids: the probes are bounded by its pages.
    probes = 64 + 16 * int(source.execute("PRAGMA page_count").fetchone()[0])
    while unknown and probes > 0:
        probes -= 1
        first, last = unknown.pop()
        middle = (first + last) // 2
        found: set[Any] = set()
        whole = _read_run(source, "seq", rows, found, descending=False, start=middle, until=last, fields=fields)
        after = last + 1 if whole else max(found, default=middle) + 1
        for low, high in ((first, middle - 1), (after, last)):
            if low <= high:
                unknown.append((low, high))


def _read_run(
    source: sqlite3.Connection,
    key: str,
    rows: dict[str, tuple[Any, ...]],
    read: set[Any],
    *,
    descending: bool,
    start: Any = None,
    until: Any = None,
    fields: str,
) -> bool:
    """Read rows in ``key`` order from ``start`` up to ``until`` (each ``None``: the end),
    keeping each row read in ``rows`` and its key in ``read``, until the end (True) or
    the damage (False).

    Rows are fetched one at a time, so a damaged page costs only its own rows. Python's
    cursor steps one row ahead, so the row before the damage comes with the error: after
    an error the rows are read again one query each, up to the damage. The first seek is
    to ``start`` itself, not past the row before it, which may lie on a damaged page.
    """
    at, past, up_to, order = (">=", ">", "<=", "ASC")
    if descending:
        at, past, up_to, order = ("<=", "<", ">=", "DESC")
    limit = 256
    after: Any = None
    while True:
        conditions, params = [], []
        if after is not None:
            conditions.append(f"{key} {past} ?")
            params.append(after)
        elif start is not None:
            conditions.append(f"{key} {at} ?")
            params.append(start)
        if until is not None:
            conditions.append(f"{key} {up_to} ?")
            params.append(until)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        count = 0
        try:
            cursor = source.execute(
                f"SELECT {fields}, {key} FROM records{where} "
                f"ORDER BY {key} {order} LIMIT {limit}",
                params,
            )
            while (row := cursor.fetchone()) is not None:
                count += 1
                if isinstance(row[0], str):
                    rows.setdefault(row[0], row[:5])
                read.add(row[5])
                after = row[5]
        except (sqlite3.DatabaseError, MemoryError) as exc:
            if isinstance(exc, sqlite3.OperationalError) and "interrupted" in str(exc):
                raise  # the work budget ran out: stop salvaging, not just this read
            if limit == 1:
                return False  # the damage is right after the last row read
            limit = 1
            continue
        if count < limit:
            return True


def _connect() -> sqlite3.Connection:
    return sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)


def _check_indexed_fields(fields: object) -> tuple[str, ...]:
    if isinstance(fields, str) or not isinstance(fields, Iterable):
        raise InvalidInputError(f"indexed_fields must be a list of metadata keys, got {fields!r:.80}")
    names = tuple(fields)
    for name in names:
        if not isinstance(name, str) or not name or name.startswith("$") or sqlite_path(name) is None:
            raise InvalidInputError(
                "indexed_fields must be metadata keys of printable ASCII without quotes or backslashes, "
                f"not starting with '$'; got {name!r:.80}"
            )
    if len(set(names)) != len(names):
        raise InvalidInputError(f"indexed_fields names a key twice: {list(names)}")
    return names


@lru_cache(maxsize=16)
def _schema(text_fields: tuple[str, ...], tokenizer: str, indexed_fields: tuple[str, ...]) -> tuple[str, ...]:
    """The statements that make an empty database: records table, FTS5 table, then triggers
    and indexes (the last two kinds may run after rows are in).

    Each text field gets a column ``search_<i>`` of ``records`` holding its normalised text,
    and the read text ``search_ocr`` (`indexed_text`, written by `put`), since FTS5 reads
    external content by column and the normalisation is Python's. Each indexed field becomes
    two virtual generated columns, its JSON type and its value, as
    [`MetadataFilter.to_sqlite`][multimodal_rag.filters.MetadataFilter.to_sqlite] reads them, indexed together.
    """
    columns = [f"search_{i}" for i in range(len(text_fields))] + ["search_ocr"]
    generated = [f",\n    {column} TEXT" for column in columns]
    indexes = []
    for i, field in enumerate(indexed_fields):
        path = _literal(f'$."{field}"')  # _check_indexed_fields kept to keys with a plain path
        generated.append(
            f",\n    field_{i}_type TEXT GENERATED ALWAYS AS (coalesce(json_type(metadata, {path}), '')) VIRTUAL"
            f",\n    field_{i} GENERATED ALWAYS AS (json_extract(metadata, {path})) VIRTUAL"
        )
        indexes.append(f"CREATE INDEX records_field_{i} ON records (field_{i}_type, field_{i})")
    if indexed_fields:
        indexes.append(f"CREATE INDEX records_nul ON records (seq) WHERE {_HAS_NUL}")
    names = ", ".join(columns)
    new = ", ".join(f"new.{c}" for c in columns)
    old = ", ".join(f"old.{c}" for c in columns)
    return (
        "CREATE TABLE records (\n"
        "    seq INTEGER PRIMARY KEY,\n"
        "    id TEXT NOT NULL UNIQUE,\n"
        "    image_path TEXT,\n"
        "    description TEXT,\n"
        "    metadata TEXT NOT NULL DEFAULT '{}',\n"
        "    ocr TEXT,\n"
        "    ocr_text TEXT,\n"
        "    identifiers TEXT,\n"
        "    identifiers_like TEXT" + "".join(generated) + "\n)",
        f"CREATE VIRTUAL TABLE records_fts USING fts5({names}, content='records', content_rowid='seq', "
        f"tokenize={_literal(TOKENIZERS[tokenizer])})",
        # The index's "delete" must be given the text as it was indexed: the old row's.
        f"CREATE TRIGGER records_ai AFTER INSERT ON records BEGIN\n"
        f"    INSERT INTO records_fts (rowid, {names}) VALUES (new.seq, {new});\nEND",
        f"CREATE TRIGGER records_ad AFTER DELETE ON records BEGIN\n"
        f"    INSERT INTO records_fts (records_fts, rowid, {names}) VALUES ('delete', old.seq, {old});\nEND",
        f"CREATE TRIGGER records_au AFTER UPDATE ON records BEGIN\n"
        f"    INSERT INTO records_fts (records_fts, rowid, {names}) VALUES ('delete', old.seq, {old});\n"
        f"    INSERT INTO records_fts (rowid, {names}) VALUES (new.seq, {new});\nEND",
        *_IDENTIFIER_INDEX,
        *indexes,
    )


# Identifiers by trigrams: a query's form is found inside a longer one ("2047" in "xg2047").
_IDENT = "identifiers, identifiers_like"
_IDENTIFIER_INDEX = (
    f"CREATE VIRTUAL TABLE records_ident USING fts5({_IDENT}, content='records', content_rowid='seq', "
    "tokenize='trigram')",
    "CREATE TRIGGER records_ident_ai AFTER INSERT ON records BEGIN\n"
    f"    INSERT INTO records_ident (rowid, {_IDENT}) VALUES (new.seq, new.identifiers, new.identifiers_like);\nEND",
    "CREATE TRIGGER records_ident_ad AFTER DELETE ON records BEGIN\n"
    f"    INSERT INTO records_ident (records_ident, rowid, {_IDENT}) "
    "VALUES ('delete', old.seq, old.identifiers, old.identifiers_like);\nEND",
    "CREATE TRIGGER records_ident_au AFTER UPDATE ON records BEGIN\n"
    f"    INSERT INTO records_ident (records_ident, rowid, {_IDENT}) "
    "VALUES ('delete', old.seq, old.identifiers, old.identifiers_like);\n"
    f"    INSERT INTO records_ident (rowid, {_IDENT}) VALUES (new.seq, new.identifiers, new.identifiers_like);\nEND",
)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@lru_cache(maxsize=16)
def _schema_objects(
    text_fields: tuple[str, ...], tokenizer: str, indexed_fields: tuple[str, ...]
) -> frozenset[tuple[str, str, str, str | None]]:
    """What ``sqlite_master`` lists for a database made by `_schema` (FTS5's own tables too)."""
    db = _connect()
    try:
        for statement in _schema(text_fields, tokenizer, indexed_fields):
            db.execute(statement)
        return _objects(db)
    finally:
        db.close()


def _objects(db: sqlite3.Connection) -> frozenset[tuple[str, str, str, str | None]]:
    return frozenset(db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))


def _with_full_text(
    db: sqlite3.Connection,
    text_fields: tuple[str, ...],
    tokenizer: str,
    indexed_fields: tuple[str, ...],
    *,
    bound: Callable[[sqlite3.Connection], contextlib.AbstractContextManager[None]] = lambda db: contextlib.nullcontext(),
) -> sqlite3.Connection:
    """``db`` with a full-text index in step with its records: checked, rebuilt, or migrated.

    A database of exactly this store's layout keeps its index when FTS5's integrity check
    finds it in step with the records, and has it rebuilt otherwise; its metadata indexes
    are rebuilt (quick_check does not compare an index with its table). Any other layout
    (an earlier version's, other text or indexed fields or tokenizer, a missing index,
    objects this store does not make) is replaced by a new database of the current layout
    holding the same rows; the caller's connection is closed then. ``bound`` limits the
    work on that new database as the caller's limits the reading.
    """
    current = int(db.execute("PRAGMA user_version").fetchone()[0]) == NORMALISATION_VERSION
    if current and _objects(db) == _schema_objects(text_fields, tokenizer, indexed_fields):
        for i in range(len(indexed_fields)):
            db.execute(f"REINDEX records_field_{i}")
        if indexed_fields:
            db.execute("REINDEX records_nul")
        if all(_index_in_step(db, table) for table in ("records_fts", "records_ident")):
            return db  # both indexes in step, or rebuilt from the rows
        # FTS5's own tables are beyond rebuilding: start again from the rows
    fresh = _connect()
    try:
        with bound(fresh):
            table, index, *triggers_and_indexes = _schema(text_fields, tokenizer, indexed_fields)
            fresh.execute(table)
            fresh.execute(index)
            fresh.execute(f"PRAGMA user_version = {NORMALISATION_VERSION}")
            # Rows first and one rebuild after: quicker than a trigger per row. The text is
            # indexed anew from the records, normalised as put normalises it.
            fresh.execute("BEGIN")
            has_ocr = any(row[1] == "ocr" for row in db.execute("PRAGMA table_xinfo(records)"))
            read = "ocr, ocr_text" if has_ocr else "NULL, NULL"  # layouts from before the text was read
            cursor = db.execute(f"SELECT id, image_path, description, metadata, {read} FROM records ORDER BY id")
            insert = _upsert(len(text_fields))
            while batch := cursor.fetchmany(_CHUNK):
                fresh.executemany(insert, (_migrated_row(row, text_fields) for row in batch))
            fresh.execute("INSERT INTO records_fts (records_fts) VALUES ('rebuild')")
            for statement in triggers_and_indexes:
                fresh.execute(statement)
            fresh.execute("INSERT INTO records_ident (records_ident) VALUES ('rebuild')")
            fresh.execute("COMMIT")
    except BaseException:
        fresh.close()
        raise
    db.close()
    return fresh


def _migrated_row(row: tuple[Any, ...], text_fields: tuple[str, ...]) -> tuple[str | None, ...]:
    """A row of an earlier file in the current layout: its own columns kept as they were
    (metadata's key order and number spellings, the read text), its normalised texts
    computed from them (`_check_rows` checked the row and that ``ocr_text`` is the read text's lines)."""
    record = Record(id=row[0], image_path=row[1], description=row[2], metadata=json.loads(row[3]))
    texts = (indexed_text(record, field) for field in text_fields)
    # Identifiers are made from the rows here, so a file of any earlier layout gets them.
    return (*row[:6], *texts, None if row[5] is None else index_text(row[5]), *identifier_text([row[2], row[5]]))


def _index_in_step(db: sqlite3.Connection, table: str) -> bool:
    """Whether the FTS5 ``table`` agrees with the records, rebuilding it from them if not;
    False when it cannot be rebuilt."""
    # Garbled FTS5 records can also declare absurd sizes, which SQLite answers with
    # SQLITE_NOMEM (Python's MemoryError): that too is damage to rebuild from the rows.
    try:
        db.execute(f"INSERT INTO {table} ({table}, rank) VALUES ('integrity-check', 1)")
        return True
    except (sqlite3.DatabaseError, MemoryError):
        pass
    try:
        db.execute(f"INSERT INTO {table} ({table}) VALUES ('rebuild')")
        return True
    except (sqlite3.DatabaseError, MemoryError):
        return False


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
    if any(row[1] == "ocr" for row in db.execute("PRAGMA table_xinfo(records)")):
        _check_read_texts(db)


def _check_read_texts(db: sqlite3.Connection) -> None:
    """Refuse read text this store could not have written: each must be a ``ReadText``'s JSON
    that ``put`` accepts, with its lines joined in ``ocr_text`` (which the index holds)."""
    from multimodal_rag._validation import check_read_text
    from multimodal_rag.ocr import ReadText

    try:
        rows = db.execute("SELECT id, ocr, ocr_text FROM records WHERE ocr IS NOT NULL OR ocr_text IS NOT NULL")
        for id_, raw, text in rows:
            try:
                if not isinstance(raw, str):
                    raise ValueError("no read text beside its indexed text")
                read = ReadText.from_json(json.loads(raw))
                check_read_text(read, owner=f"record {id_!r}")
                if read.text != text:
                    raise ValueError("its indexed text is not its lines")
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError, InvalidInputError) as exc:
                raise sqlite3.DatabaseError(f"the read text of {id_!r} is damaged: {exc}") from exc
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
