"""Files named by an fsspec URL (``s3://``, ``gs://``, ``az://``, ``http(s)://``): listed page
by page and read into memory, never copied to disk.

fsspec and each scheme's package are imported only when a URL is met, through
`multimodal_rag._extras`, so a missing package names the extra that installs it
(``pip install 'multimodal-rag[s3]'``). Credentials come from each filesystem's own
environment and configuration (``AWS_ACCESS_KEY_ID``, ``~/.aws``, ``GOOGLE_APPLICATION_CREDENTIALS``,
``AZURE_STORAGE_*``); a URL is passed on, logged, stored or put in a message only through
`redact`, which drops a user and password and the values of signed-URL parameters.

Local paths (and ``file://`` URLs, turned into paths by `local_path`) are not read here:
the image reader opens them itself, with its checks on what kind of file they are.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from attrs import frozen

from multimodal_rag._remote import redact_url
from multimodal_rag.errors import ImageError, InvalidInputError, MissingDependencyError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = [
    "MISSING",
    "SCHEMES",
    "RemoteFile",
    "canonical",
    "filesystem",
    "image_absence",
    "is_url",
    "list_files",
    "local_path",
    "read_url",
    "redact",
    "url_error",
]

#: The URL schemes read through fsspec: scheme -> (module, ``multimodal-rag`` extra, package).
SCHEMES: dict[str, tuple[str, str | None, str | None]] = {
    "s3": ("s3fs", "s3", "s3fs"),
    "s3a": ("s3fs", "s3", "s3fs"),
    "gs": ("gcsfs", "gcs", "gcsfs"),
    "gcs": ("gcsfs", "gcs", "gcsfs"),
    "az": ("adlfs", "azure", "adlfs"),
    "abfs": ("adlfs", "azure", "adlfs"),
    "abfss": ("adlfs", "azure", "adlfs"),
    "http": ("aiohttp", "http", "aiohttp"),
    "https": ("aiohttp", "http", "aiohttp"),
    # fsspec's in-process filesystem: no package, handy in tests and notebooks.
    "memory": ("fsspec", None, None),
}

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Query parameters that carry a secret in signed URLs (S3 presigned, Azure SAS, GCS signed).
_SECRET_PARAMETERS = re.compile(
    r"(signature|credential|token|sig|key|password|secret)", re.IGNORECASE
)


def is_url(location: object) -> bool:
    """Whether ``location`` is a URL read through fsspec (``file://`` and plain paths are not)."""
    if not isinstance(location, str):
        return False
    found = _URL.match(location)
    return found is not None and found.group(1).lower() != "file"


def local_path(location: str | os.PathLike[str]) -> str:
    """``location`` as a local path: a ``file://`` URL's path, anything else as it is."""
    name = os.fspath(location)
    if name[:7].lower() == "file://":
        return urlsplit(name).path or "/"
    return name


def redact(url: str) -> str:
    """``url`` safe to log, store or show: no user or password, no signed-URL secret values."""
    if not is_url(url):
        return url
    bare = redact_url(url)
    parts = urlsplit(bare)
    if not parts.query:
        return bare
    query = [
        (k, "REDACTED" if _SECRET_PARAMETERS.search(k) else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="/:")))


@frozen
class RemoteFile:
    """One file a listing found.

    Attributes:
        url: Its URL, without credentials (``s3://bucket/photos/a.jpg``).
        size: Its size in bytes, where the listing gives it.
        version: A token that changes whenever its bytes change: the ETag or generation the
            store reports, else its size and modification time.
    """

    url: str
    size: int | None
    version: str | None


def scheme_of(url: str) -> str:
    found = _URL.match(url)
    return found.group(1).lower() if found else ""


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem for ``url`` (credentials from its environment) and the path within it.

    Raises:
        InvalidInputError: A scheme that is not in `SCHEMES`.
        MissingDependencyError: The scheme's package is not installed; names the extra.
    """
    from multimodal_rag._extras import require

    scheme = scheme_of(url)
    if scheme not in SCHEMES:
        known = ", ".join(f"{name}://" for name in sorted(SCHEMES))
        raise InvalidInputError(
            f"unsupported URL scheme {scheme!r} in {redact(url)!r}; supported: {known}, file:// and paths"
        )
    module, extra, package = SCHEMES[scheme]
    what = f"reading {scheme}:// URLs"
    require("fsspec", user=what, package="fsspec")
    require(module, user=what, extra=extra, package=package)
    import fsspec.core

    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def url_error(url: str, exc: BaseException, *, action: str = "read") -> InvalidInputError:
    """The library's error for a failed listing or read of ``url``, with no secret in it.

    A missing bucket or key reads "not found"; refused or unknown credentials read "access
    denied" and name where the credentials come from; anything else names the failure's kind.
    """
    shown = redact(url)
    code = _error_code(exc)
    if _not_found(exc):
        return InvalidInputError(f"cannot {action} {shown!r}: not found")
    if (
        isinstance(exc, PermissionError)
        or code in _DENIED
        or type(exc).__name__ in {"NoCredentialsError", "PartialCredentialsError"}
    ):
        return InvalidInputError(
            f"cannot {action} {shown!r}: access denied; check the credentials in the environment "
            f"or configuration of {scheme_of(url)}:// ({_CREDENTIAL_SOURCES.get(scheme_of(url), 'its filesystem')})"
        )
    return InvalidInputError(f"cannot {action} {shown!r}: {_scrub(_describe(exc))}")


def _not_found(exc: BaseException) -> bool:
    return isinstance(exc, FileNotFoundError) or _error_code(exc) in {
        "NoSuchBucket",
        "NoSuchKey",
        "404",
        "NotFound",
    }


_DENIED = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "403",
        "401",
        "AuthorizationFailure",
    }
)
_CREDENTIAL_SOURCES = {
    "s3": "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws",
    "s3a": "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS or gcloud's login",
    "gcs": "GOOGLE_APPLICATION_CREDENTIALS or gcloud's login",
    "az": "AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_CONNECTION_STRING or az login",
    "abfs": "AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_CONNECTION_STRING or az login",
    "abfss": "AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_CONNECTION_STRING or az login",
}
# Environment variables whose values must never reach a message.
_SECRET_VARIABLES = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN",
)


def _error_code(exc: BaseException) -> str:
    seen: BaseException | None = exc
    while seen is not None:
        response: Any = getattr(seen, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
        status = getattr(seen, "status", None)  # aiohttp's ClientResponseError
        if isinstance(status, int):
            return str(status)
        seen = seen.__cause__ or seen.__context__
    return ""


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


def _scrub(text: str) -> str:
    for name in _SECRET_VARIABLES:
        secret = os.environ.get(name)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "REDACTED")
    return re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+", lambda m: redact(m.group(0)), text)


def canonical(url: str) -> str:
    """``url`` as its filesystem spells the files it lists (``memory://b`` is ``memory:///b``), redacted."""
    fs, path = filesystem(url)
    return redact(fs.unstrip_protocol(path.rstrip("/")))


#: What `image_absence` says of an image that is not there.
MISSING = "missing"


def image_absence(location: str) -> str | None:
    """Why the image a record names cannot be found, or ``None`` when it is there (a regular
    local file, or an object at a URL): `MISSING`, or for a URL that could not be checked
    (refused credentials, an unreachable store, a missing package) the reason, so that what
    this reader may not see is not reported as gone."""
    if not is_url(location):
        return None if os.path.isfile(local_path(location)) else MISSING
    try:
        fs, path = filesystem(location)
        return None if fs.isfile(path) else MISSING
    except MissingDependencyError as exc:
        return str(exc)
    except Exception as exc:  # whatever the filesystem raises: its message, without secrets
        return MISSING if _not_found(exc) else str(url_error(location, exc, action="check"))


def image_exists(location: str) -> bool:
    """Whether the image a record names is there (see `image_absence`)."""
    return image_absence(location) is None


def read_url(url: str, *, max_bytes: int) -> bytes:
    """The bytes of the file at ``url``, refused past ``max_bytes``.

    Raises:
        ImageError: The file is missing, unreadable, refused or larger than ``max_bytes``;
            the message names the URL without its credentials.
        MissingDependencyError: The scheme's package is not installed.
    """
    fs, path = filesystem(url)
    shown = redact(url)
    try:
        with fs.open(path, "rb") as file:
            size = getattr(file, "size", None)
            if isinstance(size, int) and size > max_bytes:
                raise ImageError(
                    f"image file {shown!r} is {size:,} bytes, more than the limit of {max_bytes:,} (raise max_file_bytes to accept it)",
                    source=shown,
                )
            data: bytes = file.read(max_bytes + 1)
    except ImageError:
        raise
    except Exception as exc:  # each filesystem raises its own errors; all mean "cannot read"
        raise ImageError(str(url_error(url, exc)), source=shown) from None
    if len(data) > max_bytes:
        raise ImageError(
            f"image file {shown!r} is more than the limit of {max_bytes:,} bytes (raise max_file_bytes to accept it)",
            source=shown,
        )
    return data


def list_files(
    url: str, *, recursive: bool = True, page_size: int | None = None
) -> Iterator[RemoteFile]:
    """The files under the folder or prefix ``url``, page by page as the store returns them.

    An S3 bucket is listed one page (``page_size`` keys, 1000 at most) at a time, so a
    million keys are never held at once; other filesystems are listed one folder at a time.

    Raises:
        InvalidInputError: The bucket or folder does not exist, or access is denied.
        MissingDependencyError: The scheme's package is not installed.
    """
    fs, path = filesystem(url)
    base = redact(url)
    try:
        if hasattr(fs, "_list_pages") and hasattr(fs, "split_path"):  # s3fs: stream the pages
            files = _s3_files(fs, path, recursive=recursive, page_size=page_size)
        else:
            files = _walked_files(fs, path, recursive=recursive)
        found = False
        for info in files:
            found = True
            yield RemoteFile(
                url=fs.unstrip_protocol(info["name"]), size=_size(info), version=_version(info)
            )
        if not found and not fs.exists(path):
            raise FileNotFoundError(path)
    except InvalidInputError:
        raise
    except Exception as exc:
        raise url_error(base, exc, action="list") from None


def _s3_files(
    fs: Any, path: str, *, recursive: bool, page_size: int | None
) -> Iterator[dict[str, Any]]:
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(path)
    prefix = key.rstrip("/") + "/" if key else ""
    kwargs: dict[str, Any] = {
        "Bucket": bucket,
        "Prefix": prefix,
        "Delimiter": "" if recursive else "/",
    }
    if page_size is not None:
        kwargs["MaxKeys"] = page_size
    pages = fs._list_pages("list_objects_v2", **kwargs)
    try:
        while True:
            try:
                page = sync(fs.loop, pages.__anext__)
            except StopAsyncIteration:
                return
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):  # a folder marker some tools write
                    continue
                yield {
                    "name": f"{bucket}/{obj['Key']}",
                    "size": obj.get("Size"),
                    "ETag": obj.get("ETag"),
                }
    finally:  # a listing left early (the first file was enough) closes its pages too
        sync(fs.loop, pages.aclose)


def _walked_files(fs: Any, path: str, *, recursive: bool) -> Iterator[dict[str, Any]]:
    for _, _, files in fs.walk(path, maxdepth=None if recursive else 1, detail=True):
        for name in sorted(files):
            yield files[name]


def _size(info: dict[str, Any]) -> int | None:
    size = info.get("size", info.get("Size"))
    return int(size) if isinstance(size, (int, float)) else None


def _version(info: dict[str, Any]) -> str | None:
    for key in ("ETag", "etag", "generation", "md5Hash", "content_md5"):
        value = info.get(key)
        if value:
            return str(value).strip('"')
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if value:
            return f"{_size(info)}:{value}"
    return None
