"""Search results as one picture: the query image beside its matches, each captioned.

This is the cookbook's matplotlib display of the query and its nearest images,
drawn with Pillow alone so that it needs no plotting library and can be written
to a file (``multimodal-rag show``).

Layout, for ``n`` matches and tiles of ``tile`` pixels:

```text
width  = (n + 1) * tile + (n + 2) * MARGIN
height = tile + CAPTION_HEIGHT + 2 * MARGIN
```

Each image is scaled to fit its square tile without changing its aspect ratio.
The query's caption says "query" and its name; a match's caption gives its rank,
score and description (wrapped, and cut with an ellipsis when too long). Captions may be
in any script: each run of text is drawn with a font that has its glyphs, Arabic and
Persian shaped and right to left (a right-to-left description is aligned to the right of
its tile); see `multimodal_rag._text_layout` and `multimodal_rag._fonts`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from multimodal_rag._images import open_image
from multimodal_rag._text_layout import TextPainter
from multimodal_rag._validation import check_int
from multimodal_rag.errors import ImageError
from multimodal_rag.types import Hit, ImageInput, source_name

if TYPE_CHECKING:
    from PIL import Image as PILImage
    from PIL import ImageDraw

__all__ = ["CAPTION_HEIGHT", "MARGIN", "render_contact_sheet"]

#: Pixels between tiles and around the sheet.
MARGIN = 16
#: Height of the caption band under each tile (a header line and three description lines).
CAPTION_HEIGHT = 84
_FONT_SIZE = 14
_LINE_HEIGHT = 18
_DESCRIPTION_LINES = 3
_BACKGROUND = (255, 255, 255)
_QUERY_FRAME = (31, 119, 180)
_FRAME = (200, 200, 200)
_TEXT = (20, 20, 20)
_BODY = (70, 70, 70)
_MUTED = (110, 110, 110)


def render_contact_sheet(
    query: ImageInput,
    hits: Sequence[Hit],
    *,
    tile: int = 256,
    query_label: str | None = None,
    fonts: Sequence[str | os.PathLike[str]] | None = None,
) -> PILImage.Image:
    """Draw the query image and its matches side by side.

    Args:
        query: The query image (path, bytes or PIL image).
        hits: Matches, best first, as returned by [`MultimodalRAG.search`][multimodal_rag._rag.MultimodalRAG.search].
        tile: Side of each image's square tile, in pixels.
        query_label: Caption under the query (default: its file name).
        fonts: Font files to draw captions with, first choice first, before the shipped
            Vazirmatn and the system's fonts (default: the files named in the environment
            variable ``MULTIMODAL_RAG_FONTS``, separated by ``os.pathsep``).

    Returns:
        An RGB image of the size given in this module's docstring. A match whose
        image file cannot be read is drawn as a grey tile that says so.

    Raises:
        ImageError: The query image cannot be read.
        InvalidInputError: ``tile`` is not an integer of at least 64, too small to draw captions
            in, or a font file named in ``fonts`` or ``MULTIMODAL_RAG_FONTS`` is missing or
            not a font.
    """
    from PIL import Image, ImageDraw

    tile = check_int("tile", tile, minimum=64)
    painter = TextPainter(_FONT_SIZE, fonts=fonts)
    columns = len(hits) + 1
    sheet = Image.new(
        "RGB",
        (columns * tile + (columns + 1) * MARGIN, tile + CAPTION_HEIGHT + 2 * MARGIN),
        _BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)

    label = query_label if query_label is not None else _short_name(source_name(query))
    _paste_fitted(sheet, open_image(query), MARGIN, MARGIN, tile)
    draw.rectangle(
        (MARGIN - 3, MARGIN - 3, MARGIN + tile + 2, MARGIN + tile + 2),
        outline=_QUERY_FRAME,
        width=3,
    )
    _caption(draw, painter, MARGIN, tile, "query", label)

    for rank, hit in enumerate(hits, start=1):
        left = MARGIN + rank * (tile + MARGIN)
        try:
            if hit.image_path is None:
                raise ImageError("no image file is recorded for this item")
            _paste_fitted(sheet, open_image(hit.image_path), left, MARGIN, tile)
        except ImageError:
            draw.rectangle((left, MARGIN, left + tile - 1, MARGIN + tile - 1), fill=(225, 225, 225))
            painter.draw(draw, (left + 8, MARGIN + tile // 2 - 10), "image missing", fill=_MUTED)
        draw.rectangle((left - 1, MARGIN - 1, left + tile, MARGIN + tile), outline=_FRAME, width=1)
        description = hit.description if hit.description is not None else "(no description)"
        _caption(draw, painter, left, tile, f"#{rank}   score {hit.score:.3f}", description)
    return sheet


def _paste_fitted(
    sheet: PILImage.Image, image: PILImage.Image, left: int, top: int, tile: int
) -> None:
    from PIL import Image

    scale = min(tile / image.width, tile / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    fitted = image.resize(size, Image.Resampling.LANCZOS)
    sheet.paste(fitted, (left + (tile - size[0]) // 2, top + (tile - size[1]) // 2))


def _caption(
    draw: ImageDraw.ImageDraw,
    painter: TextPainter,
    left: int,
    tile: int,
    header: str,
    body: str,
) -> None:
    top = MARGIN + tile + 4
    painter.draw(draw, (left, top), header, fill=_TEXT, box_width=tile)
    rtl = painter.is_rtl(body)
    for i, line in enumerate(painter.wrap(body, tile, _DESCRIPTION_LINES)):
        painter.draw(
            draw, (left, top + (i + 1) * _LINE_HEIGHT), line, fill=_BODY, rtl=rtl, box_width=tile
        )


def _short_name(name: str) -> str:
    from pathlib import PurePath

    return PurePath(name).name if name and not name.startswith("<") else name
