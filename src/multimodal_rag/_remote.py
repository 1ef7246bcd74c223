"""Pieces the server-backed stores share: credential-free URIs, names, and which servers may
receive the environment's credentials.

A knowledge base's manifest may come from someone else, so a server it names is not one the
caller chose. [`MultimodalRAG.open`][multimodal_rag._rag.MultimodalRAG.open] builds its
components through `build_from_manifest`; while they are built,
`manifest_endpoints` returns the endpoints the caller allowed, and a store sends
credentials found in the environment (``$MILVUS_TOKEN``, ``$PGPASSWORD``, ``~/.pgpass``) only
to those and to the server the environment itself names (``$MILVUS_URI``, ``$DATABASE_URL``).
A component the caller builds with its own arguments is the caller's choice, and unaffected.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import TypeVar
from urllib.parse import SplitResult, urlsplit, urlunsplit

from multimodal_rag.errors import InvalidInputError

__all__ = [
    "build_from_manifest",
    "check_endpoints",
    "fresh_name",
    "manifest_endpoints",
    "may_send_credentials",
    "redact_url",
    "same_endpoint",
    "split_credentials",
    "valid_name",
    "withheld_hint",
]

T = TypeVar("T")
E = TypeVar("E")

# None while the caller builds a component itself; the allowed endpoints while a manifest does.
_MANIFEST_ENDPOINTS: ContextVar[tuple[str, ...] | None] = ContextVar(
    "multimodal_rag_manifest_endpoints", default=None
)

# Milvus collection names and unquoted PostgreSQL identifiers share these rules, so one
# name works on both servers; 63 is PostgreSQL's identifier limit.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


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


def check_endpoints(endpoints: Iterable[str]) -> tuple[str, ...]:
    """``allow_endpoints`` as a tuple of non-empty strings.

    Raises:
        InvalidInputError: One string instead of a list, or an entry that is not a string.
    """
    if isinstance(endpoints, (str, bytes)):
        raise InvalidInputError(
            f"allow_endpoints takes a list of server URLs, not one string: "
            f"allow_endpoints=[{endpoints!r}]"
        )
    allowed = tuple(endpoints)
    bad = [e for e in allowed if not isinstance(e, str) or not e]
    if bad:
        raise InvalidInputError(
            f"allow_endpoints entries must be server URLs such as 'http://milvus.internal:19530' "
            f"or 'postgresql://db.internal:5432', got {bad[0]!r}"
        )
    return allowed


def build_from_manifest(
    allow_endpoints: Iterable[str], factory: Callable[..., T], /, *args: object, **kwargs: object
) -> T:
    """Call ``factory(*args, **kwargs)``, a component built from what a manifest says.

    While it runs, `manifest_endpoints` returns ``allow_endpoints``, so the component
    treats the servers and files its arguments name as the manifest's choice.
    """
    token = _MANIFEST_ENDPOINTS.set(check_endpoints(allow_endpoints))
    try:
        return factory(*args, **kwargs)
    finally:
        _MANIFEST_ENDPOINTS.reset(token)


def manifest_endpoints() -> tuple[str, ...] | None:
    """The endpoints the caller allowed while a manifest's component is built, else ``None``."""
    return _MANIFEST_ENDPOINTS.get()


def same_endpoint(url: str, other: str) -> bool:
    """Whether two URLs name the same scheme, host and port; credentials and path aside.

    Strings without a network location (a Milvus Lite file) must be equal.
    """
    mine, theirs = urlsplit(split_credentials(url)[0]), urlsplit(split_credentials(other)[0])
    if not mine.netloc or not theirs.netloc:
        return url == other
    try:
        return (mine.scheme.lower(), mine.hostname, mine.port) == (
            theirs.scheme.lower(),
            theirs.hostname,
            theirs.port,
        )
    except ValueError:  # a port that is not a number names no server
        return False


def may_send_credentials(endpoint: E, *, env: str | None, same: Callable[[E, str], bool]) -> bool:
    """Whether credentials from the environment may go to ``endpoint``.

    Always, when the caller built the component; when a manifest did, only if ``endpoint`` is
    the one the environment names (``env``) or one the caller allowed (``same`` compares).
    """
    allowed = manifest_endpoints()
    if allowed is None:
        return True
    return any(same(endpoint, other) for other in (env, *allowed) if other)


def withheld_hint(where: str, sources: str) -> str:
    """The end of an error on a server that got none of the environment's credentials."""
    return (
        f"; the knowledge base's manifest names {where}, which the environment does not, so "
        f"{sources} were not sent to it. If you trust that server, pass "
        f"MultimodalRAG.open(..., allow_endpoints=[{where!r}])"
    )
