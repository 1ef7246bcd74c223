"""Pieces the server-backed stores share: optional imports, credential-free URIs, and names."""

from __future__ import annotations

import importlib
import re
import uuid
from types import ModuleType
from urllib.parse import SplitResult, urlsplit, urlunsplit

from multimodal_rag.errors import InvalidInputError, MissingDependencyError

__all__ = ["fresh_name", "import_optional", "redact_url", "split_credentials", "valid_name"]

# Milvus collection names and unquoted PostgreSQL identifiers share these rules, so one
# name works on both servers; 63 is PostgreSQL's identifier limit.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def import_optional(module: str, *, extra: str) -> ModuleType:
    """Import ``module``, or explain which extra installs it.

    Raises:
        MissingDependencyError: The module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module.split('.')[0]} is needed for this backend; install it with "
            f"pip install 'multimodal-rag[{extra}]'"
        ) from exc


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """Split ``scheme://user:password@host/...`` into the bare URL, the user and the password.

    Strings that are not URLs with a network location (a local file path) come back unchanged.
    """
    parts = urlsplit(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, has_password, password = userinfo.partition(":")
    bare = urlunsplit(SplitResult(parts.scheme, host, parts.path, parts.query, parts.fragment))
    return bare, user or None, password if has_password else None


def redact_url(url: str, *, keep_user: bool = False) -> str:
    """``url`` without its password (and its user, unless ``keep_user``): safe to log or save."""
    bare, user, _ = split_credentials(url)
    if keep_user and user:
        parts = urlsplit(bare)
        return urlunsplit(parts._replace(netloc=f"{user}@{parts.netloc}"))
    return bare


def valid_name(name: object, *, what: str) -> str:
    """Check a collection or table name: letters, digits and underscores, not starting with a digit.

    Raises:
        InvalidInputError: Any other name.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInputError(
            f"{what} name must be 1-63 letters, digits or underscores, "
            f"not starting with a digit; got {name!r}"
        )
    return name


def fresh_name(prefix: str) -> str:
    """A new, practically unique name such as ``mrag_3f9c0a1b2d4e5f60``."""
    return f"{prefix}_{uuid.uuid4().hex[:16]}"
