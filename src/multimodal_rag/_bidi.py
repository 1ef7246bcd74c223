"""Right-to-left text for pictures: bidi levels, visual order and Arabic letter forms.

Pillow with raqm shapes and reorders one run of one font by itself, but a line that mixes
fonts (Persian beside Chinese) is drawn run by run, so the order of the runs has to be
worked out here. This is the Unicode Bidirectional Algorithm (UAX #9) without its explicit
embeddings: the paragraph takes the direction of its first strong letter (P2, P3); the weak
and neutral types are resolved by rules W1-W7 and N1-N2; levels by I1-I2; trailing
whitespace returns to the paragraph level (L1); and runs are reordered by L2. Explicit
embedding, override and isolate controls are removed before this runs (their effect is
lost; LRM, RLM and ALM still count as strong letters).

Where there is no raqm (and for matplotlib, which shapes nothing), `shape_arabic` replaces
Arabic and Persian letters by their contextual presentation forms (initial, medial, final,
isolated, and the lam-alef ligatures), which a font draws without a shaping engine.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from functools import lru_cache

__all__ = ["embedding_levels", "mirror", "paragraph_is_rtl", "shape_arabic", "visual_order"]

_STRONG = {"L", "R", "AL"}
_NEUTRAL = {"B", "S", "WS", "ON", "BN"}
ZWJ = "\u200d"
ZWNJ = "\u200c"
_TATWEEL = "\u0640"
_LAM = "\u0644"

# Brackets that turn round in right-to-left text (Bidi_Mirroring_Glyph, the common ones).
_MIRRORS = dict(zip("()[]{}<>«»‹›", ")(][}{><»«›‹"))


def _bidi_class(char: str) -> str:
    # Unassigned code points are left to right, like most of the unassigned planes (UAX #9 3.2).
    return unicodedata.bidirectional(char) or "L"


def paragraph_is_rtl(text: str) -> bool:
    """Whether the first strong letter of ``text`` is right to left (rules P2 and P3)."""
    for char in text:
        kind = _bidi_class(char)
        if kind in _STRONG:
            return kind != "L"
    return False


def embedding_levels(text: str, *, rtl: bool | None = None) -> list[int]:
    """The resolved level of each code point of ``text``: even is left to right, odd right to left.

    Args:
        text: One line, without explicit embedding or isolate controls.
        rtl: The paragraph direction; ``None`` takes it from the first strong letter.
    """
    base = int(paragraph_is_rtl(text) if rtl is None else rtl)
    edge = "R" if base else "L"  # sos and eos: no embeddings, so both are the paragraph's
    types = [_bidi_class(char) for char in text]
    count = len(types)

    previous = edge
    for i, kind in enumerate(types):  # W1: a mark takes the type of what it marks
        if kind == "NSM":
            types[i] = previous
        else:
            previous = kind
    strong = edge
    for i, kind in enumerate(types):  # W2: European digits after Arabic letters are Arabic digits
        if kind in _STRONG:
            strong = kind
        elif kind == "EN" and strong == "AL":
            types[i] = "AN"
    types = ["R" if kind == "AL" else kind for kind in types]  # W3
    for i in range(1, count - 1):  # W4: one separator between two numbers of a kind joins them
        before, kind, after = types[i - 1], types[i], types[i + 1]
        if (kind == "ES" and before == after == "EN") or (
            kind == "CS" and before == after and before in ("EN", "AN")
        ):
            types[i] = before
    i = 0
    while i < count:  # W5: terminators (%, $) next to European digits are digits
        if types[i] != "ET":
            i += 1
            continue
        end = i
        while end < count and types[end] == "ET":
            end += 1
        if (i > 0 and types[i - 1] == "EN") or (end < count and types[end] == "EN"):
            types[i:end] = ["EN"] * (end - i)
        i = end
    types = ["ON" if kind in ("ES", "ET", "CS") else kind for kind in types]  # W6
    strong = edge
    for i, kind in enumerate(types):  # W7: European digits after left-to-right letters are letters
        if kind in ("L", "R"):
            strong = kind
        elif kind == "EN" and strong == "L":
            types[i] = "L"

    def direction(kind: str) -> str:
        return "L" if kind == "L" else "R"  # numbers count as right to left for N1

    i = 0
    while i < count:  # N1, N2: neutrals between two of a direction take it, else the paragraph's
        if types[i] not in _NEUTRAL:
            i += 1
            continue
        end = i
        while end < count and types[end] in _NEUTRAL:
            end += 1
        before = edge if i == 0 else direction(types[i - 1])
        after = edge if end == count else direction(types[end])
        types[i:end] = [before if before == after else edge] * (end - i)
        i = end

    levels: list[int] = []
    for kind in types:  # I1, I2
        if base == 0:
            levels.append(0 if kind == "L" else 1 if kind == "R" else 2)
        else:
            levels.append(1 if kind == "R" else 2)
    end = count
    while end > 0 and _bidi_class(text[end - 1]) in ("WS", "S", "B", "BN"):  # L1
        end -= 1
    levels[end:] = [base] * (count - end)
    return levels


def visual_order(levels: Sequence[int]) -> list[int]:
    """Indices of items with these levels, left to right on the page (rule L2)."""
    order = list(range(len(levels)))
    odd = [level for level in levels if level % 2]
    if not odd:
        return order
    for level in range(max(levels), min(odd) - 1, -1):
        i = 0
        while i < len(order):
            if levels[order[i]] < level:
                i += 1
                continue
            end = i
            while end < len(order) and levels[order[end]] >= level:
                end += 1
            order[i:end] = order[i:end][::-1]
            i = end
    return order


def mirror(text: str) -> str:
    """Brackets turned round, for text drawn right to left without a shaping engine."""
    return "".join(_MIRRORS.get(char, char) for char in text)


@lru_cache(maxsize=1)
def _forms() -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """Presentation forms by letter, and lam-alef ligatures by alef, from Unicode's decompositions."""
    letters: dict[str, dict[str, str]] = {}
    lam_alef: dict[str, dict[str, str]] = {}
    for block in (range(0xFB50, 0xFE00), range(0xFE70, 0xFF00)):
        for point in block:
            parts = unicodedata.decomposition(chr(point)).split()
            if len(parts) < 2 or parts[0] not in ("<isolated>", "<final>", "<initial>", "<medial>"):
                continue
            form, bases = parts[0][1:-1], [chr(int(part, 16)) for part in parts[1:]]
            if len(bases) == 1:
                letters.setdefault(bases[0], {})[form] = chr(point)
            elif len(bases) == 2 and bases[0] == _LAM:
                lam_alef.setdefault(bases[1], {})[form] = chr(point)
    return letters, lam_alef


def _joining(char: str, letters: dict[str, dict[str, str]]) -> str:
    """D (joins both sides), R (joins the letter before it only), T (transparent) or U."""
    if char in (ZWJ, _TATWEEL):
        return "D"
    forms = letters.get(char)
    if forms is not None:
        return "D" if "initial" in forms or "medial" in forms else "R"
    if char != ZWNJ and unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return "T"
    return "U"


def shape_arabic(text: str) -> str:
    """``text`` (logical order) with Arabic letters in their contextual presentation forms.

    Letters with no presentation form, and every other character, are left as they are;
    ZWJ and ZWNJ steer the joining and are then dropped.
    """
    letters, lam_alef = _forms()
    joining = [_joining(char, letters) for char in text]
    solid = [i for i, kind in enumerate(joining) if kind != "T"]
    out: list[str] = []
    skip = -1
    for position, i in enumerate(solid):
        char = text[i]
        before = joining[solid[position - 1]] if position > 0 else "U"
        after_index = solid[position + 1] if position + 1 < len(solid) else None
        after = joining[after_index] if after_index is not None else "U"
        joins_before = joining[i] in ("D", "R") and before == "D"
        joins_after = joining[i] == "D" and after in ("D", "R")
        # Marks between i and the next solid character follow it unchanged.
        marks = text[i + 1 : after_index]  # after_index None: to the end
        if i == skip:  # the alef of a lam-alef ligature
            out.append(marks)
            continue
        alef = text[i + 1] if after_index == i + 1 else ""
        if char == _LAM and alef in lam_alef:
            ligature = lam_alef[alef]
            form = "final" if joins_before else "isolated"
            if form in ligature:
                out.append(ligature[form])
                skip = i + 1
                continue
        forms = letters.get(char)
        if forms is None:
            if char not in (ZWJ, ZWNJ):
                out.append(char)
            out.append(marks)
            continue
        form = (
            "medial"
            if joins_before and joins_after
            else "final"
            if joins_before
            else "initial"
            if joins_after
            else "isolated"
        )
        out.append(forms.get(form) or forms.get("isolated") or char)
        out.append(marks)
    leading = text[: solid[0]] if solid else text  # marks with nothing to sit on
    return leading + "".join(out)
