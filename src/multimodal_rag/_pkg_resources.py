"""A stand-in for ``pkg_resources`` where setuptools no longer ships it (setuptools 81 on).

clip-anytorch's ``clip/clip.py`` does ``from pkg_resources import packaging`` and only
uses ``packaging.version.parse``. Rather than pin setuptools below 81 for everyone, the
library puts a module holding just that attribute in ``sys.modules`` before it imports
``clip``, and only when the real ``pkg_resources`` cannot be imported.
"""

from __future__ import annotations

import importlib.util
import sys
import types

__all__ = ["ensure_pkg_resources"]


def ensure_pkg_resources() -> None:
    """Make ``from pkg_resources import packaging`` work, with the real module where it exists."""
    if "pkg_resources" in sys.modules:
        return
    try:
        found = importlib.util.find_spec("pkg_resources") is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return  # the real one: clip imports it as it always did
    import packaging.version

    shim = types.ModuleType(
        "pkg_resources", "multimodal_rag's stand-in: only `packaging`, for clip-anytorch."
    )
    shim.packaging = packaging  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = shim
