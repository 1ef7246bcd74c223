"""What the description stores' full-text search shares: tokenizers, indexed fields, safe queries.

A user's query is never handed to a search engine's query language. It is cut at
white space into terms, each term is quoted (so ``AND``, ``*``, ``-``, quotes and
parentheses are just characters), and a record matches when it holds any of them;
the engine's relevance score ranks the records.

Every store indexes `indexed_text` (and `indexed_ocr_text`) and searches `query_terms`: both
go through the same normalisation (``multimodal_rag._text_normalisation``: Persian and Arabic
letter forms, digits of every script, ZWNJ, vowel marks, NFKC), so a word is found however
it was typed, while the record keeps the text exactly as it was given.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Collection, Iterable
from typing import Any

from multimodal_rag._text_normalisation import index_text, search_terms
from multimodal_rag._validation import check_int
from multimodal_rag.descriptions.bm25_pruning import TermCounts, pruned_top_k
from multimodal_rag.descriptions.identifiers import fts5_identifier_search, identifier_text
from multimodal_rag.errors import InvalidInputError
from multimodal_rag.types import Record

__all__ = [
    "COLUMNS",
    "DEFAULT_TEXT_FIELDS",
    "MAX_TERMS",
    "TOKENIZERS",
    "MemoryTextIndex",
    "check_text_fields",
    "check_tokenizer",
    "field_text",
    "ocr_text",
    "fts5_phrases",
    "fts5_search",
    "indexed_ocr_text",
    "indexed_text",
    "query_terms",
]

#: Short tokenizer names -> the SQLite FTS5 ``tokenize`` option each stands for.
TOKENIZERS = {
    # Words between spaces and punctuation, case and accents folded: English, Persian, Arabic...
    "unicode61": "unicode61 remove_diacritics 2",
    # English words reduced to their stems ("batteries" finds "battery").
    "porter": "porter unicode61 remove_diacritics 2",
    # Every three characters: text without spaces (CJK), part numbers, substrings.
    "trigram": "trigram",
}

#: Record fields that are columns of their own; any other field name is a metadata key.
COLUMNS = ("description", "image_path")

DEFAULT_TEXT_FIELDS = ("description",)

#: Terms of a query beyond this many are ignored, which bounds the cost of one search.
MAX_TERMS = 64

_BAD_KEY = re.compile('["\\\\\x00-\x1f\x7f]')


def check_tokenizer(tokenizer: object) -> str:
    """Return ``tokenizer`` if it is one of `TOKENIZERS`.

    Raises:
        InvalidInputError: Any other value.
    """
    if not isinstance(tokenizer, str) or tokenizer not in TOKENIZERS:
        raise InvalidInputError(f"tokenizer must be one of {sorted(TOKENIZERS)}, got {tokenizer!r}")
    return tokenizer


def check_text_fields(fields: object) -> tuple[str, ...]:
    """Return the fields to index as a tuple: ``description``, ``image_path`` or metadata keys.

    Raises:
        InvalidInputError: Not a non-empty sequence of distinct names, or a name that
            cannot be a metadata key (``id``, quotes, backslashes, control characters).
    """
    if isinstance(fields, str) or not isinstance(fields, Iterable):
        raise InvalidInputError(f"text_fields must be a list of field names, got {fields!r}")
    names = tuple(fields)
    if not names:
        raise InvalidInputError("text_fields must name at least one field")
    for name in names:
        if not isinstance(name, str) or not name or name == "id" or _BAD_KEY.search(name):
            raise InvalidInputError(
                "text_fields must be 'description', 'image_path' or metadata keys without quotes, "
                f"backslashes or control characters; got {name!r}"
            )
    if len(set(names)) != len(names):
        raise InvalidInputError(f"text_fields names a field twice: {list(names)}")
    return names


def field_text(record: Record, field: str) -> str | None:
    """The text of ``field`` that is indexed: a column, or a metadata value (non-strings as JSON)."""
    if field == "description":
        return record.description
    if field == "image_path":
        return record.image_path
    value: Any = record.metadata.get(field)
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def ocr_text(record: Record) -> str | None:
    """The text read in the record's image, as the full-text index holds it: its own column
    beside the text fields, so that a match in it can be told from one in the description
    (``None`` when nothing was read)."""
    return record.ocr.text if record.ocr is not None else None


def indexed_text(record: Record, field: str) -> str | None:
    """What the full-text index is given for ``field`` of ``record``: `field_text`, normalised
    (``multimodal_rag._text_normalisation.index_text``). Every store indexes this, never the
    raw text, so that a query (`query_terms`) meets the same spelling."""
    text = field_text(record, field)
    return None if text is None else index_text(text)


def indexed_ocr_text(record: Record) -> str | None:
    """What the full-text index is given for the text read in the record's image: `ocr_text`,
    normalised as `indexed_text` normalises a field."""
    text = ocr_text(record)
    return None if text is None else index_text(text)


def query_terms(query: str) -> list[str]:
    """The distinct terms of ``query`` as the index holds them, without the punctuation
    around them, at most `MAX_TERMS`: normalised as `indexed_text` normalises, with the
    joined forms of words typed apart
    (``multimodal_rag._text_normalisation.search_terms``).

    Raises:
        InvalidInputError: ``query`` is not a string, or holds a lone surrogate.
    """
    # Control characters (NUL would end the query early in SQLite's parser) become spaces;
    # punctuation around a term ("battery," "(solar" "-lamp") is not part of it; inside one
    # ("XR-2000") it is.
    return search_terms(query)[:MAX_TERMS]


def fts5_phrases(query: str) -> list[str]:
    """The terms of ``query`` as FTS5 phrases; a record matches when it holds any of them.

    Each term is a quoted FTS5 string: the table's tokenizer splits it into a phrase
    ("XR-2000" is the phrase "xr 2000" for ``unicode61``, the substring "XR-2000" for
    ``trigram``), and nothing in it is an operator.
    """
    return ['"' + term.replace('"', '""') + '"' for term in query_terms(query)]


class MemoryTextIndex:
    """An FTS5 index in memory over records kept elsewhere (the JSON Lines store's dict).

    One column per text field, then one for the text read in the image (`ocr_text`).
    The FTS5 table is contentless: it holds the index, not the text. Removing a record
    from it takes the text that was indexed, so the owner passes the old record.
    A second, trigram, table indexes the identifiers of each record's description and read
    text (`multimodal_rag.descriptions.identifiers`), which ``ids`` keeps beside each id.
    Not thread-safe: the owner serialises calls.
    """

    def __init__(self, text_fields: tuple[str, ...], tokenizer: str) -> None:
        self._fields = text_fields
        self._counts = TermCounts()
        self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        columns = ", ".join([*(f"c{i}" for i in range(len(text_fields))), "ocr"])
        self._db.execute(
            "CREATE TABLE ids (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, identifiers TEXT, identifiers_like TEXT)"
        )
        self._db.execute(
            "CREATE VIRTUAL TABLE ident USING fts5(identifiers, identifiers_like, content='', tokenize='trigram')"
        )
        self._db.execute(
            f"CREATE VIRTUAL TABLE fts USING fts5({columns}, content='', "
            f"tokenize='{TOKENIZERS[tokenizer]}')"
        )
        marks = ", ".join("?" * (len(text_fields) + 1))
        self._insert = f"INSERT INTO fts (rowid, {columns}) VALUES (?, {marks})"
        self._remove = f"INSERT INTO fts (fts, rowid, {columns}) VALUES ('delete', ?, {marks})"

    def _texts(self, record: Record) -> list[str | None]:
        return [*(indexed_text(record, field) for field in self._fields), indexed_ocr_text(record)]

    def update(self, records: Iterable[tuple[Record | None, Record | None]]) -> None:
        """Apply ``(old, new)`` changes in one transaction: ``old`` is what is indexed now
        (``None`` for a new id), ``new`` what replaces it (``None`` to remove it)."""
        db = self._db
        db.execute("BEGIN")
        try:
            for old, new in records:
                seq: int | None = None
                if old is not None:
                    row = db.execute(
                        "SELECT seq, identifiers, identifiers_like FROM ids WHERE id = ?", (old.id,)
                    ).fetchone()
                    if row is not None:
                        seq = int(row[0])
                        db.execute(self._remove, (seq, *self._texts(old)))
                        db.execute(_REMOVE_IDENTIFIERS, row)
                if new is None:
                    if seq is not None:
                        db.execute("DELETE FROM ids WHERE seq = ?", (seq,))
                    continue
                if seq is None:
                    seq = db.execute("INSERT INTO ids (id) VALUES (?)", (new.id,)).lastrowid
                db.execute(self._insert, (seq, *self._texts(new)))
                identifiers = identifier_text([new.description, ocr_text(new)])
                db.execute("UPDATE ids SET identifiers = ?, identifiers_like = ? WHERE seq = ?", (*identifiers, seq))
                db.execute("INSERT INTO ident (rowid, identifiers, identifiers_like) VALUES (?, ?, ?)", (seq, *identifiers))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def search(self, query: str, k: int, ids: Collection[str] | None) -> list[tuple[str, float]]:
        """As [`DescriptionStore.search_text`][multimodal_rag.protocols.DescriptionStore.search_text]."""
        return fts5_search(self._db, query, k, ids, table="fts", id_table="ids", counts=self._counts)

    def search_identifiers(self, query: str, k: int, ids: Collection[str] | None) -> list[tuple[str, float, list[str]]]:
        """As [`DescriptionStore.search_identifiers`][multimodal_rag.protocols.DescriptionStore.search_identifiers]."""
        return fts5_identifier_search(self._db, query, k, ids, table="ident", id_table="ids")


_REMOVE_IDENTIFIERS = "INSERT INTO ident (ident, rowid, identifiers, identifiers_like) VALUES ('delete', ?, ?, ?)"


def fts5_search(
    db: sqlite3.Connection,
    query: str,
    k: int,
    ids: Collection[str] | None,
    *,
    table: str,
    id_table: str,
    counts: TermCounts | None = None,
) -> list[tuple[str, float]]:
    """BM25 search of the FTS5 ``table`` whose rowids are ``seq`` in ``id_table``, which names
    each record's ``id``: best first, ties by id.

    The score is ``-bm25()``, so that higher is better. Without ``ids``, a query that
    mixes rare and common words skips the records that hold only common words when they
    cannot reach the top ``k`` (`bm25_pruning`);
    ``counts`` remembers how many records hold each word until the index changes.

    Raises:
        InvalidInputError: ``k`` is not a positive integer, or SQLite refused the search.
    """
    k = check_int("k", k)
    phrases = fts5_phrases(query)
    if not phrases:
        return []
    sql = (
        f"SELECT r.id, -bm25({table}) AS score FROM {table} JOIN {id_table} AS r ON r.seq = {table}.rowid "
        f"WHERE {table} MATCH ?"
    )
    params: list[Any] = [" OR ".join(phrases)]
    if ids is not None:
        wanted = [i for i in ids if isinstance(i, str)]
        if not wanted:
            return []
        sql += " AND r.id IN (SELECT value FROM json_each(?))"
        params.append(json.dumps(wanted))
    sql += " ORDER BY score DESC, r.id LIMIT ?"
    params.append(k)
    try:
        if ids is None:
            pruned = pruned_top_k(db, table, id_table, phrases, k, counts)
            if pruned is not None:
                return pruned
        rows = db.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        raise InvalidInputError(f"cannot search the descriptions for {query!r}: {exc}") from exc
    return [(row[0], float(row[1])) for row in rows]
