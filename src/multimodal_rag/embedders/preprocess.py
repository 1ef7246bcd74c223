"""Image preprocessing of CLIP-family models in numpy and PIL, without torch or torchvision.

`ImagePreprocess` reproduces the evaluation transforms of openai/CLIP
(``clip.load(...)[1]``) and of open_clip (``open_clip.image_transform(..., is_train=False)``)
to within float rounding, so it can run in worker threads that never touch torch:

- ``"shortest"``: the shorter side is resized to the input size, then the centre is cropped
  (openai/CLIP and most open_clip models);
- ``"squash"``: the image is resized to the input size, aspect ratio not kept (SigLIP);
- ``"longest"``: the longer side is resized to the input size, then the image is padded
  around its centre with ``fill_color``.

Then every model scales to [0, 1] and normalises each channel by its ``mean`` and ``std``.
`clip_pixels` is openai/CLIP's case.

Draft decoding (`draft_size`) is the one deliberate difference: a JPEG much
larger than the model input is decoded at 1/2, 1/4 or 1/8 scale by the JPEG
decoder itself before the resize. The resize then starts from fewer,
already averaged pixels, so the input tensor differs slightly from a full
decode (``benchmarks/ingest.py`` reports the cosine between the two embeddings).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
from attrs import field, frozen

from multimodal_rag._images import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS, open_image
from multimodal_rag.errors import InvalidInputError
from multimodal_rag.types import ImageInput

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "PREPROCESS_VERSION",
    "RESIZE_MODES",
    "ImagePreprocess",
    "Interpolation",
    "ResizeMode",
    "clip_pixels",
    "draft_size",
    "load_clip_pixels",
]

#: Bumped whenever the pixels given to the model change; part of the embedder fingerprint.
PREPROCESS_VERSION = 1

#: Per-channel normalisation of the openai/CLIP models (RGB).
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)

#: How an image is brought to the model's input size (see the module's docstring).
ResizeMode = Literal["shortest", "squash", "longest"]
#: PIL's resampling filter for the resize (as torchvision uses them).
Interpolation = Literal["bicubic", "bilinear"]

RESIZE_MODES: tuple[ResizeMode, ...] = get_args(ResizeMode)
INTERPOLATIONS: tuple[Interpolation, ...] = get_args(Interpolation)


def _size(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    height, width = (int(v) for v in value)
    return (height, width)


def _channels(value: float | Sequence[float] | np.ndarray) -> np.ndarray:
    values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    return np.array(values, dtype=np.float32)


@frozen(kw_only=True, eq=False)  # arrays inside: compare describe() instead
class ImagePreprocess:
    """How a model turns a decoded RGB picture into its input tensor.

    Attributes:
        size: The input's ``(height, width)`` (an int is a square).
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.
        interpolation: ``"bicubic"`` or ``"bilinear"`` (PIL's filters, as torchvision uses).
        resize_mode: ``"shortest"``, ``"squash"`` or ``"longest"`` (see the module's docstring).
        fill_color: The padding's grey level (0-255) in ``"longest"`` mode.
    """

    size: tuple[int, int] = field(converter=_size)
    mean: np.ndarray = field(converter=_channels)
    std: np.ndarray = field(converter=_channels)
    interpolation: Interpolation = "bicubic"
    resize_mode: ResizeMode = "shortest"
    fill_color: int = 0

    def __attrs_post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise InvalidInputError(
                f"resize_mode must be one of {', '.join(RESIZE_MODES)}; got {self.resize_mode!r}"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise InvalidInputError(
                f"interpolation must be one of {', '.join(INTERPOLATIONS)}; "
                f"got {self.interpolation!r}"
            )
        if min(self.size) < 1 or self.mean.shape != (3,) or self.std.shape != (3,):
            raise InvalidInputError(
                f"a preprocessing needs a positive size and three means and stds; got "
                f"size {self.size}, mean {self.mean.tolist()}, std {self.std.tolist()}"
            )

    @classmethod
    def clip(cls, resolution: int) -> ImagePreprocess:
        """openai/CLIP's: shorter side, bicubic, centre crop, CLIP's mean and std."""
        return cls(size=resolution, mean=CLIP_MEAN, std=CLIP_STD)

    def describe(self) -> dict[str, object]:
        """JSON-ready, for cache keys and reports."""
        return {
            "size": list(self.size),
            "mean": [round(float(v), 8) for v in self.mean],
            "std": [round(float(v), 8) for v in self.std],
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
            "fill_color": self.fill_color,
        }

    def draft_size(self) -> tuple[int, int]:
        """The smallest ``(width, height)`` a JPEG may be draft-decoded to (see `draft_size`).

        Each side at least the input's: every resize mode then only ever shrinks.
        """
        height, width = self.size
        return (width, height)

    def pixels(self, image: PILImage.Image) -> np.ndarray:
        """Turn an RGB image into the model's input: float32, shape ``(3, height, width)``."""
        from PIL import Image

        height, width = self.size
        filter_ = (
            Image.Resampling.BILINEAR
            if self.interpolation == "bilinear"
            else Image.Resampling.BICUBIC
        )
        if self.resize_mode == "squash":
            # torchvision's Resize((h, w)).
            if image.size != (width, height):
                image = image.resize((width, height), filter_)
            array = np.asarray(image, dtype=np.uint8)
        elif self.resize_mode == "longest":
            array = self._longest(image, filter_)
        elif height == width:
            array = self._shortest_square(image, height, filter_)
        else:
            # open_clip's ResizeKeepRatio for a non-square input, which always resizes bicubic.
            image = self._keep_ratio(image, longest=0.0, filter_=Image.Resampling.BICUBIC)
            array = _centre_crop_or_pad(np.asarray(image, dtype=np.uint8), self.size, fill=0)
        return self._normalised(array)

    def _normalised(self, array: np.ndarray) -> np.ndarray:
        # The same float32 operations, in the same order, as ToTensor then Normalize (so the
        # same bits), done in place on each channel's plane: a plane with one scalar per
        # operation runs several times faster than broadcasting over interleaved channels.
        planes = array.transpose(2, 0, 1).astype(np.float32, order="C")
        planes /= np.float32(255.0)
        for channel in range(3):
            planes[channel] -= self.mean[channel]
            planes[channel] /= self.std[channel]
        return planes

    @staticmethod
    def _shortest_square(image: PILImage.Image, resolution: int, filter_: int) -> np.ndarray:
        width, height = image.size
        # torchvision's Resize(int): the shorter side becomes `resolution`, the longer
        # side is scaled and truncated (int(), not round()) exactly as torchvision does.
        if width <= height:
            size = (resolution, int(resolution * height / width))
        else:
            size = (int(resolution * width / height), resolution)
        if width > height and size[0] > resolution and height != resolution:
            # A landscape picture: PIL resizes in two passes, widths then heights, each column
            # of the second pass on its own. Running them as two calls and cropping the
            # columns in between gives the same bytes, and the second pass works only on the
            # columns the centre crop keeps (0.3 ms less per 1080p photo).
            wide = image.resize((size[0], height), filter_)
            left = _centre_offset(size[0], resolution)
            image = wide.crop((left, 0, left + resolution, height)).resize(
                (resolution, resolution), filter_
            )
        elif size != image.size:
            image = image.resize(size, filter_)
        return _centre_crop_or_pad(
            np.asarray(image, dtype=np.uint8), (resolution, resolution), fill=0
        )

    def _keep_ratio(self, image: PILImage.Image, *, longest: float, filter_: int) -> PILImage.Image:
        """open_clip's ResizeKeepRatio: scale by the ratio of the longer (or shorter) side."""
        width, height = image.size
        target_h, target_w = self.size
        ratio_h, ratio_w = height / target_h, width / target_w
        # The same expression, in the same order, as open_clip (float rounding included).
        ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
        new_h, new_w = (round(x * 1.0 / ratio) for x in (height, width))
        if (new_w, new_h) != image.size:
            image = image.resize((new_w, new_h), filter_)
        return image

    def _longest(self, image: PILImage.Image, filter_: int) -> np.ndarray:
        image = self._keep_ratio(image, longest=1.0, filter_=filter_)
        return _centre_crop_or_pad(np.asarray(image, dtype=np.uint8), self.size, self.fill_color)


def _centre_crop_or_pad(array: np.ndarray, size: tuple[int, int], fill: int) -> np.ndarray:
    """torchvision's CenterCrop (and open_clip's CenterCropOrPad): pad a side that is too short
    around the centre, then crop the centre, with the same rounding of the offsets."""
    crop_h, crop_w = size
    height, width = array.shape[:2]
    if crop_w > width or crop_h > height:
        pad_left = (crop_w - width) // 2 if crop_w > width else 0
        pad_top = (crop_h - height) // 2 if crop_h > height else 0
        pad_right = (crop_w - width + 1) // 2 if crop_w > width else 0
        pad_bottom = (crop_h - height + 1) // 2 if crop_h > height else 0
        array = np.pad(
            array,
            ((pad_top, pad_bottom), (pad_left, pad_right), (0, 0)),
            constant_values=np.uint8(fill),
        )
        height, width = array.shape[:2]
    top, left = _centre_offset(height, crop_h), _centre_offset(width, crop_w)
    return array[top : top + crop_h, left : left + crop_w]


def _centre_offset(length: int, crop: int) -> int:
    """Where a centred crop of ``crop`` starts in ``length``, rounded as torchvision does."""
    return int(round((length - crop) / 2.0))


def draft_size(resolution: int) -> tuple[int, int]:
    """The smallest size a JPEG may be draft-decoded to for a model of this input resolution.

    The JPEG decoder picks the largest reduction (up to 1/8) that keeps both sides at
    least this large, so the shorter side is never upscaled before the resize.
    """
    return (resolution, resolution)


def clip_pixels(image: PILImage.Image, resolution: int) -> np.ndarray:
    """Turn an RGB image into CLIP's input: float32, shape ``(3, resolution, resolution)``."""
    return ImagePreprocess.clip(resolution).pixels(image)


def load_pixels(
    image: ImageInput,
    preprocess: ImagePreprocess,
    *,
    draft: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> np.ndarray:
    """Decode an image (path, bytes or PIL image) and preprocess it for a model.

    ``max_pixels`` counts the pixels actually decoded: with ``draft``, a large JPEG
    counts at its reduced size (see `open_image`).

    Raises:
        ImageError: The image cannot be read; the message names it.
    """
    picture = open_image(
        image,
        max_pixels=max_pixels,
        draft_size=preprocess.draft_size() if draft else None,
        max_file_bytes=max_file_bytes,
    )
    return preprocess.pixels(picture)


def load_clip_pixels(
    image: ImageInput,
    resolution: int,
    *,
    draft: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> np.ndarray:
    """Decode an image (path, bytes or PIL image) and preprocess it for CLIP.

    Raises:
        ImageError: The image cannot be read; the message names it.
    """
    return load_pixels(
        image,
        ImagePreprocess.clip(resolution),
        draft=draft,
        max_pixels=max_pixels,
        max_file_bytes=max_file_bytes,
    )
