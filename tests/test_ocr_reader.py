"""RapidOCRReader with rapidocr's real bundled models, and the drop rule on its own.

The label photos are drawn here (Pillow's bundled font, so every machine draws the same
pixels): a case with a printed label holding a brand, a model number and a spec line.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from multimodal_rag.errors import InvalidInputError, MissingDependencyError
from multimodal_rag.ocr import ReadText, TextLine, TextReader
from multimodal_rag.ocr._drop_rule import dominant_script, keep_lines, line_script

pytest.importorskip("rapidocr")

from multimodal_rag.ocr import RapidOCRReader  # noqa: E402

MODEL = "XG-2047"
LINES = ("VOLTARA", MODEL, "2000 Wh LiFePO4")
#: Where the model number's line is drawn in the upright label photo (its centre, x and y).
MODEL_CENTRE = (400.0, 290.0)
CJK_FONT = Path("/usr/share/fonts/opentype/noto/NotoSerifCJK-Bold.ttc")


def label_photo(size: tuple[int, int] = (800, 600), *, scale: float = 1.0) -> Image.Image:
    """A product photo: a textured backdrop, a grey case and a light label with three lines,
    centred on x = 400 (times ``scale``), the model number's line centred on y = 290."""
    width, height = round(size[0] * scale), round(size[1] * scale)
    rng = np.random.default_rng(7)
    ground = rng.normal(0, 1, (height // 8 + 1, width // 8 + 1, 3))
    ground = np.kron(ground, np.ones((8, 8, 1)))[:height, :width] * 12 + (96, 120, 104)
    image = Image.fromarray(np.clip(ground, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(2)
    )
    draw = ImageDraw.Draw(image)
    s = scale
    draw.rounded_rectangle((100 * s, 90 * s, 700 * s, 520 * s), radius=20 * s, fill=(120, 124, 130))
    draw.rounded_rectangle(
        (190 * s, 150 * s, 610 * s, 420 * s), radius=10 * s, fill=(244, 241, 232)
    )
    for (text, size_px), y in zip(
        zip(LINES, (60, 46, 36), strict=True), (200, 290, 365), strict=True
    ):
        font = ImageFont.load_default(size=round(size_px * s))
        draw.text((400 * s, y * s), text, font=font, fill=(20, 20, 24), anchor="mm")
    return image


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer)


def turned(image: Image.Image, degrees: float) -> Image.Image:
    return image.rotate(degrees, resample=Image.BICUBIC, expand=True, fillcolor=(96, 120, 104))


def compact(text: str) -> str:
    return "".join(text.split())


@pytest.fixture(scope="module")
def reader() -> RapidOCRReader:
    return RapidOCRReader()


# -- reading real labels -----------------------------------------------------------


VIEWS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "upright": lambda im: im,
    "quarter turn": lambda im: turned(im, 90),
    "half turn": lambda im: turned(im, 180),
    "three quarters": lambda im: turned(im, 270),
    "tilted 17": lambda im: turned(im, 17),
    "tilted -20": lambda im: turned(im, -20),
    "quarter turn and tilted 15": lambda im: turned(im, 105),
    "jpeg q60, blurred": lambda im: jpeg(im.filter(ImageFilter.GaussianBlur(1.2)), 60),
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_the_model_number_is_read_from_every_view(reader: RapidOCRReader, view: str) -> None:
    (result,) = reader.read([VIEWS[view](label_photo())])
    assert MODEL in compact(result.text)
    assert "VOLTARA" in result.text
    assert all(0.5 <= line.confidence <= 1.0 for line in result.lines)


@pytest.mark.parametrize("degrees", [0, 180])
def test_lines_come_in_reading_order_even_upside_down(reader: RapidOCRReader, degrees: int) -> None:
    (result,) = reader.read([turned(label_photo(), degrees)])
    texts = [compact(line.text) for line in result.lines]
    assert [texts.index(compact(line)) for line in LINES] == [0, 1, 2]


def test_small_lines_beside_a_larger_one_are_found_by_zooming_in() -> None:
    # At 480 px the detector finds the brand (50 px in a 1000-px photo) but not all the smaller
    # lines under it; detecting again around the brand finds them.
    photo = Image.new("RGB", (1000, 750), (200, 196, 210))
    draw = ImageDraw.Draw(photo)
    draw.rounded_rectangle((120, 100, 880, 680), radius=20, fill=(45, 85, 160))
    draw.rounded_rectangle((350, 240, 650, 440), radius=8, fill=(244, 241, 232))
    for text, size, y in (("BELLUM", 50, 290), ("KV-4935", 30, 350), ("2500 mAh Li-ion", 26, 400)):
        draw.text(
            (500, y), text, font=ImageFont.load_default(size=size), fill=(20, 20, 24), anchor="mm"
        )
    (without,) = RapidOCRReader(zoom=False).read([photo])
    (zoomed,) = RapidOCRReader().read([photo])
    # Which of the small lines the first pass still catches depends on the CPU's arithmetic
    # (one machine read the brand alone, another the model number too); never all three.
    assert without.lines[0].text == "BELLUM" and len(without.lines) < 3
    assert [compact(line.text) for line in zoomed.lines] == ["BELLUM", "KV-4935", "2500mAhLi-ion"]
    # Boxes found in the zoomed part are in the whole photo's pixels.
    cx, cy = _centre(zoomed.lines[1])
    assert abs(cx - 500) < 12 and abs(cy - 350) < 12


def _centre(line: TextLine) -> tuple[float, float]:
    xs, ys = zip(*line.box, strict=True)
    return sum(xs) / 4, sum(ys) / 4


def _model_line(result: ReadText) -> TextLine:
    (line,) = [line for line in result.lines if MODEL in compact(line.text)]
    return line


def test_boxes_are_in_the_pixels_of_the_image_given(reader: RapidOCRReader) -> None:
    photo = label_photo()
    sideways = turned(photo, 90)  # counterclockwise: (x, y) -> (y, width - x)
    big = label_photo(scale=3.0)  # 2400x1800: scaled down inside the reader, boxes scaled back
    upright, quarter, large = reader.read([photo, sideways, big])
    x, y = MODEL_CENTRE
    for result, (ex, ey) in (
        (upright, (x, y)),
        (quarter, (y, photo.width - x)),
        (large, (3 * x, 3 * y)),
    ):
        cx, cy = _centre(_model_line(result))
        assert abs(cx - ex) < 12 * (3 if result is large else 1) and abs(cy - ey) < 12 * (
            3 if result is large else 1
        )


def test_an_image_without_text_costs_the_detection_only(
    reader: RapidOCRReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    stages = reader._load()
    calls = {"detect": 0, "classify": 0, "recognise": 0}

    def counted(name: str) -> Callable[..., Any]:
        real = getattr(stages, name)

        def call(*args: Any) -> Any:
            calls[name] += 1
            return real(*args)

        return call

    for name in calls:
        monkeypatch.setattr(stages, name, counted(name))
    ramp = np.linspace(60, 200, 640, dtype=np.float32)
    blank = Image.fromarray(
        np.repeat(np.stack([ramp] * 3, axis=-1)[None], 480, axis=0).astype(np.uint8)
    )
    assert reader.read([blank]) == [ReadText()]
    assert calls == {"detect": 1, "classify": 0, "recognise": 0}
    # The same counters see a label's full pipeline: the check above could fail.
    reader.read([label_photo()])
    assert calls["recognise"] == 1 and calls["classify"] == 1


def test_a_sideways_label_is_detected_once(
    reader: RapidOCRReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    stages = reader._load()
    detections: list[tuple[int, ...]] = []
    real = stages.detect

    def detect(pixels: np.ndarray) -> np.ndarray:
        detections.append(pixels.shape)
        return real(pixels)

    monkeypatch.setattr(stages, "detect", detect)
    # Every line of a label turned a quarter is a tall box: the boxes are turned with the image.
    (sideways,) = reader.read([turned(label_photo(), 90)])
    assert len(detections) == 1 and MODEL in compact(sideways.text)


def test_tall_and_wide_boxes_together_are_checked_by_detecting_the_turned_image_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A tall box (a big glyph) outweighing a wide line of an upright photo: the turned image is
    # detected again; its lines (the label's, turned) run down, so the photo is not turned.
    reader = RapidOCRReader(zoom=False, min_confidence=0.0)
    stages = reader._load()
    glyph = [[600, 50], [660, 50], [660, 550], [600, 550]]
    line = [[100, 280], [400, 280], [400, 300], [100, 300]]
    found = [np.array([glyph, line], np.float32)]
    shapes: list[tuple[int, ...]] = []
    real = stages.detect

    def detect(pixels: np.ndarray) -> np.ndarray:
        shapes.append(pixels.shape)
        return found.pop() if found else real(pixels)

    monkeypatch.setattr(stages, "detect", detect)
    (result,) = reader.read([label_photo()])
    assert shapes == [(600, 800, 3), (800, 600, 3)]
    # Read from the boxes of the first detection, in the photo's own pixels (the glyph's box
    # holds no text, so its line is dropped).
    assert [[list(point) for point in text_line.box] for text_line in result.lines] == [line]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: Image.new("RGB", (0, 0)), id="zero size"),
        pytest.param(lambda: Image.new("RGB", (1, 1)), id="one pixel"),
        pytest.param(lambda: Image.new("RGB", (3000, 2)), id="a thin line"),
    ],
)
def test_images_without_room_for_text_read_as_empty(
    reader: RapidOCRReader, make: Callable[[], Image.Image]
) -> None:
    assert reader.read([make()]) == [ReadText()]


def test_a_corrupted_image_reads_as_empty_and_the_others_still_read(reader: RapidOCRReader) -> None:
    buffer = io.BytesIO()
    label_photo().save(buffer, format="JPEG", quality=90)
    truncated = Image.open(io.BytesIO(buffer.getvalue()[: len(buffer.getvalue()) // 3]))
    garbled = Image.open(io.BytesIO(buffer.getvalue()[:600] + bytes(4000)))
    first, second, third = reader.read([truncated, label_photo(), garbled])
    assert first == ReadText() and third == ReadText()
    assert MODEL in compact(second.text)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "I;16", "1"])
def test_every_pillow_mode_is_read(reader: RapidOCRReader, mode: str) -> None:
    photo = label_photo()
    image = (
        photo.convert(mode)
        if mode != "I;16"
        else Image.fromarray((np.asarray(photo.convert("L"), np.uint16) * 257).astype(np.uint16))
    )
    (result,) = reader.read([image])
    assert MODEL in compact(result.text)


@pytest.mark.skipif(not CJK_FONT.is_file(), reason="needs the Noto CJK font to print Chinese")
def test_chinese_print_beside_a_latin_label_is_dropped(
    reader: RapidOCRReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = label_photo()
    draw = ImageDraw.Draw(photo)
    draw.text(
        (660, 560),
        "木纹",
        font=ImageFont.truetype(str(CJK_FONT), 28),
        fill=(40, 40, 40),
        anchor="mm",
    )
    (result,) = reader.read([photo])
    assert MODEL in compact(result.text)
    assert not any(line_script(line.text) == "cjk" for line in result.lines)
    assert result.dropped >= 1
    # Without the rule the same reader returns the Chinese it read: the rule removed it.
    monkeypatch.setattr("multimodal_rag.ocr.rapid.keep_lines", lambda lines, **_: (list(lines), 0))
    (everything,) = reader.read([photo])
    assert any(line_script(line.text) == "cjk" for line in everything.lines)
    assert len(everything.lines) == len(result.lines) + result.dropped


# -- the drop rule -------------------------------------------------------------------


def line(text: str, confidence: float = 0.98) -> TextLine:
    return TextLine(text=text, confidence=confidence, box=((0, 0), (10, 0), (10, 5), (0, 5)))


def test_cjk_fragments_on_a_latin_label_are_dropped() -> None:
    lines = [
        line("VOLTARA"),
        line("口木", 0.83),
        line("XG-2047"),
        line("2000 Wh LiFePO4"),
        line("丨", 0.7),
    ]
    kept, dropped = keep_lines(lines, min_confidence=0.5)
    assert [k.text for k in kept] == ["VOLTARA", "XG-2047", "2000 Wh LiFePO4"]
    assert dropped == 2


def test_persian_stays_where_it_is_the_dominant_script_and_latin_model_numbers_stay_too() -> None:
    lines = [line("نیروگاه قابل حمل"), line("XG-2047"), line("۲۰۰۰ وات ساعت"), line("口", 0.8)]
    assert dominant_script(lines) == "arabic"
    kept, dropped = keep_lines(lines, min_confidence=0.5)
    assert [k.text for k in kept] == ["نیروگاه قابل حمل", "XG-2047", "۲۰۰۰ وات ساعت"]
    assert dropped == 1


def test_a_chinese_label_keeps_its_chinese() -> None:
    kept, dropped = keep_lines(
        [line("便携式储能电源"), line("XG-2047"), line("Привет", 0.6)], min_confidence=0.5
    )
    assert [k.text for k in kept] == ["便携式储能电源", "XG-2047"]
    assert dropped == 1


def test_low_confidence_and_blank_lines_are_dropped_and_digits_are_neutral() -> None:
    lines = [line("VOLTARA"), line("XG-2O47", 0.49), line("2000"), line("   "), line("+/-", 0.9)]
    kept, dropped = keep_lines(lines, min_confidence=0.5)
    assert [k.text for k in kept] == ["VOLTARA", "2000", "+/-"]
    assert dropped == 2
    assert (
        line_script("2000 Wh") == "latin"
        and line_script("2000") is None
        and line_script("木纹 A") == "cjk"
    )


def test_the_dominant_script_is_decided_by_the_confident_lines() -> None:
    # Many unsure CJK letters do not outvote a confident Latin line.
    lines = [line("木纹木纹木纹木纹", 0.7), line("VOLTARA", 0.99)]
    assert dominant_script(lines) == "latin"
    assert [k.text for k in keep_lines(lines, min_confidence=0.5)[0]] == ["VOLTARA"]


# -- settings, errors, imports ---------------------------------------------------------


def test_config_round_trips_through_json() -> None:
    reader = RapidOCRReader(
        engine="onnxruntime",
        det_limit=640,
        rec_batch_size=4,
        min_confidence=0.6,
        threads=1,
        rotate=False,
    )
    config = json.loads(json.dumps(reader.config()))
    assert RapidOCRReader(**config).config() == reader.config() == config
    assert (
        config["engine"] == "onnxruntime"
        and config["det_limit"] == 640
        and config["rotate"] is False
    )
    assert isinstance(reader, TextReader)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("engine", "tensorrt"), ("det_limit", 8), ("det_limit", 480.0), ("rec_batch_size", 0),
     ("min_confidence", 1.5), ("threads", 0), ("threads", True)],
)  # fmt: skip
def test_a_bad_setting_is_refused_by_name(setting: str, value: Any) -> None:
    with pytest.raises(InvalidInputError, match=setting):
        RapidOCRReader(**{setting: value})


def test_onnxruntime_reads_the_same_label() -> None:
    (result,) = RapidOCRReader(engine="onnxruntime").read([turned(label_photo(), 270)])
    assert MODEL in compact(result.text)


@pytest.mark.parametrize(
    ("module", "engine"),
    [("rapidocr", "openvino"), ("openvino", "openvino"), ("onnxruntime", "onnxruntime")],
)
def test_a_missing_package_names_the_ocr_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, engine: Any
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    reader = RapidOCRReader(engine=engine)
    with pytest.raises(MissingDependencyError, match=r"multimodal-rag\[ocr\]") as caught:
        reader.read([label_photo()])
    assert module in str(caught.value)


def test_importing_the_package_loads_no_engine() -> None:
    code = (
        "import sys, multimodal_rag.ocr as ocr; "
        "print(sorted(m for m in ('rapidocr', 'onnxruntime', 'openvino', 'cv2') if m in sys.modules)); "
        "print('RapidOCRReader' in dir(ocr))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "True"]
