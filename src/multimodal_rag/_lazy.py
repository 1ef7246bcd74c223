"""Names a package offers without importing them (PEP 562), and names that moved away.

A package keeps one table, public name -> module that defines it, and calls these from its
module-level ``__getattr__`` and ``__dir__``. Importing the package imports none of those
modules, so ``import multimodal_rag`` pulls in neither torch, faiss nor openai.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Mapping
from typing import Any


def attribute(package: str, name: str, exports: Mapping[str, str], moved: Mapping[str, str] | None = None) -> Any:
    """The public ``name`` of ``package``, imported now; a moved name warns and still resolves.

    Args:
        package: The package's ``__name__``.
        name: The attribute asked for.
        exports: Public name -> the module that defines it.
        moved: Name no longer offered here -> the public module that offers it now. Such a
            name resolves for one more minor version, with a ``DeprecationWarning`` naming
            the new import; it is not cached, so every use warns.

    Raises:
        AttributeError: ``name`` is neither public nor moved.
    """
    module = exports.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        vars(sys.modules[package])[name] = value  # later lookups skip __getattr__
        return value
    home = (moved or {}).get(name)
    if home is not None:
        warnings.warn(
            f"importing {name} from {package} is deprecated and stops working in the next "
            f"minor version; use `from {home} import {name}`",
            DeprecationWarning,
            stacklevel=3,  # the code that asked for the name, past the package's __getattr__
        )
        return getattr(importlib.import_module(home), name)
    raise AttributeError(f"module {package!r} has no attribute {name!r}")


def names(package: str, exports: Mapping[str, str]) -> list[str]:
    """What ``dir(package)`` lists: what it has already, and every public name not yet imported."""
    return sorted({*vars(sys.modules[package]), *exports})
