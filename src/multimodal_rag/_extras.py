"""Packages imported only by the components that need them, with one error when one is missing.

A component imports its heavy or optional package through :func:`require` inside the
function that needs it, so ``import multimodal_rag`` pulls in none of them, and a missing
one raises :class:`~multimodal_rag.errors.MissingDependencyError` naming the
``pip install`` that fixes it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from multimodal_rag.errors import MissingDependencyError

__all__ = ["require"]


def require(module: str, *, user: str, extra: str | None = None, package: str | None = None) -> ModuleType:
    """Import ``module``, or say which ``pip install`` brings it.

    Args:
        module: The module to import (``"pymilvus"``, ``"psycopg_pool"``).
        user: What needs it, for the message (``"CLIPEmbedder"``).
        extra: The ``multimodal-rag`` extra that installs it (``"milvus"``), if any.
        package: Its name on PyPI where that differs from the module's (``"clip-anytorch"``).

    Raises:
        MissingDependencyError: The module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        name = package or module.split(".")[0]
        command = f"pip install 'multimodal-rag[{extra}]'" if extra else f"pip install {name}"
        raise MissingDependencyError(f"{user} needs the {name!r} package: {command}") from exc
