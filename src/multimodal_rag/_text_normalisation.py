"""One spelling per word for lexical search: what every description store indexes and searches.

Persian and Arabic text has several ways to type the same word: Arabic and Persian letter
forms (``ي``/``ی``, ``ك``/``ک``), three sets of digits, the zero-width non-joiner (ZWNJ)
typed, left out or typed as a space, vowel marks written or not, the stretching tatweel.
A search must find the word however it was typed, so the index and the query both go
through `index_text` (`search_terms` for a query), while the store keeps the user's text
exactly as given: only what the search engine sees is normalised.

The rules, in the order applied (`normalise`):

1. Unicode NFKC, for every script: compatibility forms become their plain letters
   (Arabic presentation forms such as ``ﻙ``, full-width ``Ａ１``, ligatures).
2. Letters folded to one form (`LETTERS`): ``ي ى ئ`` → ``ی``; ``ك ڪ`` → ``ک``;
   ``ۀ ۂ ة ۃ ہ`` → ``ه``; ``أ إ آ ٱ`` → ``ا``; ``ؤ`` → ``و``. These are search foldings,
   not spelling corrections: ``آب`` also finds ``اب``, and ``خانۀ`` finds ``خانه``.
3. Every decimal digit (Unicode category Nd: Persian ``۰-۹``, Arabic-Indic ``٠-٩``, and
   those of other scripts) → ASCII ``0-9``; the Arabic decimal and thousands separators
   ``٫ ٬`` → ``. ,`` and the Arabic percent sign ``٪`` → ``%``.
4. Removed: tatweel ``ـ``; the combining marks of Arabic script (harakat such as
   fatha, kasra, shadda, sukun, tanwin, the superscript alef and the Quranic marks);
   the bidirectional controls (LRM, RLM, ALM, embeddings, overrides, isolates); the soft
   hyphen, the zero-width joiner, the word joiner and the byte-order mark.
5. Control characters (tab and newline among them) → space; the zero-width space → ZWNJ;
   a ZWNJ beside a space, at either end of a word or beside punctuation is dropped, and
   a run of them is one.

`index_text` then writes each word joined by ZWNJ twice: split at the ZWNJ (``می شود``)
and joined (``میشود``), and the same for a Persian prefix or suffix (`PREFIXES`,
`SUFFIXES`) typed apart with a space (``کتاب های`` also gives ``کتابهای``). So
"می‌شود", "میشود" and "می شود" find each other. A query also gets, for each pair of
Persian or Arabic words next to each other, the two joined (`search_terms`): "لباس شویی"
finds "لباسشویی". The reverse, a compound the text spaces and the query joins, is not
found unless the space is before a suffix or after a prefix of those lists.

A lone surrogate (which no store can keep) is refused with `InvalidInputError`.
"""

from __future__ import annotations

import re
import unicodedata
from itertools import pairwise

from multimodal_rag.errors import InvalidInputError

__all__ = [
    "LETTERS",
    "NORMALISATION_VERSION",
    "PREFIXES",
    "SUFFIXES",
    "ZWNJ",
    "index_text",
    "normalise",
    "search_terms",
]

#: Changes whenever a rule changes what `index_text` writes: stores re-index text written under another.
NORMALISATION_VERSION = 1

ZWNJ = "\u200c"

#: Letter forms folded to the one Persian readers expect.
LETTERS: dict[str, str] = {
    "\u064a": "\u06cc",  # ي Arabic yeh
    "\u0649": "\u06cc",  # ى alef maksura
    "\u0626": "\u06cc",  # ئ yeh with hamza above (پائیز, پاییز)
    "\u0643": "\u06a9",  # ك Arabic kaf
    "\u06aa": "\u06a9",  # ڪ swash kaf
    "\u06c0": "\u0647",  # ۀ heh with yeh above (the written ezafe)
    "\u06c2": "\u0647",  # ۂ heh goal with hamza above
    "\u0629": "\u0647",  # ة teh marbuta
    "\u06c3": "\u0647",  # ۃ teh marbuta goal
    "\u06c1": "\u0647",  # ہ heh goal
    "\u0623": "\u0627",  # أ alef with hamza above
    "\u0625": "\u0627",  # إ alef with hamza below
    "\u0622": "\u0627",  # آ alef with madda above
    "\u0671": "\u0627",  # ٱ alef wasla
    "\u0624": "\u0648",  # ؤ waw with hamza above
}

#: Persian prefixes that are written joined, with ZWNJ or with a space.
PREFIXES = frozenset({"می", "نمی", "بی"})
#: Persian suffixes that are written joined, with ZWNJ or with a space.
SUFFIXES = frozenset(
    {
        "ها", "های", "هایی", "هایم", "هایت", "هایش", "هایمان", "هایتان", "هایشان",
        "ی", "ای", "ام", "ات", "اش", "ایم", "اید", "اند", "مان", "تان", "شان",
        "تر", "ترین",
    }
)  # fmt: skip

_PUNCTUATION = {"\u066b": ".", "\u066c": ",", "\u066a": "%"}  # ٫ ٬ ٪
# Invisible characters that only steer layout: removed, so the letters either side join.
_REMOVED = frozenset(
    "\u0640"  # tatweel
    "\u00ad\u200d\u2060\ufeff"  # soft hyphen, zero-width joiner, word joiner, byte-order mark
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"  # bidi controls
)
# The blocks of Arabic script, whose combining marks (harakat, Quranic signs) are removed.
_ARABIC_BLOCKS = ((0x0600, 0x06FF), (0x0750, 0x077F), (0x0870, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF))
_SURROGATE = re.compile("[\ud800-\udfff]")
_SPACES = re.compile(r"\s+")
_ZWNJ_RUNS = re.compile(f"\\s*{ZWNJ}[\\s{ZWNJ}]*")
# A ZWNJ not between two letters or digits (at an end, beside punctuation) separates nothing.
_STRAY_ZWNJ = re.compile(f"(?<![^\\W_]){ZWNJ}|{ZWNJ}(?![^\\W_])")
_EDGE_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$")


class _Folding(dict[int, "int | str | None"]):
    """``str.translate``'s table for rules 2 to 5, each character decided on first sight."""

    def __missing__(self, code: int) -> int | str | None:
        char = chr(code)
        result: int | str | None = code
        if char in LETTERS:
            result = LETTERS[char]
        elif char in _PUNCTUATION:
            result = _PUNCTUATION[char]
        elif char in _REMOVED:
            result = None
        elif char in "\u200b\u200c":  # zero-width space, typed for a ZWNJ; ZWNJ itself
            result = ZWNJ
        else:
            category = unicodedata.category(char)
            if category == "Nd":
                result = str(unicodedata.decimal(char))
            elif category == "Cc":
                result = " "
            elif category == "Mn" and any(low <= code <= high for low, high in _ARABIC_BLOCKS):
                result = None
        self[code] = result
        return result


_FOLDING = _Folding()


def _check(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise InvalidInputError(f"{what} must be a string, got {type(text).__name__}")
    if _SURROGATE.search(text):
        raise InvalidInputError(f"{what} {text!r:.120} has characters UTF-8 cannot store (lone surrogates)")
    return text


def normalise(text: str) -> str:
    """``text`` with rules 1 to 5 of the module's docstring applied; ZWNJ kept only where it
    stands alone between two letters or digits (a run of them is one; beside a space it is
    dropped).

    Raises:
        InvalidInputError: ``text`` is not a string or holds a lone surrogate.
    """
    text = _check(text, "text")
    if text.isascii() and text.isprintable():
        return text  # no rule changes printable ASCII: the common case costs nothing
    # NFKC before the folding (it makes presentation forms plain letters) and after it
    # (removing a mark can leave a letter that composes with the next mark).
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).translate(_FOLDING))
    folded = folded.translate(_FOLDING)
    spaced = _ZWNJ_RUNS.sub(lambda m: ZWNJ if not m.group().strip(ZWNJ) else " ", folded)
    return _STRAY_ZWNJ.sub("", spaced)


def _bare(word: str) -> str:
    return _EDGE_PUNCTUATION.sub("", word)


def _arabic_script(word: str) -> bool:
    """Whether ``word`` is letters of the Arabic block only (after NFKC no presentation forms are left)."""
    return bool(word) and all(0x0600 <= ord(c) <= 0x06FF and c.isalpha() for c in word)


def _joined_forms(words: list[str]) -> list[str]:
    """Each ZWNJ compound joined, and each prefix or suffix typed apart joined to its word."""
    extra = [word.replace(ZWNJ, "") for word in words if ZWNJ in word]
    for left, right in pairwise(words):
        last, first = left.rsplit(ZWNJ, 1)[-1], right.split(ZWNJ, 1)[0]
        # Both whole words of Arabic script: no punctuation between them.
        if (last in PREFIXES or first in SUFFIXES) and _arabic_script(last) and _arabic_script(first):
            extra.append(last + first)
    return extra


def index_text(text: str) -> str:
    """What a store's full-text index is given for ``text``: `normalise` d, each ZWNJ a
    space, then the joined forms of ZWNJ compounds and of prefixes and suffixes typed apart.

    Raises:
        InvalidInputError: ``text`` is not a string or holds a lone surrogate.
    """
    text = _check(text, "text")
    if text.isascii() and text.isprintable():
        return text  # as below, without the work: nothing to fold, no ZWNJ, no Persian affix
    words = _SPACES.split(normalise(text).strip())
    if words == [""]:
        return ""
    split = " ".join(word.replace(ZWNJ, " ") for word in words)
    extra = _joined_forms(words)
    return f"{split} {' '.join(extra)}" if extra else split


def search_terms(query: str) -> list[str]:
    """The words of a query as the index holds them: `index_text`'s, plus each pair of
    Persian or Arabic words next to each other joined (a compound typed with a space).

    Words keep inner punctuation ("XR-2000") and lose the punctuation around them; each
    appears once, in order.

    Raises:
        InvalidInputError: ``query`` is not a string or holds a lone surrogate.
    """
    query = _check(query, "the text query")
    words = [w for w in (_bare(word) for word in index_text(query).split()) if w]
    typed = [w for w in (_bare(word.replace(ZWNJ, "")) for word in _SPACES.split(normalise(query))) if w]
    joined = [a + b for a, b in pairwise(typed) if _arabic_script(a) and _arabic_script(b)]
    return list(dict.fromkeys(words + joined))
