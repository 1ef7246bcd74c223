"""Checks on what callers name and store: ids and metadata.

Both cross from the caller into files, journals and databases, so they are
checked where they enter (the facade's methods and every description store's
``put``), by rules every store can keep:

- an id is a non-empty string of at most :data:`MAX_ID_BYTES` bytes of UTF-8,
  without path separators, control characters, or the names ``.`` and ``..``.
  Ids do not name files (stored images are named by a hash of their bytes), but a
  custom backend, a log line or a terminal may still treat them as one;
- metadata is what JSON keeps exactly: string keys, and values that are ``None``,
  ``bool``, ``int``, finite ``float``, ``str``, ``list`` or ``dict``, nested at most
  :data:`MAX_METADATA_DEPTH` levels. A tuple or an integer key would come back as a
  list or a string after reopening, and deep nesting would overflow the stack of
  the encoder and of every reader after it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from multimodal_rag.errors import InvalidInputError

__all__ = ["MAX_ID_BYTES", "MAX_METADATA_DEPTH", "check_id", "check_metadata"]

#: The longest id accepted, in bytes of UTF-8.
MAX_ID_BYTES = 512

#: The deepest metadata accepted: the mapping itself is level 1, a list or dict in it level 2.
MAX_METADATA_DEPTH = 64

# Unicode's control characters (category Cc): C0, DEL and C1.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

# Scalars JSON keeps exactly (bool is an int; checked for finiteness below when a float).
_SCALARS = (str, int, float, type(None))


def _shown(id: str) -> str:
    """``repr`` of an id, shortened so that a huge one does not flood the message."""
    return repr(id) if len(id) <= 80 else f"{id[:60]!r}... ({len(id)} characters)"


def check_id(id: object, *, what: str = "id") -> str:
    """Return ``id`` if it is an id the library accepts.

    Args:
        id: The id to check.
        what: How the message names it (``"id"``, ``"record id"``).

    Raises:
        InvalidInputError: Not a string, empty, too long, or holding a path
            separator, a control character or a lone surrogate; the message
            names the id and the reason.
    """
    if not isinstance(id, str):
        raise InvalidInputError(f"{what} must be a string, got {type(id).__name__} {id!r:.80}")
    if not id:
        raise InvalidInputError(f"{what} must not be empty")
    try:
        size = len(id.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"{what} {_shown(id)} has characters UTF-8 cannot store (lone surrogates)"
        ) from None
    if size > MAX_ID_BYTES:
        raise InvalidInputError(f"{what} {_shown(id)} is {size} bytes of UTF-8; at most {MAX_ID_BYTES} are allowed")
    control = _CONTROL.search(id)
    if control is not None:
        raise InvalidInputError(f"{what} {_shown(id)} contains the control character {control.group()!r}")
    if "/" in id or "\\" in id:
        raise InvalidInputError(f"{what} {_shown(id)} contains a path separator ('/' or '\\')")
    if id in (".", ".."):
        raise InvalidInputError(f"{what} {id!r} is not allowed: it names a directory")
    return id


def _where(path: tuple[Any, ...]) -> str:
    return "metadata" + "".join(f"[{key!r}]" for key in path)


def _kind(value: Any) -> str:
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def check_metadata(metadata: object, *, owner: str) -> None:
    """Refuse metadata that JSON, and so the stores, cannot give back exactly.

    Args:
        metadata: The mapping to check.
        owner: Who it belongs to, for the message (``"record 'abc'"``).

    Raises:
        InvalidInputError: Not a mapping, a key that is not a string, a value of
            another type, a float that is not finite, or nesting deeper than
            :data:`MAX_METADATA_DEPTH`; the message names ``owner`` and the path
            of the bad key or value, like ``metadata['tags'][2]``.
    """
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata of {owner} must be a mapping, got {type(metadata).__name__}")
    # Iterative, so neither deep nor circular metadata can exhaust the stack.
    stack: list[tuple[Any, tuple[Any, ...], int]] = [(metadata, (), 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict) or not path:  # the top level may be any mapping
            if depth > MAX_METADATA_DEPTH:
                raise InvalidInputError(
                    f"metadata of {owner}: {_where(path)} is nested more than {MAX_METADATA_DEPTH} levels deep"
                )
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidInputError(
                        f"metadata of {owner}: at {_where(path)}, key {key!r:.80} is {_kind(key)}; "
                        "keys must be strings (JSON would turn it into one)"
                    )
                stack.append((item, (*path, key), depth + 1))
        elif isinstance(value, list):
            if depth > MAX_METADATA_DEPTH:
                raise InvalidInputError(
                    f"metadata of {owner}: {_where(path)} is nested more than {MAX_METADATA_DEPTH} levels deep"
                )
            stack.extend((item, (*path, index), depth + 1) for index, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidInputError(
                f"metadata of {owner}: {_where(path)} is not finite ({value!r}); JSON cannot hold it"
            )
        elif not isinstance(value, _SCALARS):
            raise InvalidInputError(
                f"metadata of {owner}: {_where(path)} is {_kind(value)}; values must be None, bool, int, "
                "float, str, list or dict, which JSON gives back exactly"
            )
