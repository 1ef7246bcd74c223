"""Deprecated: this module is private now (`multimodal_rag._random_checkpoint`); import `make_random_clip_checkpoint` from
`multimodal_rag.tools`. It still re-exports what it offered, with a DeprecationWarning, until the next minor version."""

import warnings

from multimodal_rag._random_checkpoint import *  # noqa: F403
from multimodal_rag._random_checkpoint import __all__ as __all__

warnings.warn(
    "multimodal_rag.random_checkpoint is deprecated and is removed in the next minor version; import from multimodal_rag.tools",
    DeprecationWarning,
    stacklevel=2,
)
