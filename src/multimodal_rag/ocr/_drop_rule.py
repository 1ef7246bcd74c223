"""Which recognised lines a reader keeps: the confidence floor and the script rule.

A text recogniser reads *something* in every box its detector proposes. Two kinds of
line are noise rather than text on the object:

- **low confidence**: a line read with a confidence under the floor (``min_confidence``);
- **script-inconsistent**: a line written in a script that is not the image's own. The
  bundled PP-OCR model is trained mostly on Chinese, and on a wood grain, a fabric or a
  grille beside an English label it "reads" a few CJK characters with a fair confidence.

The script rule: each line's script is the Unicode script of most of its letters (digits,
punctuation and symbols belong to no script, so ``"2000"`` is neutral). The image's
dominant script is the one with the most letters, each weighed by its line's confidence,
among the lines read with confidence at least ``confident`` (all lines above the floor when
none is that sure). A line is kept when it is neutral, in the dominant script, or in the
Latin script: model numbers and units (``XG-2047``, ``2000 Wh``) are written in Latin
letters on labels in every script, so a Persian, Chinese or Russian label keeps them.
Any other line is dropped: CJK fragments on a Latin label go, while on a Persian label,
where Arabic script dominates, the Persian lines stay.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence

from multimodal_rag.ocr._types import TextLine

__all__ = ["CONFIDENT", "LATIN", "dominant_script", "keep_lines", "line_script"]

#: The script every label may carry beside its own (model numbers, units).
LATIN = "latin"
#: Lines at least this sure decide the image's dominant script.
CONFIDENT = 0.9

# The first word of a letter's Unicode name -> its script. Han, kana and Hangul are one
# group: the recogniser's hallucinations mix them, and a Japanese label mixes them too.
_SCRIPT_BY_NAME_PREFIX = {
    "LATIN": LATIN,
    "FULLWIDTH": "cjk",  # fullwidth Latin letters come from the Chinese model, not from a Latin label
    "CJK": "cjk",
    "HIRAGANA": "cjk",
    "KATAKANA": "cjk",
    "HANGUL": "cjk",
    "IDEOGRAPHIC": "cjk",
    "ARABIC": "arabic",
    "CYRILLIC": "cyrillic",
    "GREEK": "greek",
    "HEBREW": "hebrew",
}


def char_script(char: str) -> str | None:
    """The script of one character; None for digits, punctuation, symbols and spaces."""
    if char.isascii():
        return LATIN if char.isalpha() else None
    if not unicodedata.category(char).startswith("L"):
        return None
    name = unicodedata.name(char, "")
    head = name.split(" ", 1)[0]
    return _SCRIPT_BY_NAME_PREFIX.get(head, head.lower() or None)


def line_script(text: str) -> str | None:
    """The script of most of ``text``'s letters (the first met on a tie); None without letters."""
    counts = Counter(script for script in map(char_script, text) if script is not None)
    return counts.most_common(1)[0][0] if counts else None


def dominant_script(lines: Sequence[TextLine], *, confident: float = CONFIDENT) -> str | None:
    """The script with the most confidence-weighted letters among the confident lines (or
    among all of ``lines`` when none is confident); None when no line has a letter."""
    sure = [line for line in lines if line.confidence >= confident] or list(lines)
    weights: dict[str, float] = {}
    for line in sure:
        for script in map(char_script, line.text):
            if script is not None:
                weights[script] = weights.get(script, 0.0) + line.confidence
    return max(weights, key=weights.__getitem__) if weights else None


def keep_lines(
    lines: Sequence[TextLine], *, min_confidence: float, confident: float = CONFIDENT
) -> tuple[list[TextLine], int]:
    """The lines the rule keeps, in their order, and how many it dropped.

    A line is dropped when its text is blank, its confidence is under ``min_confidence``,
    or its script is neither neutral, nor Latin, nor the dominant script of the lines
    above the floor.
    """
    readable = [line for line in lines if line.text.strip() and line.confidence >= min_confidence]
    dominant = dominant_script(readable, confident=confident)
    kept = [line for line in readable if line_script(line.text) in (None, LATIN, dominant)]
    return kept, len(lines) - len(kept)
