"""Text in pictures: every script drawn with real glyphs, Persian shaped and right to left,
cut between grapheme clusters, and no text that can crash drawing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageDraw, ImageFont

from multimodal_rag._bidi import embedding_levels, shape_arabic, visual_order
from multimodal_rag._contact_sheet import render_contact_sheet
from multimodal_rag._fonts import FONTS_ENV, SHIPPED_FONT, FontFace, font_stack
from multimodal_rag._text_layout import (
    ELLIPSIS,
    Engine,
    TextPainter,
    clean_text,
    clusters,
    has_raqm,
    visual_text,
)
from multimodal_rag.errors import InvalidInputError
from multimodal_rag.types import Hit

PERSIAN = "پرندهٔ آبی بزرگ با بال‌های گشوده بر فراز دریاچه"
ARABIC = "طائرٌ أزرقُ كبيرٌ يطيرُ فوقَ البحيرة"
CJK = "東京の青い鳥、一只蓝色的大鸟、파란 새"
LATIN = "A great blue heron, flying — café naïve (2024)"
MIXED = "heron حواصیل 鷺 (۱۲۳) طائر 7:30"
SIZE = 28

ENGINES: list[Engine] = ["basic", "raqm"]


def _has_cjk_font() -> bool:
    return font_stack().face_for("鳥").covers("鳥")


needs_cjk = pytest.mark.skipif(
    not _has_cjk_font(),
    reason="no CJK font on this machine (Debian: apt install fonts-noto-cjk; .ci/run installs it)",
)


def _engine(engine: Engine) -> Engine:
    if engine == "raqm" and not has_raqm():
        pytest.skip("Pillow here has no raqm (libraqm or libfribidi missing)")
    return engine


def _render(text: str, font: ImageFont.FreeTypeFont) -> Image.Image:
    image = Image.new("L", (SIZE * 4 * max(1, len(text)), SIZE * 3), 0)
    ImageDraw.Draw(image).text((SIZE, SIZE), text, font=font, fill=255)
    return image


def _missing_glyphs(text: str, painter: TextPainter) -> list[str]:
    """Clusters the painter would draw as the font's missing glyph (.notdef) or as nothing."""
    missing = []
    for run in painter.runs(text):
        font = painter.font(run.face)
        notdef = _render("\U0010fffd", font)  # a private-use code point no font here maps
        for cluster in clusters(run.text):
            if cluster.isspace():
                continue
            drawn = _render(cluster, font)
            uncovered = not all(run.face.covers(char) for char in cluster if char >= " ")
            blank = drawn.getbbox() is None
            if uncovered or blank or ImageChops.difference(drawn, notdef).getbbox() is None:
                missing.append(cluster)
    return missing


def test_the_missing_glyph_check_catches_a_font_without_persian(tmp_path: Path) -> None:
    # The check itself, on a painter whose only font is the shipped one cut down to Latin.
    from fontTools import subset

    latin = tmp_path / "latin.ttf"
    subset.main([str(SHIPPED_FONT), "--unicodes=20-7E", f"--output-file={latin}"])
    painter = TextPainter(SIZE, fonts=[latin], system=False)
    painter.stack.faces = (FontFace(latin),)
    assert _missing_glyphs("hello", painter) == []
    assert _missing_glyphs("سلام", painter) == ["س", "ل", "ا", "م"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(PERSIAN, id="persian"),
        pytest.param(ARABIC, id="arabic"),
        pytest.param(CJK, id="cjk", marks=needs_cjk),
        pytest.param(LATIN, id="latin"),
        pytest.param(MIXED, id="mixed", marks=needs_cjk),
    ],
)
@pytest.mark.parametrize("engine", ENGINES)
def test_every_script_is_drawn_with_real_glyphs(text: str, engine: Engine) -> None:
    painter = TextPainter(SIZE, engine=_engine(engine))
    assert _missing_glyphs(text, painter) == []


def test_persian_arabic_and_latin_need_only_the_shipped_font() -> None:
    painter = TextPainter(SIZE, fonts=[], system=False)
    for text in (PERSIAN, ARABIC, LATIN):
        assert _missing_glyphs(text, painter) == []
        assert {run.face for run in painter.runs(text)} == {FontFace(SHIPPED_FONT)}


@needs_cjk
def test_a_mixed_line_takes_each_script_from_a_font_that_has_it() -> None:
    painter = TextPainter(SIZE)
    faces = {run.text.strip(): run.face for run in painter.runs("سلام 鳥 abc")}
    assert faces["سلام"] == faces["abc"] == FontFace(SHIPPED_FONT)
    assert faces["鳥"] != FontFace(SHIPPED_FONT) and faces["鳥"].covers("鳥")


def _line(painter: TextPainter, text: str, width: int = 400) -> Image.Image:
    image = Image.new("L", (width, SIZE * 2), 0)
    painter.draw(ImageDraw.Draw(image), (10, 5), text, fill=255)
    return image


@pytest.mark.parametrize("engine", ENGINES)
def test_persian_letters_are_joined_not_drawn_one_by_one(engine: Engine) -> None:
    painter = TextPainter(SIZE, engine=_engine(engine), system=False)
    shaped = _line(painter, "سلام")
    # The same letters drawn one at a time, right to left: each in its isolated form.
    isolated = Image.new("L", shaped.size, 0)
    draw = ImageDraw.Draw(isolated)
    x = 10.0 + sum(painter.width(letter) for letter in "سلام")
    for letter in "سلام":
        x -= painter.width(letter)
        painter.draw(draw, (x, 5), letter, fill=255)
    shaped_box, isolated_box = shaped.getbbox(), isolated.getbbox()
    assert shaped_box is not None and isolated_box is not None
    assert shaped_box[2] - shaped_box[0] < isolated_box[2] - isolated_box[0]
    assert ImageChops.difference(shaped, isolated).getbbox() is not None


@pytest.mark.parametrize("engine", ENGINES)
def test_a_right_to_left_line_puts_its_first_word_on_the_right(engine: Engine) -> None:
    painter = TextPainter(SIZE, engine=_engine(engine), system=False)
    line = _line(painter, "سلام abc")
    alone = _line(painter, "abc")
    width = round(painter.width("abc"))
    assert [run.text for run in painter.runs("سلام abc")] == ["abc", "سلام "]
    # "abc" is drawn first, at the left edge, exactly as it is drawn alone.
    left = (0, 0, 10 + width, line.height)
    assert ImageChops.difference(line.crop(left), alone.crop(left)).getbbox() is None
    assert line.crop((10 + width + 2, 0, line.width, line.height)).getbbox() is not None


def test_right_to_left_captions_align_right_in_their_box() -> None:
    painter = TextPainter(SIZE, system=False)
    image = Image.new("L", (400, SIZE * 2), 0)
    painter.draw(ImageDraw.Draw(image), (0, 0), "سلام", fill=255, box_width=400)
    box = image.getbbox()
    assert box is not None and box[0] > 300 and box[2] > 390


def test_bidi_levels_and_order() -> None:
    text = "abc سلام 12 def"
    levels = embedding_levels(text)
    assert levels == [0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 0, 0, 0, 0]
    assert "".join(text[i] for i in visual_order(levels)) == "abc 12 مالس def"
    assert embedding_levels("سلام abc") == [1, 1, 1, 1, 1, 2, 2, 2]


def test_presentation_forms_join_letters_and_form_lam_alef() -> None:
    assert shape_arabic("سلام") == "\ufeb3\ufefc\ufee1"  # initial seen, lam-alef, isolated meem
    assert shape_arabic("پی") == "\ufb58\ufbfd"  # Persian peh initial, farsi yeh final
    assert shape_arabic("ها\u200cها") == "\ufeeb\ufe8e\ufeeb\ufe8e"  # ZWNJ stops the joining
    assert visual_text("سلام (abc)") == "(abc) \ufee1\ufefc\ufeb3"


def test_control_characters_and_surrogates_are_cleaned() -> None:
    assert clean_text("a\tb\nc\x00d\x07") == "a b c\ufffdd\ufffd"
    assert clean_text("x\ud800y\udfffz") == "x\ufffdy\ufffdz"
    assert clean_text("\ud83d\ude00") == "\U0001f600"  # a surrogate pair is the emoji it encodes
    assert clean_text("\u202bسلام\u202c") == "سلام"


@pytest.mark.parametrize(
    "text",
    [
        "e\u0301" * 80,  # e + combining acute: two code points, one cluster
        "\U0001f468\u200d\U0001f469\u200d\U0001f467" * 40,  # a family: five code points
        "مَرْحَبًا" * 30,
    ],
)
def test_words_and_ellipses_cut_between_grapheme_clusters(text: str) -> None:
    painter = TextPainter(14)
    lines = painter.wrap(text, 120, 2)
    assert len(lines) == 2 and lines[-1].endswith(ELLIPSIS)
    joined = lines[0] + lines[1][: -len(ELLIPSIS)]
    assert text.startswith(joined)
    # Every cut falls on a cluster boundary of the original text.
    boundaries = {0}
    for cluster in clusters(text):
        boundaries.add(max(boundaries) + len(cluster))
    assert len(lines[0]) in boundaries and len(joined) in boundaries


def test_a_font_file_named_by_the_user_comes_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = tmp_path / "mine.ttf"
    shutil.copyfile(SHIPPED_FONT, mine)
    monkeypatch.setenv(FONTS_ENV, str(mine))
    assert font_stack().faces[0] == FontFace(mine)
    assert {run.face for run in TextPainter(14).runs("abc سلام")} == {FontFace(mine)}
    assert font_stack([SHIPPED_FONT]).faces[0] == FontFace(SHIPPED_FONT)  # the argument wins


def test_a_missing_or_broken_font_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FONTS_ENV, str(tmp_path / "gone.ttf"))
    with pytest.raises(InvalidInputError, match=r"MULTIMODAL_RAG_FONTS: .*gone\.ttf"):
        render_contact_sheet(Image.new("RGB", (8, 8)), [], tile=64)
    broken = tmp_path / "broken.ttf"
    broken.write_bytes(b"not a font")
    with pytest.raises(InvalidInputError, match=r"fonts: .*broken\.ttf"):
        TextPainter(14, fonts=[broken])


_ANY_CHARACTER = st.one_of(
    st.characters(codec=None, exclude_categories=()),  # every category, surrogates included
    st.sampled_from("\u202e\u2067\u2069\u200f\u200e\u200d\u200c\x00\n\t\x1b\u0301\ufeff"),
    st.sampled_from("سلامپژگ東京鳥abc ۱۲۳()"),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(_ANY_CHARACTER, max_size=60), st.sampled_from(ENGINES))
def test_no_text_crashes_drawing(text: str, engine: Engine) -> None:
    if engine == "raqm" and not has_raqm():
        engine = "basic"
    painter = TextPainter(14, engine=engine)
    image = Image.new("RGB", (300, 60), "white")
    painter.draw(ImageDraw.Draw(image), (0, 0), text, fill=(0, 0, 0), box_width=300)
    assert len(painter.wrap(text, 80, 3)) <= 3
    visual_text(text)
    sheet = render_contact_sheet(
        Image.new("RGB", (20, 20)), [Hit(id="a", score=0.5, description=text)], tile=64
    )
    assert sheet.size == (2 * 64 + 3 * 16, 64 + 84 + 2 * 16)


def test_without_raqm_the_basic_layout_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import multimodal_rag._text_layout as text_layout

    monkeypatch.setattr(text_layout, "has_raqm", lambda: False)
    painter = TextPainter(SIZE, system=False)
    assert painter.engine == "basic"
    assert painter.font(painter.stack.primary).layout_engine == ImageFont.Layout.BASIC
    assert _missing_glyphs(PERSIAN, painter) == []
