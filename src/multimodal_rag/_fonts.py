"""Which font draws which letters: the user's fonts, the shipped one and the system's.

Pictures (contact sheets, evaluation plots) draw each piece of text with the first font of
a stack that has glyphs for it:

1. the user's fonts: the ``fonts`` argument, else the files named in the environment
   variable ``MULTIMODAL_RAG_FONTS`` (separated by ``os.pathsep``), in that order;
2. Vazirmatn, shipped with the package (Latin, Arabic and Persian; SIL Open Font License);
3. fonts found in the system's usual places: Noto Sans Arabic, Noto Sans or DejaVu Sans,
   Noto Sans CJK (Chinese, Japanese, Korean);
4. for letters none of those has, the font fontconfig (``fc-match``) names, when it has them.

A font "has" a character when its character map (read with fontTools) lists it. A letter
no font has is drawn with the first font, as that font's missing-glyph box.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from threading import Lock

from multimodal_rag.errors import InvalidInputError

__all__ = ["FONTS_ENV", "SHIPPED_FONT", "FontFace", "FontStack", "font_stack"]

#: Environment variable naming the user's font files, first choice first.
FONTS_ENV = "MULTIMODAL_RAG_FONTS"

#: The font shipped with the package: Vazirmatn Regular (Persian, Arabic, Latin).
SHIPPED_FONT = Path(__file__).with_name("_data") / "fonts" / "Vazirmatn-Regular.ttf"

# Where Debian/Ubuntu, Fedora/Arch, macOS and Windows keep fonts that fill the shipped
# font's gaps. The first file found of each group is used. The CJK font comes last: it has
# Greek and Cyrillic too, but not all of them, and a word should not change font midway.
_SYSTEM_FONTS: tuple[tuple[str, ...], ...] = (
    (  # Arabic letters of other languages (Urdu, Sindhi...) that Vazirmatn lacks
        "/usr/share/fonts/truetype/noto/NotoSansArabic-Regular.ttf",
        "/usr/share/fonts/noto/NotoSansArabic-Regular.ttf",
        "/usr/share/fonts/google-noto/NotoSansArabic-Regular.ttf",
    ),
    (  # Greek, Cyrillic, Hebrew, symbols...
        "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
        "/usr/share/fonts/noto/NotoSans-Regular.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "C:/Windows/Fonts/arial.ttf",
    ),
    (  # Chinese, Japanese, Korean
        "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
        "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
        "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
        "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
        "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
        "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
        "/System/Library/Fonts/PingFang.ttc",
        "/System/Library/Fonts/Hiragino Sans GB.ttc",
        "C:/Windows/Fonts/msyh.ttc",
    ),
)

# fontconfig is asked once per block of 256 code points, and at most this many times in a
# process: a line of random symbols must not start hundreds of processes.
_FONTCONFIG_QUERIES = 32


@dataclass(frozen=True)
class FontFace:
    """One face of a font file (``index`` picks the face in a collection, ``.ttc``)."""

    path: Path
    index: int = 0

    def covers(self, char: str) -> bool:
        """Whether this face's character map has a glyph for ``char`` (read on first use; a
        file that cannot be read as a font has none)."""
        return ord(char) in _coverage_or_nothing(self)

    @property
    def family(self) -> str:
        """The family name the face gives itself (what matplotlib knows it by)."""
        return _names(self)[0]


@lru_cache(maxsize=64)
def _coverage(face: FontFace) -> frozenset[int]:
    from fontTools.ttLib import TTFont  # pyright: ignore[reportMissingTypeStubs]

    # The file is opened here, not by fontTools, so that it is closed when parsing fails too.
    with face.path.open("rb") as file:
        return frozenset(TTFont(file, fontNumber=face.index, lazy=True).getBestCmap() or ())


@lru_cache(maxsize=64)
def _names(face: FontFace) -> tuple[str]:
    from fontTools.ttLib import TTFont  # pyright: ignore[reportMissingTypeStubs]

    with face.path.open("rb") as file:
        name = TTFont(file, fontNumber=face.index, lazy=True)["name"].getBestFamilyName()
    return (name or face.path.stem,)


@lru_cache(maxsize=64)
def _coverage_or_nothing(face: FontFace) -> frozenset[int]:
    try:
        return _coverage(face)
    except Exception:  # fontTools raises many kinds for a file that is not a font
        return frozenset()


def _readable(face: FontFace) -> bool:
    try:
        _coverage(face)
    except Exception:  # fontTools raises many kinds for a file that is not a font
        return False
    return True


class FontStack:
    """Fonts in order of preference; `face_for` picks the one that draws a character."""

    def __init__(self, faces: Sequence[FontFace], *, use_fontconfig: bool = True) -> None:
        self.faces = tuple(faces)
        self.use_fontconfig = use_fontconfig

    def __repr__(self) -> str:
        return f"FontStack({[os.fspath(face.path) for face in self.faces]!r})"

    @property
    def primary(self) -> FontFace:
        return self.faces[0]

    def face_for(self, cluster: str, *, prefer: FontFace | None = None) -> FontFace:
        """The face that draws every visible character of ``cluster`` (a grapheme cluster).

        For spaces, punctuation and symbols, ``prefer`` (the face of the text just before)
        wins when it has the glyphs, so they stay in the run of the letters around them.
        """
        needed = [char for char in cluster if _visible(char)]
        if not needed:
            return prefer or self.primary
        neutral = unicodedata.category(needed[0])[0] in "ZPS"
        if neutral and prefer is not None and all(prefer.covers(char) for char in needed):
            return prefer
        for face in self.faces:
            if all(face.covers(char) for char in needed):
                return face
        for face in self.faces:  # a face with the base letter, if none has its marks too
            if face.covers(needed[0]):
                return face
        found = self._fontconfig(needed[0])
        return found if found is not None else self.primary

    def _fontconfig(self, char: str) -> FontFace | None:
        if not self.use_fontconfig:
            return None
        block = ord(char) >> 8
        with _ASKED_LOCK:
            if block not in _ASKED:
                if len(_ASKED) >= _FONTCONFIG_QUERIES:
                    return None
                _ASKED[block] = _fontconfig_match(char)
            face = _ASKED[block]
        if face is None or not face.covers(char):
            return None
        if face not in self.faces:  # later letters of its script find it without asking
            self.faces = (*self.faces, face)
        return face


# fontconfig's answer per block of 256 code points, for the whole process.
_ASKED: dict[int, FontFace | None] = {}
_ASKED_LOCK = Lock()


def _visible(char: str) -> bool:
    """Whether a character needs a glyph (joiners and variation selectors do not)."""
    point = ord(char)
    return not (
        0x200B <= point <= 0x200F
        or 0xFE00 <= point <= 0xFE0F
        or 0xE0100 <= point <= 0xE01EF
        or point == 0x2060
        or point == 0xFEFF
    )


def _fontconfig_match(char: str) -> FontFace | None:
    program = shutil.which("fc-match")
    if program is None:
        return None
    try:
        done = subprocess.run(
            [program, "--format=%{file}\n%{index}", f":charset={ord(char):x}"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.splitlines()
    if done.returncode != 0 or len(lines) < 1 or not lines[0]:
        return None
    index = int(lines[1]) if len(lines) > 1 and lines[1].isdigit() else 0
    face = FontFace(Path(lines[0]), index)
    return face if _readable(face) and face.covers(char) else None


def _user_fonts(fonts: Iterable[str | os.PathLike[str]] | None) -> list[FontFace]:
    if fonts is None:
        named = os.environ.get(FONTS_ENV, "")
        fonts, source = [part for part in named.split(os.pathsep) if part], FONTS_ENV
    else:
        source = "fonts"
    faces: list[FontFace] = []
    for entry in fonts:
        face = FontFace(Path(entry))
        if not face.path.is_file() or not _readable(face):
            raise InvalidInputError(
                f"{source}: {os.fspath(entry)!r} is not a readable TrueType or OpenType font file"
            )
        faces.append(face)
    return faces


@lru_cache(maxsize=1)
def _system_fonts() -> tuple[FontFace, ...]:
    # Only whether the files are there: each one's character map is read when a letter that
    # the fonts before it lack first asks for it.
    found: list[FontFace] = []
    for group in _SYSTEM_FONTS:
        face = next((FontFace(Path(c)) for c in group if Path(c).is_file()), None)
        if face is not None:
            found.append(face)
    return tuple(found)


def font_stack(
    fonts: Sequence[str | os.PathLike[str]] | None = None, *, system: bool = True
) -> FontStack:
    """The stack described in this module's docstring.

    Args:
        fonts: The user's font files, first choice first; ``None`` reads ``MULTIMODAL_RAG_FONTS``.
        system: Whether to add the system's fonts and ask fontconfig (``False``: the user's
            fonts and the shipped one only, the same on every machine).

    Raises:
        InvalidInputError: A font file named is missing or not a font.
    """
    faces = [*_user_fonts(fonts), FontFace(SHIPPED_FONT)]
    if system:
        faces += [face for face in _system_fonts() if face not in faces]
    return FontStack(list(dict.fromkeys(faces)), use_fontconfig=system)
