"""Packages imported only by the components that need them, with one error when one is missing.

A component imports its heavy or optional package through `require` inside the
function that needs it, so ``import multimodal_rag`` pulls in none of them, and a missing
one raises [`MissingDependencyError`][multimodal_rag.errors.MissingDependencyError] naming the
``pip install`` that fixes it.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from multimodal_rag.errors import MissingDependencyError

__all__ = ["check_installed", "require"]


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
        raise _missing(module, user=user, extra=extra, package=package) from exc


def check_installed(
    module: str, *, user: str, extra: str | None = None, package: str | None = None
) -> None:
    """Raise what `require` raises when ``module`` is not installed, without importing it.

    For a package that is needed only on some paths (``nncf`` quantizes a model once per
    machine): a missing extra is still reported at once, and the common path never pays
    for the import.
    """
    if importlib.util.find_spec(module) is None:
        raise _missing(module, user=user, extra=extra, package=package)


def _missing(module: str, *, user: str, extra: str | None, package: str | None) -> MissingDependencyError:
    name = package or module.split(".")[0]
    command = f"pip install 'multimodal-rag[{extra}]'" if extra else f"pip install {name}"
    return MissingDependencyError(f"{user} needs the {name!r} package: {command}")
