"""Text in pictures: any script, mixed directions, one font per run, cut by grapheme clusters.

A line is cleaned (`clean_text`), split into grapheme clusters (``regex``'s ``\\X``), and
each cluster is given its bidi level (`multimodal_rag._bidi`) and the first font of the
stack that has its glyphs (`multimodal_rag._fonts`). Neighbouring clusters of the same
level and font form a run; runs are placed left to right in visual order and each is
drawn by Pillow with its own font.

With raqm (Pillow's complex text layout: HarfBuzz for shaping, FriBiDi for direction) a
run is handed over in logical order with its direction, and raqm joins the Arabic letters
and applies the font's ligatures and mark positions. Without raqm (Pillow built without
it, or its FriBiDi library missing), right-to-left runs are reshaped here into Arabic
presentation forms, their brackets mirrored and their clusters reversed before Pillow's
basic layout draws them: the letters join, but marks sit less precisely and ligatures
beyond lam-alef are not formed.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from multimodal_rag._bidi import (
    ZWJ,
    ZWNJ,
    embedding_levels,
    mirror,
    paragraph_is_rtl,
    shape_arabic,
    visual_order,
)
from multimodal_rag._fonts import FontFace, FontStack, font_stack

if TYPE_CHECKING:
    from PIL import ImageDraw, ImageFont

__all__ = [
    "ELLIPSIS",
    "Engine",
    "Run",
    "TextPainter",
    "clean_text",
    "clusters",
    "has_raqm",
    "visual_text",
]

#: How Pillow lays text out: "raqm" shapes and orders it, "basic" draws glyphs one by one.
Engine = Literal["raqm", "basic"]

ELLIPSIS = "…"

# Whitespace controls become spaces; other control characters show as U+FFFD.
_SPACES = frozenset("\t\n\v\f\r\x1c\x1d\x1e\x1f\x85\u2028\u2029")
# Explicit embeddings, overrides and isolates: the layout does not follow them (see _bidi).
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Directional marks steer the levels but are not drawn.
_MARKS = frozenset("\u200e\u200f\u061c")
_REPLACEMENT = "\ufffd"


def has_raqm() -> bool:
    """Whether Pillow can shape text (raqm with its FriBiDi library found)."""
    from PIL import features

    return bool(features.check_feature("raqm"))


def clean_text(text: str) -> str:
    """``text`` made safe to draw on one line.

    Surrogate pairs become the character they encode and unpaired surrogates U+FFFD; line
    breaks and tabs become spaces; other control characters become U+FFFD; explicit bidi
    embedding, override and isolate controls are removed.
    """
    if text.isprintable() and _BIDI_CONTROLS.isdisjoint(text):  # no surrogates, no controls
        return text
    text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    out: list[str] = []
    for char in text:
        if char in _SPACES:
            out.append(" ")
        elif char in _BIDI_CONTROLS:
            continue
        elif unicodedata.category(char) == "Cc":
            out.append(_REPLACEMENT)
        else:
            out.append(char)
    return "".join(out)


@lru_cache(maxsize=1)
def _cluster_pattern() -> Any:
    import regex  # no type information; third-party regex knows grapheme clusters, re does not

    return regex.compile(r"\X")


def clusters(text: str) -> list[str]:
    """``text`` split into extended grapheme clusters (what a reader sees as one character)."""
    found: list[str] = _cluster_pattern().findall(text)
    return found


@dataclass(frozen=True)
class Run:
    """Text of one bidi level and one font, in logical order."""

    text: str
    level: int
    face: FontFace

    @property
    def rtl(self) -> bool:
        return self.level % 2 == 1


def _drawn(cluster: str) -> str:
    if _MARKS.isdisjoint(cluster):
        return cluster
    return "".join(char for char in cluster if char not in _MARKS)


def _reversed_clusters(text: str) -> str:
    return "".join(reversed(clusters(text)))


def visual_text(text: str) -> str:
    """``text`` as a string in visual order with Arabic letters pre-joined, for renderers that
    neither shape nor reorder (matplotlib): the no-raqm path of this module, for one line."""
    text = clean_text(text)
    levels = embedding_levels(text)
    pieces: list[tuple[int, str]] = []
    for char, level in zip(text, levels):
        if char in _MARKS:
            continue
        if pieces and pieces[-1][0] == level:
            pieces[-1] = (level, pieces[-1][1] + char)
        else:
            pieces.append((level, char))
    out: list[str] = []
    for i in visual_order([level for level, _ in pieces]):
        level, piece = pieces[i]
        out.append(
            _reversed_clusters(mirror(shape_arabic(piece))) if level % 2 else _strip_joiners(piece)
        )
    return "".join(out)


def _strip_joiners(text: str) -> str:
    return text.replace(ZWJ, "").replace(ZWNJ, "")


@lru_cache(maxsize=32)
def _pillow_font(face: FontFace, size: int, engine: Engine) -> ImageFont.FreeTypeFont:
    from PIL import ImageFont

    layout = ImageFont.Layout.RAQM if engine == "raqm" else ImageFont.Layout.BASIC
    return ImageFont.truetype(os.fspath(face.path), size, index=face.index, layout_engine=layout)


class TextPainter:
    """Measures, wraps and draws text of any script at one size.

    Args:
        size: Font size in pixels.
        fonts: The user's font files, first choice first (default: ``MULTIMODAL_RAG_FONTS``).
        engine: ``"raqm"`` or ``"basic"``; default: raqm where Pillow has it.
        system: Whether the system's fonts may fill the gaps (see `multimodal_rag._fonts`).
    """

    def __init__(
        self,
        size: int,
        *,
        fonts: Sequence[str | os.PathLike[str]] | None = None,
        engine: Engine | None = None,
        system: bool = True,
    ) -> None:
        self.size = size
        self.stack: FontStack = font_stack(fonts, system=system)
        self.engine: Engine = engine if engine is not None else "raqm" if has_raqm() else "basic"
        # Wrapping measures the same words again and again: each run is measured once.
        self._lengths: dict[Run, float] = {}
        ascent, descent = self.font(self.stack.primary).getmetrics()
        #: Pixels from the top of a line to its baseline, and from the baseline down.
        self.ascent, self.descent = ascent, descent

    def font(self, face: FontFace) -> ImageFont.FreeTypeFont:
        """Pillow's font for ``face`` at this painter's size and engine."""
        return _pillow_font(face, self.size, self.engine)

    def runs(self, line: str, *, rtl: bool | None = None) -> list[Run]:
        """The runs of ``line``, left to right as drawn (``rtl``: the paragraph's direction)."""
        line = clean_text(line)
        levels = embedding_levels(line, rtl=rtl)
        runs: list[Run] = []
        position = 0
        face: FontFace | None = None
        for cluster in clusters(line):
            level = levels[position]
            position += len(cluster)
            drawn = _drawn(cluster)
            if not drawn:
                continue
            face = self.stack.face_for(drawn, prefer=face)
            if runs and runs[-1].level == level and runs[-1].face == face:
                runs[-1] = Run(runs[-1].text + drawn, level, face)
            else:
                runs.append(Run(drawn, level, face))
        return [runs[i] for i in visual_order([run.level for run in runs])]

    def _glyphs(self, run: Run) -> str:
        """What Pillow is handed for a run under the basic layout: shaped and in visual order."""
        if run.rtl:
            return _reversed_clusters(mirror(shape_arabic(run.text)))
        return _strip_joiners(run.text)

    def _length(self, run: Run) -> float:
        length = self._lengths.get(run)
        if length is None:
            font = self.font(run.face)
            if self.engine == "raqm":
                length = float(font.getlength(run.text, direction="rtl" if run.rtl else "ltr"))
            else:
                length = float(font.getlength(self._glyphs(run)))
            if len(self._lengths) < 4096:
                self._lengths[run] = length
        return length

    def width(self, line: str, *, rtl: bool | None = None) -> float:
        """Width of ``line`` drawn on one line, in pixels."""
        return sum(self._length(run) for run in self.runs(line, rtl=rtl))

    def draw(
        self,
        draw: ImageDraw.ImageDraw,
        xy: tuple[float, float],
        line: str,
        *,
        fill: tuple[int, int, int],
        rtl: bool | None = None,
        box_width: float | None = None,
    ) -> None:
        """Draw ``line`` with its top-left corner at ``xy``.

        A right-to-left paragraph (``rtl``, or its first strong letter when ``None``) is
        aligned to the right edge of ``box_width``, when given.
        """
        if rtl is None:
            rtl = paragraph_is_rtl(clean_text(line))
        runs = self.runs(line, rtl=rtl)
        lengths = [self._length(run) for run in runs]
        x, top = xy
        if rtl and box_width is not None:
            x += max(0.0, box_width - sum(lengths))
        baseline = top + self.ascent
        for run, length in zip(runs, lengths):
            font = self.font(run.face)
            if self.engine == "raqm":
                direction = "rtl" if run.rtl else "ltr"
                draw.text(
                    (x, baseline), run.text, font=font, fill=fill, anchor="ls", direction=direction
                )
            else:
                draw.text((x, baseline), self._glyphs(run), font=font, fill=fill, anchor="ls")
            x += length

    def wrap(self, text: str, width: float, max_lines: int) -> list[str]:
        """Greedy word wrap to ``width`` pixels, in at most ``max_lines`` lines.

        A word wider than a line is broken between grapheme clusters; when text is left
        over, the last line ends in an ellipsis (also cut between clusters), so a letter
        and its marks, or an emoji sequence, are never split.
        """
        text = clean_text(text)
        rtl = paragraph_is_rtl(text)

        def fits(candidate: str) -> bool:
            return self.width(candidate, rtl=rtl) <= width

        lines: list[str] = []
        words = text.split()
        current = ""
        while words and len(lines) < max_lines:
            word = words[0]
            candidate = f"{current} {word}" if current else word
            if fits(candidate):
                current = candidate
                words.pop(0)
                continue
            if not current:  # one word wider than the line: break it between clusters
                parts = clusters(word)
                cut = _longest_fitting(parts, fits)
                current, words[0] = "".join(parts[:cut]), "".join(parts[cut:])
            lines.append(current)
            current = ""
        if current and len(lines) < max_lines:
            lines.append(current)
        if words and lines:  # text left over: mark the cut
            parts = clusters(lines[-1])
            while parts and not fits("".join(parts) + ELLIPSIS):
                parts.pop()
            lines[-1] = "".join(parts).rstrip() + ELLIPSIS
        return lines

    def is_rtl(self, text: str) -> bool:
        """Whether ``text`` is a right-to-left paragraph (its first strong letter)."""
        return paragraph_is_rtl(clean_text(text))


def _longest_fitting(parts: list[str], fits: Callable[[str], bool]) -> int:
    """How many leading clusters fit (at least one, so wrapping always moves on)."""
    low, high = 1, len(parts)
    while low < high:  # the largest n with fits(parts[:n]), widths growing with n
        middle = (low + high + 1) // 2
        if fits("".join(parts[:middle])):
            low = middle
        else:
            high = middle - 1
    return low
