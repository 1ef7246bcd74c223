"""`RapidOCRReader`: PP-OCR text detection and recognition on ONNX Runtime or OpenVINO.

The ``rapidocr`` package ships three small models in its wheel (a text detector, a
recogniser and a 0/180 degree line classifier), so reading needs no download. This reader
drives the three stages itself rather than through ``RapidOCR.__call__``, for three reasons:

- **speed**: the detector sees the image scaled so its longer side is ``det_limit`` pixels
  (rapidocr's default scales the *shorter* side up to 736); recognition runs on crops of the
  full-resolution image, so small text is still read from all the pixels there are;
- **orientation**: a label photographed sideways (90 or 270 degrees) gives the detector tall,
  narrow boxes. When those outweigh the wide ones, the image is turned a quarter (and
  detected again, unless every box was tall), and the lines are read in the turned frame; the line classifier then turns
  each upside-down line the right way up, and when most lines were upside down the reading
  order is reversed (an image at 180 or 270 degrees). An image without tall boxes costs one
  detection;
- **small lines**: when only one or two lines were found, in a small part of the photo,
  that part is detected again at a larger scale (the smaller lines of a label whose brand
  alone was found at ``det_limit``);
- **the drop rule** (`multimodal_rag.ocr._drop_rule`): low-confidence lines and lines in
  a script foreign to the image are dropped and counted in ``ReadText.dropped``.

An image in which the detector finds nothing costs the detection only: nothing is
classified or recognised.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np

from multimodal_rag._extras import require
from multimodal_rag.errors import InvalidInputError, ModelLoadError
from multimodal_rag.ocr._drop_rule import keep_lines
from multimodal_rag.ocr._types import OCREngine, Quad, ReadText, TextLine

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["RapidOCRReader"]

logger = logging.getLogger(__name__)

#: The model files in rapidocr's wheel (PP-OCRv6 small detector and recogniser, PP-OCR
#: mobile line classifier). Named explicitly so that rapidocr never looks for a download.
_MODEL_FILES = {
    "Det": "PP-OCRv6_det_small.onnx",
    "Rec": "PP-OCRv6_rec_small.onnx",
    "Cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
}
#: A box at least this much taller than wide holds a vertical line (rapidocr turns such a
#: crop a quarter before recognising it; the same ratio decides the image's orientation).
_TALL = 1.5
#: How far the detector grows the text it finds into a box (rapidocr's default is 1.6):
#: at 1.6 the first letter of a line tilted 15 degrees in a sideways photo was cut off.
_UNCLIP_RATIO = 1.8
#: Detecting again around the text found is tried when fewer lines than this were found
#: (a label read as one or two lines has likely lost its smaller ones), and pays when the
#: detector then sees the region this many times larger; the region reaches this many
#: heights of the tallest line past the text found.
_ZOOM_BELOW = 3
_ZOOM = 1.3
_ZOOM_MARGIN = 2.0
#: Images are scaled so that their longer side is at most this before crops are cut:
#: recognition sees 48-pixel-high lines, and the detector a few hundred pixels.
_MAX_SIDE = 2048


class RapidOCRReader:
    """Reads the text in photos with rapidocr's bundled PP-OCR models.

    Implements [`TextReader`][multimodal_rag.ocr.TextReader]. The models load on the first
    ``read``; one reader may be shared by threads (reads take turns).

    Args:
        engine: ``"openvino"`` (default: about a quarter of ONNX Runtime's CPU time per
            label photo in docs/ocr.md's measurements; the ``ocr`` extra installs both) or
            ``"onnxruntime"``.
        det_limit: The detector's input size: the image is scaled so that its longer side is
            this many pixels (never scaled up). 480 reads labels that fill a fair part of the
            photo; raise it for small text in large scenes (the detector's work grows with
            its input's area).
        rec_batch_size: Text lines recognised per model call.
        min_confidence: Lines read with a lower confidence are dropped (0 to 1).
        threads: CPU threads per model call; None lets the engine choose (all cores).
        rotate: Detect sideways images (quarter turns) and read them turned upright.
        zoom: When only one or two lines were found, in a small part of the photo, detect
            again in that part at a larger scale, for smaller lines near them (the rest of a
            label whose brand alone was large enough to be found).

    Raises:
        InvalidInputError: A setting is out of range or not one of the choices.
    """

    def __init__(
        self,
        *,
        engine: OCREngine = "openvino",
        det_limit: int = 480,
        rec_batch_size: int = 8,
        min_confidence: float = 0.5,
        threads: int | None = None,
        rotate: bool = True,
        zoom: bool = True,
    ) -> None:
        if engine not in get_args(OCREngine):
            raise InvalidInputError(f"engine must be one of {get_args(OCREngine)}, not {engine!r}")
        det_limit = _int_at_least("det_limit", det_limit, 32)
        rec_batch_size = _int_at_least("rec_batch_size", rec_batch_size, 1)
        threads = None if threads is None else _int_at_least("threads", threads, 1)
        min_confidence = _fraction("min_confidence", min_confidence)
        self.engine: OCREngine = engine
        self.det_limit = det_limit
        self.rec_batch_size = rec_batch_size
        self.min_confidence = min_confidence
        self.threads = threads
        self.rotate = bool(rotate)
        self.zoom = bool(zoom)
        self._stages: _Stages | None = None
        self._lock = threading.Lock()

    def config(self) -> dict[str, Any]:
        """Every setting; ``RapidOCRReader(**reader.config())`` builds the same reader."""
        return {
            "engine": self.engine,
            "det_limit": self.det_limit,
            "rec_batch_size": self.rec_batch_size,
            "min_confidence": self.min_confidence,
            "threads": self.threads,
            "rotate": self.rotate,
            "zoom": self.zoom,
        }

    def __repr__(self) -> str:
        settings = ", ".join(f"{key}={value!r}" for key, value in self.config().items())
        return f"RapidOCRReader({settings})"

    def read(self, images: Sequence[Image.Image]) -> list[ReadText]:
        """Read each image; an image that cannot be read gives an empty ``ReadText``.

        Raises:
            MissingDependencyError: rapidocr (or the engine's package) is not installed.
            ModelLoadError: The bundled models cannot be loaded.
        """
        with self._lock:
            stages = self._load()
            return [self._read_one(stages, image) for image in images]

    # -- one image -----------------------------------------------------------------

    def _read_one(self, stages: _Stages, image: Image.Image) -> ReadText:
        try:
            decoded = _bgr(image)
        except Exception as exc:  # a truncated file, an odd mode: this image only
            logger.warning("OCR skipped an image it cannot decode: %s", exc)
            return ReadText()
        if decoded is None:
            return ReadText()
        pixels, scale = decoded
        try:
            return self._read_pixels(stages, pixels, scale)
        except Exception as exc:  # one bad image must not stop an ingest (TextReader's contract)
            logger.warning(
                "OCR failed on an image of %dx%d: %s", pixels.shape[1], pixels.shape[0], exc
            )
            return ReadText()

    def _read_pixels(self, stages: _Stages, pixels: np.ndarray, scale: float) -> ReadText:
        height = pixels.shape[0]
        boxes = stages.detect(pixels)
        turned = False
        if self.rotate and len(boxes) and _mostly_tall(boxes):
            # Turned clockwise a quarter; text at 270 degrees comes out upside down and the
            # line classifier turns it back, so one direction serves both.
            upright = np.ascontiguousarray(np.rot90(pixels, k=-1))
            # Tall glyphs (a big single digit) can outweigh the lines of an upright photo: where
            # wide boxes were found too, the turned image is detected again and the turn stands
            # only when its text runs the right way. Where every box is tall, the same boxes
            # turned with the image are its lines: a second detection would find them again.
            turned_boxes = (
                _turn(boxes, height) if _all_tall(boxes) else stages.detect(upright)
            )
            if len(turned_boxes) and not _mostly_tall(turned_boxes):
                pixels, boxes, turned = upright, turned_boxes, True
        if not len(boxes):
            return ReadText()
        if self.zoom and len(boxes) < _ZOOM_BELOW:
            boxes = _zoomed(stages, pixels, boxes, self.det_limit)
        boxes = boxes[_reading_order(boxes)]
        crops = [_crop(pixels, box) for box in boxes]
        crops, flipped = stages.classify(crops)
        texts, scores = stages.recognise(crops)
        lines: list[TextLine] = []
        for box, text, score in zip(boxes, texts, scores, strict=True):
            quad = _unturn(box, height) if turned else box
            lines.append(TextLine(text=text, confidence=float(score), box=_quad(quad / scale)))
        if sum(flipped) * 2 > len(flipped):
            # Most lines were upside down: the image is, and its reading order runs backwards.
            lines.reverse()
        kept, dropped = keep_lines(lines, min_confidence=self.min_confidence)
        return ReadText(lines=kept, dropped=dropped)

    # -- models --------------------------------------------------------------------

    def _load(self) -> _Stages:
        if self._stages is None:
            self._stages = _Stages.build(self)
        return self._stages


class _Stages:
    """The three rapidocr models, each called on what the reader hands it."""

    def __init__(self, detector: Any, classifier: Any, recogniser: Any, rec_input: Any) -> None:
        self.detector = detector
        self.classifier = classifier
        self.recogniser = recogniser
        self._rec_input = rec_input

    @classmethod
    def build(cls, reader: RapidOCRReader) -> _Stages:
        rapidocr = require("rapidocr", user="RapidOCRReader", extra="ocr")
        require(reader.engine, user=f"RapidOCRReader(engine={reader.engine!r})", extra="ocr")
        models = Path(str(rapidocr.__file__)).parent / "models"
        engine_type = rapidocr.EngineType(reader.engine)
        params: dict[str, Any] = {
            "Global.log_level": "error",
            "Rec.rec_batch_num": reader.rec_batch_size,
        }
        for stage, file in _MODEL_FILES.items():
            params[f"{stage}.model_path"] = str(models / file)
            params[f"{stage}.engine_type"] = engine_type
        params["Det.limit_side_len"] = reader.det_limit
        params["Det.limit_type"] = "max"
        params["Det.unclip_ratio"] = _UNCLIP_RATIO
        if reader.threads is not None:
            key = (
                "intra_op_num_threads"
                if reader.engine == "onnxruntime"
                else "inference_num_threads"
            )
            params[f"EngineConfig.{reader.engine}.{key}"] = reader.threads
        try:
            ocr = rapidocr.RapidOCR(params=params)
            # rapidocr builds each stage from its configuration on first use; these are the
            # calls its own pipeline makes.
            detector = ocr._load_det_model()
            classifier = ocr._load_cls_model()
            recogniser = ocr._load_rec_model()
        except Exception as exc:
            raise ModelLoadError(
                f"RapidOCRReader cannot load rapidocr's models from {str(models)!r}: {exc}"
            ) from exc
        from rapidocr.ch_ppocr_rec import TextRecInput

        return cls(detector, classifier, recogniser, TextRecInput)

    def detect(self, pixels: np.ndarray) -> np.ndarray:
        """The text boxes in ``pixels`` (BGR), shape (n, 4, 2), sorted top to bottom."""
        found = self.detector(pixels)
        return (
            np.zeros((0, 4, 2), np.float32)
            if found.boxes is None
            else np.asarray(found.boxes, np.float32)
        )

    def classify(self, crops: list[np.ndarray]) -> tuple[list[np.ndarray], list[bool]]:
        """The crops turned upright, and which of them were upside down."""
        result = self.classifier(crops)
        flipped = [
            ("180" in label and score > self.classifier.cls_thresh)
            for label, score in result.cls_res
        ]
        return list(result.img_list), flipped

    def recognise(self, crops: list[np.ndarray]) -> tuple[list[str], list[float]]:
        """Each crop's text and confidence."""
        result = self.recogniser(self._rec_input(img=crops))
        return [str(text) for text in result.txts], [float(score) for score in result.scores]


def _int_at_least(name: str, value: object, minimum: int) -> int:
    # Not _validation.check_int: that module imports the types, which import this package.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{name} must be an integer of at least {minimum}, got {value!r}")
    return value


def _fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"{name} must be a number from 0 to 1, got {value!r}")
    return float(value)


def _bgr(image: Image.Image) -> tuple[np.ndarray, float] | None:
    """The image as a BGR uint8 array no larger than _MAX_SIDE, and the scale it was given
    (its pixels per pixel of ``image``); None when it has no pixels."""
    if image.width < 1 or image.height < 1:
        return None
    image.load()
    scale = 1.0
    if max(image.size) > _MAX_SIDE:
        scale = _MAX_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, reducing_gap=2.0)
    if image.mode != "RGB":
        image = _flatten(image)
    rgb = np.asarray(image, dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1]), scale


def _flatten(image: Image.Image) -> Image.Image:
    """RGB, with transparency composed over white (where a label's cut-out would be printed)."""
    from PIL import Image as PILImage

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        ground = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PILImage.alpha_composite(ground, rgba).convert("RGB")
    if image.mode in ("I", "I;16", "F"):
        # 16-bit and float greyscale: scale to 8 bits rather than clip.
        values = np.asarray(image, dtype=np.float64)
        span = float(values.max() - values.min()) or 1.0
        return PILImage.fromarray(
            ((values - values.min()) * (255.0 / span)).astype(np.uint8)
        ).convert("RGB")
    return image.convert("RGB")


def _sides(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each box's width and height (its top and left edges), and whether it is tall (holds a
    vertical line)."""
    widths = np.linalg.norm(boxes[:, 1] - boxes[:, 0], axis=1)
    heights = np.linalg.norm(boxes[:, 3] - boxes[:, 0], axis=1)
    return widths, heights, np.greater_equal(heights, _TALL * widths)


def _all_tall(boxes: np.ndarray) -> bool:
    """Whether every box is tall."""
    return bool(_sides(boxes)[2].all())


def _mostly_tall(boxes: np.ndarray) -> bool:
    """Whether tall boxes (vertical lines) outweigh wide ones, by the length of their lines."""
    widths, heights, tall = _sides(boxes)
    return float(heights[tall].sum()) > float(widths[~tall].sum())


def _zoomed(stages: _Stages, pixels: np.ndarray, boxes: np.ndarray, det_limit: int) -> np.ndarray:
    """``boxes``, or those found by detecting again in the part of ``pixels`` around them
    when that part is small enough to be seen at least _ZOOM times larger, and more is found.

    The part is the boxes' bounding rectangle grown by _ZOOM_MARGIN times the tallest line's
    height on every side, where the smaller lines of a label usually are."""
    height, width = pixels.shape[:2]
    tallest = float(np.linalg.norm(boxes[:, 3] - boxes[:, 0], axis=1).max())
    margin = _ZOOM_MARGIN * tallest
    x0, y0 = (int(max(0.0, v - margin)) for v in boxes.reshape(-1, 2).min(axis=0))
    x1, y1 = (
        int(min(limit, v + margin))
        for v, limit in zip(boxes.reshape(-1, 2).max(axis=0), (width, height))
    )
    scale_now = min(1.0, det_limit / max(height, width))
    scale_there = min(1.0, det_limit / max(y1 - y0, x1 - x0, 1))
    if scale_there < _ZOOM * scale_now:
        return boxes
    found = stages.detect(np.ascontiguousarray(pixels[y0:y1, x0:x1]))
    if len(found) <= len(boxes):
        return boxes
    return found + np.array([x0, y0], np.float32)


def _reading_order(boxes: np.ndarray) -> np.ndarray:
    """Indices of ``boxes`` top to bottom, then left to right, along the text's own slant.

    rapidocr sorts by each box's top-left corner, which puts a line of a tilted label
    before the one above it; here the box centres are turned by the lines' median slant
    first, and centres less than half a line height apart count as one row."""
    run = boxes[:, 1] - boxes[:, 0]
    slant = float(np.median(np.arctan2(run[:, 1], run[:, 0])))
    cos, sin = np.cos(-slant), np.sin(-slant)
    centres = boxes.mean(axis=1)
    x = centres[:, 0] * cos - centres[:, 1] * sin
    y = centres[:, 0] * sin + centres[:, 1] * cos
    line_height = float(np.median(np.linalg.norm(boxes[:, 3] - boxes[:, 0], axis=1))) or 1.0
    by_y = np.argsort(y, kind="stable")
    rows = np.concatenate([[0], np.cumsum(np.diff(y[by_y]) > line_height / 2)])
    return by_y[np.lexsort((x[by_y], rows))]


def _crop(pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The quadrilateral ``box`` cut out and straightened; a tall one turned to lie flat."""
    import cv2

    width = int(max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3])))
    height = int(max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2])))
    width, height = max(width, 1), max(height, 1)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    matrix = cv2.getPerspectiveTransform(box.astype(np.float32), target)
    crop = cv2.warpPerspective(
        pixels, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
    )
    if height >= _TALL * width:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop)


def _turn(boxes: np.ndarray, height: int) -> np.ndarray:
    """Boxes found in an image, in its pixels once turned a quarter clockwise, each starting
    from its top-left corner again (the detector's order: clockwise from the top left).

    Turning clockwise sends (x, y) to (height - y, x); the inverse of `_unturn`."""
    turned = np.stack([height - boxes[..., 1], boxes[..., 0]], axis=-1)
    return np.ascontiguousarray(turned[:, [3, 0, 1, 2]], dtype=np.float32)


def _unturn(box: np.ndarray, height: int) -> np.ndarray:
    """A box found in the image turned a quarter clockwise, in the original image's pixels.

    Turning clockwise sends the original's (x, y) to (height - y, x)."""
    return np.stack([box[:, 1], height - box[:, 0]], axis=1)


def _quad(box: np.ndarray) -> Quad:
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = (tuple(float(v) for v in point) for point in box)
    return ((x0, y0), (x1, y1), (x2, y2), (x3, y3))
