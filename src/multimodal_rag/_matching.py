"""Why a hit matched a query's words: which of them its description or read text holds, and
which of its identifiers matched the query's.

Worked out for the few hits returned, from their records, after the stores have ranked them; it
shows what the words had in common, not the engine's own reasoning (a ``porter`` index also
matches other forms of a word, which are not listed).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

from multimodal_rag._text_normalisation import index_text
from multimodal_rag.descriptions.full_text import query_terms
from multimodal_rag.descriptions.identifiers import spellings

__all__ = ["matched_terms"]

_WORD = re.compile(r"\w+")


def _folded(text: str) -> list[str]:
    """The words of ``text`` as the full-text indexes compare them: normalised as they are
    (`index_text`: Persian and Arabic letter forms, digits, ZWNJ), case-folded, without accents."""
    decomposed = unicodedata.normalize("NFKD", index_text(text).casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _WORD.findall(plain)


def matched_terms(
    query: str, texts: Sequence[str | None], identifier_forms: Iterable[str] = ()
) -> tuple[str, ...]:
    """The terms of ``query`` whose every word is among the words of ``texts``, as `query_terms`
    gives them (but those that are pieces of a matched identifier), then the
    ``identifier_forms`` that matched, as ``texts`` write them."""
    words: set[str] = set()
    for text in texts:
        if text:
            words.update(_folded(text))
    identifiers = spellings(identifier_forms, texts)
    # A word that is only a piece of a matched identifier ("xr" of "XR-2000") says nothing more.
    pieces = {word for spelling in identifiers for word in _folded(spelling)}
    pieces.update(identifier_forms)  # and the digit run "2000" of "xr2000"
    found = [
        term
        for term in query_terms(query)
        if (parts := _folded(term)) and all(p in words for p in parts) and not set(parts) <= pieces
    ]
    found += identifiers
    # An identifier the query writes as the text does is listed once.
    seen: set[str] = set()
    out = []
    for term in found:
        key = term.casefold()
        if key not in seen:
            seen.add(key)
            out.append(term)
    return tuple(out)
