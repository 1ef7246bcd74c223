"""Deprecated: this module is private now (`multimodal_rag._rag`); import `MultimodalRAG` from
`multimodal_rag`. It still re-exports what it offered, with a DeprecationWarning, until the next minor version."""

import warnings

from multimodal_rag._rag import *  # noqa: F403
from multimodal_rag._rag import __all__ as __all__

warnings.warn(
    "multimodal_rag.rag is deprecated and is removed in the next minor version; import from multimodal_rag",
    DeprecationWarning,
    stacklevel=2,
)
