"""A stand-in for ``pkg_resources`` while ``clip`` imports, where setuptools no longer ships it.

clip-anytorch's ``clip/clip.py`` does ``from pkg_resources import packaging`` and only
uses ``packaging.version.parse``. Rather than pin setuptools below 81 for everyone, the
library puts a module holding just that attribute in ``sys.modules`` while it imports
``clip``, and only when the real ``pkg_resources`` cannot be imported. The stand-in is
taken out again at once: other code that imports ``pkg_resources`` (pytest's
``monkeypatch.syspath_prepend`` does) must find the real one or none, never a fake.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["pkg_resources_for_clip"]


@contextmanager
def pkg_resources_for_clip() -> Iterator[None]:
    """Make ``from pkg_resources import packaging`` work inside the block."""
    if "pkg_resources" in sys.modules or _real_one_exists():
        yield  # the real one: clip imports it as it always did
        return
    import packaging.version

    shim = types.ModuleType(
        "pkg_resources", "multimodal_rag's stand-in: only `packaging`, while clip-anytorch imports."
    )
    shim.packaging = packaging  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = shim
    try:
        yield
    finally:
        if sys.modules.get("pkg_resources") is shim:
            del sys.modules["pkg_resources"]


def _real_one_exists() -> bool:
    try:
        return importlib.util.find_spec("pkg_resources") is not None
    except (ImportError, ValueError):
        return False
