"""Exact BM25 top-k over an FTS5 index without scoring every record that holds a common word.

A query such as "inverter battery XR-2937" matches most of a catalogue through "battery",
and FTS5's ``bm25()`` costs about as much per matching row as everything else in the query
together. Yet a record that holds only common words cannot reach the top k: BM25 gives one
term at most ``idf * (k1 + 1)``, and a common word's idf is small. This is the MaxScore
argument of search engines (Turtle and Flood, 1995), run on FTS5's own numbers:

1. Count the records each term matches (capped where the count no longer changes its idf)
   and read the row count FTS5 itself uses, giving each term's exact idf and its bound.
2. Score, with the whole query, the records holding the rarest terms; the k-th score is a
   floor for the final k-th score.
3. The common terms whose bounds add up to less than that floor are *non-essential*: a
   record holding only those scores below the floor. Score, with the whole query, only the
   records holding an essential term; their top k is the exact answer.

FTS5 scores a record against the phrases of its ``MATCH`` expression. To score only the
records holding the essential terms ``E`` against all the terms ``Q``, the expression is
``(E) AND (Q)``, which counts the phrases of ``E`` twice; their score alone, from ``E``,
is taken off again. Scores agree with plain ``bm25()`` to about 1e-15.

That is close, but not equal: two records that ``bm25()`` scores exactly alike (and the
plain query so orders by id) can come out 1e-15 apart, in either order, and the wrong one
would enter the top k. So records whose scores lie within `_TIE_WIDTH` of a neighbour's,
in or at the edge of the top k, are scored again by ``bm25()`` itself, over the whole query:
ties are then exactly the plain query's ties, broken by id as it breaks them.

Two of FTS5's internals are read, not published: the row count in its "averages" record
(``%_data`` row 1) and ``bm25()``'s constants. `format_understood` proves both on a small
table once per process, before the first pruned search; where the installed SQLite stores
or scores otherwise, every search is plain ``bm25()``.
"""

from __future__ import annotations

import functools
import json
import math
import sqlite3
from typing import Any

__all__ = ["TermCounts", "format_understood", "pruned_top_k"]

# FTS5's bm25() parameters (fts5_aux.c); one term adds at most idf * (K1 + 1) to a score.
_K1 = 1.2
_B = 0.75
# The idf FTS5 gives a term that most records hold.
_MIN_IDF = 1e-6
# Pruning pays while the records holding an essential term are this share of the query's
# matches or fewer: each of them is scored twice and passes through Python.
_MAX_SHARE = 0.25
# Bounds are computed in Python and scores in C, with sums in another order: keep a margin.
_MARGIN = 1e-9
# Scores this close (relative) may be equal in bm25() and apart only by the subtraction's
# rounding (about 1e-15): such records are scored again exactly.
_TIE_WIDTH = 1e-9


# Counts kept per index; dropped whole beyond this many phrases.
_MAX_COUNTS = 4096


class TermCounts:
    """How many records hold each phrase, remembered until the index changes.

    Counting a common word walks its whole posting list, a third of a search's cost; users
    search with the same words again and again. The counts stay valid while the
    connection has made no change (``total_changes``, which counts changes made by
    triggers too) and while it is the same connection. The owner serialises calls.
    """

    def __init__(self) -> None:
        self._db: sqlite3.Connection | None = None
        self._changes = -1
        self._counts: dict[tuple[str, str], int] = {}

    def count(self, db: sqlite3.Connection, table: str, phrase: str, cap: int) -> int:
        """Records of ``table`` matching ``phrase``, counted up to ``cap``."""
        if db is not self._db or db.total_changes != self._changes or len(self._counts) > _MAX_COUNTS:
            self._db, self._changes, self._counts = db, db.total_changes, {}
        key = (table, phrase)
        found = self._counts.get(key)
        if found is None or found >= cap:  # a capped count is exact only up to its cap
            found = db.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {table} MATCH ? LIMIT ?)", (phrase, cap)
            ).fetchone()[0]
            self._counts[key] = found
        return found


def pruned_top_k(
    db: sqlite3.Connection,
    table: str,
    id_table: str,
    phrases: list[str],
    k: int,
    counts: TermCounts | None = None,
) -> list[tuple[str, float]] | None:
    """The best ``k`` records for the FTS5 phrases ``phrases`` (joined by OR), as
    ``(id, -bm25)`` best first with ties by id, or ``None`` when pruning would not pay
    (the caller then runs the plain query).

    ``id_table`` maps the FTS5 rowids (its ``seq``) to record ids (its ``id``); ``counts``
    remembers phrase counts between searches of the same index.
    """
    if len(phrases) < 2 or not format_understood():
        return None
    total = _row_count(db, table)
    if total is None:
        return None
    # Beyond half the rows a term's idf is the floor, so counting further changes nothing.
    cap = total // 2 + 1
    counter = counts if counts is not None else TermCounts()
    counts_of = {phrase: counter.count(db, table, phrase, cap) for phrase in phrases}
    bound = {phrase: _idf(total, counts_of[phrase]) * (_K1 + 1) for phrase in phrases}
    rarest_first = sorted(phrases, key=lambda phrase: (-bound[phrase], counts_of[phrase]))
    matches = sum(counts_of.values())

    seed: list[str] = []
    for phrase in rarest_first:
        seed.append(phrase)
        if sum(counts_of[p] for p in seed) >= k:
            break
    if len(seed) == len(phrases):
        return None
    scores = _scores(db, table, seed, phrases)
    if len(scores) < k:
        return None
    floor = sorted(scores.values(), reverse=True)[k - 1]

    # The longest run of the weakest terms whose bounds together stay below the floor.
    essential = list(rarest_first)
    reach = 0.0
    while essential and (reach + bound[essential[-1]]) * (1 + _MARGIN) < floor:
        reach += bound[essential.pop()]
    if len(essential) == len(phrases):
        return None
    if len(essential) > len(seed):
        if sum(counts_of[p] for p in essential) > _MAX_SHARE * matches:
            return None
        scores = _scores(db, table, essential, phrases)
    return _best(db, table, id_table, phrases, scores, k)


def _scores(db: sqlite3.Connection, table: str, subset: list[str], phrases: list[str]) -> dict[int, float]:
    """``-bm25`` for the whole query of every record that holds a phrase of ``subset``."""
    part = " OR ".join(subset)
    query = f"SELECT rowid, bm25({table}) FROM {table} WHERE {table} MATCH ?"
    doubled = dict(db.execute(query, (f"({part}) AND ({' OR '.join(phrases)})",)).fetchall())
    alone = dict(db.execute(query, (part,)).fetchall())
    return {rowid: alone[rowid] - score for rowid, score in doubled.items()}


def _best(
    db: sqlite3.Connection, table: str, id_table: str, phrases: list[str], scores: dict[int, float], k: int
) -> list[tuple[str, float]]:
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    # Every record (nearly) tied with the k-th, so that ties are broken by id as the plain
    # query does; the near ties then get bm25()'s own scores, which tie exactly or not at all.
    cut = min(k, len(ranked))
    while cut < len(ranked) and _near(ranked[cut][1], ranked[cut - 1][1]):
        cut += 1
    kept = dict(ranked[:cut])
    again = {rowid for i in range(1, cut) if _near(ranked[i][1], ranked[i - 1][1]) for rowid, _ in ranked[i - 1 : i + 1]}
    if again:
        kept.update(_exact_scores(db, table, phrases, sorted(again)))
    names: dict[int, str] = dict(
        db.execute(
            f"SELECT seq, id FROM {id_table} WHERE seq IN (SELECT value FROM json_each(?))",
            (json.dumps(list(kept)),),
        ).fetchall()
    )
    best = sorted(((names[rowid], score) for rowid, score in kept.items()), key=lambda item: (-item[1], item[0]))
    return best[:k]


def _near(a: float, b: float) -> bool:
    return abs(a - b) <= _TIE_WIDTH * max(abs(a), abs(b))


def _exact_scores(db: sqlite3.Connection, table: str, phrases: list[str], rowids: list[int]) -> dict[int, float]:
    """``-bm25()`` of the whole query for ``rowids`` (sorted), as the plain query computes it.

    FTS5 restricts its walk to the rowid range, so a few neighbours cost a few rows; the
    ``IN`` keeps bm25() to the rows asked for.
    """
    query = (
        f"SELECT rowid, -bm25({table}) FROM {table} WHERE {table} MATCH ? AND rowid BETWEEN ? AND ? "
        "AND rowid IN (SELECT value FROM json_each(?))"
    )
    found = db.execute(query, (" OR ".join(phrases), rowids[0], rowids[-1], json.dumps(rowids))).fetchall()
    return {rowid: score for rowid, score in found}


#: The probe's documents: one deleted again, so that the row count must follow deletes too.
_PROBE = ("alpha beta", "alpha gamma gamma", "beta beta delta alpha", "delta", "beta epsilon zeta eta", "theta")


@functools.cache
def format_understood() -> bool:
    """Whether this SQLite's FTS5 keeps its row count where `_row_count` reads it and scores
    with the ``bm25()`` this module bounds: checked once, on an in-memory table of known
    content, against the row count and every score computed here from the formula."""
    db = sqlite3.connect(":memory:")
    try:
        # FTS5 writes its averages record when a transaction commits.
        with db:
            db.execute("CREATE VIRTUAL TABLE probe USING fts5(text)")
            db.executemany("INSERT INTO probe(rowid, text) VALUES (?, ?)", enumerate(_PROBE, 1))
        with db:
            db.execute("DELETE FROM probe WHERE rowid = ?", (len(_PROBE),))
        documents = [text.split() for text in _PROBE[:-1]]
        if _row_count(db, "probe") != len(documents):
            return False
        average = sum(map(len, documents)) / len(documents)
        for term in ("beta", "gamma"):  # a common term (idf at its floor) and a rare one
            holding = sum(term in words for words in documents)
            idf = _idf(len(documents), holding)
            rows = db.execute("SELECT rowid, -bm25(probe) FROM probe WHERE probe MATCH ?", (term,)).fetchall()
            if len(rows) != holding:
                return False
            for rowid, score in rows:
                words = documents[rowid - 1]
                tf = words.count(term)
                expected = idf * tf * (_K1 + 1) / (tf + _K1 * (1 - _B + _B * len(words) / average))
                if not math.isclose(score, expected, rel_tol=1e-9):
                    return False
        return True
    except sqlite3.Error:  # no FTS5, or a build that refuses the probe: plain bm25() then
        return False
    finally:
        db.close()


def _idf(total: int, count: int) -> float:
    idf = math.log((total - count + 0.5) / (count + 0.5))
    return idf if idf > 0 else _MIN_IDF


def _row_count(db: sqlite3.Connection, table: str) -> int | None:
    """The row count bm25() uses: the first varint of FTS5's "averages" record (rowid 1 of
    the ``_data`` table). ``None`` when the record is missing or unreadable."""
    row: Any = db.execute(f"SELECT block FROM {table}_data WHERE id = 1").fetchone()
    if row is None or not isinstance(row[0], bytes) or not row[0]:
        return None
    return _varint(row[0])


def _varint(blob: bytes) -> int | None:
    """SQLite's big-endian varint: 7 bits a byte while the top bit is set, 8 in a ninth byte."""
    value = 0
    for position, byte in enumerate(blob[:9]):
        if position == 8:
            return (value << 8) | byte
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value
    return None
