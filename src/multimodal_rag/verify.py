"""Deprecated: this module is private now (`multimodal_rag._verify`); import the verification and repair reports from
`multimodal_rag.tools`. It still re-exports what it offered, with a DeprecationWarning, until the next minor version."""

import warnings

from multimodal_rag._verify import *  # noqa: F403
from multimodal_rag._verify import __all__ as __all__

warnings.warn(
    "multimodal_rag.verify is deprecated and is removed in the next minor version; import from multimodal_rag.tools",
    DeprecationWarning,
    stacklevel=2,
)
