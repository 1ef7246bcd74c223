"""Deprecated: this module is private now (`multimodal_rag._images`); import `open_image` and `content_id` from
`multimodal_rag.backend`. It still re-exports what it offered, with a DeprecationWarning, until the next minor version."""

import warnings

from multimodal_rag._images import *  # noqa: F403
from multimodal_rag._images import __all__ as __all__

warnings.warn(
    "multimodal_rag.images is deprecated and is removed in the next minor version; import from multimodal_rag.backend",
    DeprecationWarning,
    stacklevel=2,
)
