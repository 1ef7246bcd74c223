"""Identifiers (model numbers, part numbers) found in part and in other spellings.

A word is *identifier-like* when it holds a digit: "XG-2047", "12V", "2047". Its **form**
is the word case-folded with every separator taken out ("XG-2047", "xg2047" and "Xg_2047"
are all ``xg2047``), with any script's digits written as ASCII ones. A short word of letters
right before one ("XG 2047") makes a joined form too (``xg2047``), and each run of three or
more digits in a form is a form of its own (``2047``), so that the number alone finds it.

A form's **look-alike** is the form with the letters a reader of printed text confuses with
digits written as those digits (O→0, I and L→1, S→5, B→8), in forms that mix letters and
digits; a form of digits alone is its own look-alike. "XG-2O47", read from a photo, and
"XG-2047" have the same look-alike, ``xg2047``.

The stores index each record's forms and look-alikes (of its description and the text read in
its image) with a trigram index, so that a query's form is found inside a longer one, and
rank what the index finds with `identifier_score`:

- a query identifier equal to a record's form scores `EXACT`;
- inside a record's form ("2047" in ``xg2047``), `PART`;
- equal to a record's look-alike only (a confusion), `CONFUSED`;
- inside one, `CONFUSED_PART`;
- a digit run of the query identifier (not the identifier itself) equal to a record's form,
  `DIGITS`.

Each query identifier counts once, by its best match; a record's score is their sum.
"""

from __future__ import annotations

import json
import re
import sqlite3
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from typing import Any

__all__ = [
    "CONFUSED",
    "CONFUSED_PART",
    "DIGITS",
    "EXACT",
    "PART",
    "QueryIdentifier",
    "fts5_identifier_search",
    "identifier_forms",
    "identifier_score",
    "identifier_text",
    "look_alike",
    "match_terms",
    "query_identifiers",
    "rank_candidates",
    "spellings",
]

EXACT = 1.0
CONFUSED = 0.6
PART = 0.5
DIGITS = 0.4
CONFUSED_PART = 0.3

#: Forms shorter than this are not indexed or searched: a trigram index needs three characters.
MIN_FORM = 3
#: A word of letters this short, right before an identifier, may be its prefix ("XG 2047").
_MAX_PREFIX = 4
#: Query identifiers beyond this many are ignored, which bounds the cost of one search.
MAX_QUERY_IDENTIFIERS = 16

_SEPARATORS = re.compile(r"[\W_]+")
_DIGIT_RUN = re.compile(r"[0-9]{3,}")
_LOOK_ALIKE = str.maketrans({"o": "0", "i": "1", "l": "1", "s": "5", "b": "8"})


def _ascii_digits(text: str) -> str:
    """Any script's decimal digits (Persian ۲, Arabic-Indic ٢, full-width ２) as ASCII ones."""
    if text.isascii():
        return text
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text)


def _form(word: str) -> str:
    return _SEPARATORS.sub("", _ascii_digits(word).casefold())


def _has_digit(form: str) -> bool:
    return any("0" <= c <= "9" for c in form)


def _mixed(form: str) -> bool:
    return _has_digit(form) and any(c.isalpha() for c in form)


def look_alike(form: str) -> str:
    """The form with the letters OCR confuses with digits written as digits, in a form that
    mixes letters and digits (any other form is returned as it is)."""
    return form.translate(_LOOK_ALIKE) if _mixed(form) else form


def _words(text: str) -> list[tuple[str, str]]:
    """Each white-space separated word of ``text`` with its form."""
    return [(word, _form(word)) for word in text.split()]


def _word_forms(text: str) -> Iterable[tuple[str, str, bool]]:
    """``(spelling, form, primary)`` for each identifier form in ``text``; a digit run cut from
    a longer form is not primary, and its spelling is that form's word."""
    words = _words(text)
    for i, (word, form) in enumerate(words):
        if not _has_digit(form):
            continue
        yield word, form, True
        if i > 0:
            before, before_form = words[i - 1]
            if 0 < len(before_form) <= _MAX_PREFIX and before_form.isalpha() and form[0].isdigit():
                yield f"{before} {word}", before_form + form, True
        for run in _DIGIT_RUN.findall(form):
            if run != form:
                yield word, run, False  # written as the word it is cut from


def identifier_forms(texts: Iterable[str | None]) -> list[str]:
    """The distinct identifier forms of ``texts`` (each at least `MIN_FORM` characters), in order."""
    forms: dict[str, None] = {}
    for text in texts:
        if text:
            forms.update((form, None) for _, form, _ in _word_forms(text) if len(form) >= MIN_FORM)
    return list(forms)


def identifier_text(texts: Iterable[str | None]) -> tuple[str, str]:
    """What a store indexes for a record's ``texts``: its forms and their look-alikes, each
    joined by spaces (``("", "")`` when it has none)."""
    forms = identifier_forms(texts)
    return " ".join(forms), " ".join(dict.fromkeys(look_alike(form) for form in forms))


class QueryIdentifier:
    """One identifier of a query: its form, its look-alike and its digit runs."""

    __slots__ = ("digits", "form", "like")

    def __init__(self, form: str) -> None:
        self.form = form
        self.like = look_alike(form)
        self.digits = tuple(run for run in _DIGIT_RUN.findall(form) if run != form)

    def __repr__(self) -> str:
        return f"QueryIdentifier({self.form!r})"


def query_identifiers(query: str) -> list[QueryIdentifier]:
    """The identifiers of a query (at most `MAX_QUERY_IDENTIFIERS`): "XG-2047", "xg 2047" and
    "XG2047" each give ``xg2047``; "2047" gives ``2047``."""
    if not isinstance(query, str):
        return []
    cleaned = re.sub("[\x00-\x1f\x7f]", " ", query)
    forms = dict.fromkeys(
        form for _, form, primary in _word_forms(cleaned) if primary and len(form) >= MIN_FORM
    )
    return [QueryIdentifier(form) for form in list(forms)[:MAX_QUERY_IDENTIFIERS]]


def match_terms(identifiers: Sequence[QueryIdentifier]) -> tuple[list[str], list[str]]:
    """The strings to look for among records' forms (each identifier's form and digit runs)
    and among their look-alikes (each identifier's look-alike)."""
    forms = dict.fromkeys(term for q in identifiers for term in (q.form, *q.digits))
    likes = dict.fromkeys(q.like for q in identifiers)
    return list(forms), list(likes)


def identifier_score(
    identifiers: Sequence[QueryIdentifier], forms: Sequence[str]
) -> tuple[float, list[str]]:
    """How well a record whose identifier forms are ``forms`` matches the query's
    ``identifiers`` (see the module's text), and the record's forms that matched."""
    likes = [look_alike(form) for form in forms]
    total = 0.0
    matched: dict[str, None] = {}
    for q in identifiers:
        best, which = 0.0, None
        for form, like in zip(forms, likes):
            if form == q.form:
                score = EXACT
            elif q.form in form:
                score = PART
            elif like == q.like:
                score = CONFUSED
            elif q.digits and form in q.digits:
                score = DIGITS
            elif q.like in like:
                score = CONFUSED_PART
            else:
                continue
            if score > best:
                best, which = score, form
        if which is not None:
            total += best
            matched[which] = None
    return round(total, 6), list(matched)


def spellings(forms: Iterable[str], texts: Iterable[str | None]) -> list[str]:
    """How ``forms`` are written in ``texts`` ("XG-2047" for ``xg2047``); a form not found
    written is given as it is."""
    written: dict[str, str] = {}
    for text in texts:
        if text:
            for spelling, form, _ in _word_forms(text):
                written.setdefault(form, spelling.strip(".,;:!?()[]{}\"'"))
    return [written.get(form, form) for form in forms]


#: How many records the trigram index hands over for ranking, at least (and 8 per result wanted).
_CANDIDATES = 200


def _quoted(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def fts5_identifier_search(
    db: sqlite3.Connection,
    query: str,
    k: int,
    ids: Collection[str] | None,
    *,
    table: str,
    id_table: str,
) -> list[tuple[str, float, list[str]]]:
    """Identifier search on a trigram FTS5 ``table`` with columns ``identifiers`` and
    ``identifiers_like`` (see `identifier_text`), whose rowids are ``seq`` in ``id_table``,
    which holds each record's ``id`` and ``identifiers``.

    The index finds the records holding a query identifier's form or digit run inside one of
    theirs, or its look-alike inside one of theirs; records holding a form whole come first,
    and `identifier_score` ranks them.

    Returns:
        Up to ``k`` ``(id, score, forms matched)``, best first, ties by id.

    Raises:
        InvalidInputError: ``k`` is not a positive integer, or SQLite refused the search.
    """
    from multimodal_rag._validation import check_int
    from multimodal_rag.errors import InvalidInputError

    k = check_int("k", k)
    identifiers = query_identifiers(query)
    if not identifiers:
        return []
    forms, likes = match_terms(identifiers)
    expression = f"identifiers : ({' OR '.join(map(_quoted, forms))}) OR identifiers_like : ({' OR '.join(map(_quoted, likes))})"
    whole = " + ".join("(instr(' ' || r.identifiers || ' ', ?) > 0)" for _ in identifiers)
    params: list[Any] = [f" {q.form} " for q in identifiers]
    sql = (
        f"SELECT r.id, r.identifiers, {whole} AS whole FROM {table} JOIN {id_table} AS r ON r.seq = {table}.rowid "
        f"WHERE {table} MATCH ?"
    )
    params.append(expression)
    if ids is not None:
        wanted = [i for i in ids if isinstance(i, str)]
        if not wanted:
            return []
        sql += " AND r.id IN (SELECT value FROM json_each(?))"
        params.append(json.dumps(wanted))
    sql += f" ORDER BY whole DESC, bm25({table}), r.id LIMIT ?"
    params.append(max(_CANDIDATES, 8 * k))
    try:
        rows = db.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        raise InvalidInputError(f"cannot search the identifiers for {query!r}: {exc}") from exc
    return rank_candidates(
        identifiers, ((id_, text if isinstance(text, str) else "") for id_, text, _ in rows), k
    )


def rank_candidates(
    identifiers: Sequence[QueryIdentifier], candidates: Iterable[tuple[str, str]], k: int
) -> list[tuple[str, float, list[str]]]:
    """The best ``k`` of ``(id, identifier forms joined by spaces)`` by `identifier_score`."""
    scored = []
    for id_, text in candidates:
        score, matched = identifier_score(identifiers, text.split())
        if score > 0:
            scored.append((id_, score, matched))
    scored.sort(key=lambda entry: (-entry[1], entry[0]))
    return scored[:k]
