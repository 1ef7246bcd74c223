"""The library's exceptions.

Every error raised on purpose by ``multimodal_rag`` derives from
[`MultimodalRAGError`][multimodal_rag.errors.MultimodalRAGError]. Where an error has an obvious builtin meaning it
also subclasses that builtin, so ``except ValueError`` or ``except KeyError``
keeps working in code that does not know this library:

```text
MultimodalRAGError
├── InvalidInputError (ValueError)            bad argument, id, vector or text
│   ├── DimensionMismatchError (ValueError)   vectors or models of another dimension
│   └── ImageError (ValueError)               image missing, unreadable, corrupt or too large
├── NotFoundError (KeyError)                  unknown id
├── KnowledgeBaseError (OSError)              the knowledge-base directory on disk
│   ├── KnowledgeBaseNotFoundError (FileNotFoundError)
│   ├── KnowledgeBaseExistsError (FileExistsError)
│   ├── KnowledgeBaseLockedError (BlockingIOError)
│   ├── ManifestError                         unreadable manifest, unknown format version
│   ├── CorruptFileError                      a file whose checksum does not match
│   ├── KnowledgeBaseAccessError (PermissionError)  a file the process may not read or write
│   └── ReadOnlyError (PermissionError)       write on a knowledge base opened read-only
├── EmbedderMismatchError (ValueError)        reopening with another model or other weights
├── BackendError (RuntimeError)               a storage backend failed
│   ├── UnknownBackendError (LookupError)     no backend of that kind, or module not allowed
│   ├── BackendConnectionError (ConnectionError)
│   └── MigrationError                        a copied knowledge base differs from its source
├── ModelLoadError (RuntimeError)             model weights cannot be found or loaded
│   └── PrecisionError                        a precision asked for fails the quality gate
├── MissingDependencyError (ImportError)      an optional package is not installed
└── AnswererError (RuntimeError)              the answering model failed
    ├── AnswererAuthenticationError (PermissionError)
    ├── AnswererRateLimitError
    ├── AnswererTimeoutError (TimeoutError)
    ├── AnswererConnectionError (ConnectionError)
    └── AnswererBadRequestError (ValueError)
```
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AnswererAuthenticationError",
    "AnswererBadRequestError",
    "AnswererConnectionError",
    "AnswererError",
    "AnswererRateLimitError",
    "AnswererTimeoutError",
    "BackendConnectionError",
    "BackendError",
    "CorruptFileError",
    "DimensionMismatchError",
    "EmbedderMismatchError",
    "ImageError",
    "InvalidInputError",
    "KnowledgeBaseAccessError",
    "KnowledgeBaseError",
    "KnowledgeBaseExistsError",
    "KnowledgeBaseLockedError",
    "KnowledgeBaseNotFoundError",
    "ManifestError",
    "MigrationError",
    "MissingDependencyError",
    "ModelLoadError",
    "MultimodalRAGError",
    "NotFoundError",
    "PrecisionError",
    "ReadOnlyError",
    "UnknownBackendError",
]


class MultimodalRAGError(Exception):
    """Root of every error this library raises on purpose."""


class InvalidInputError(MultimodalRAGError, ValueError):
    """An argument, id, vector or text that the library cannot accept."""


class DimensionMismatchError(InvalidInputError):
    """Vectors whose dimension differs from the store's or the model's."""


class ImageError(InvalidInputError):
    """An image that is missing, unreadable, corrupt or unreasonably large.

    Attributes:
        source: What was being read: a path, ``"<bytes>"`` or ``"<PIL image>"``.
        index: Position of the image in the batch an embedder was given, when known;
            batch ingest then skips just that image.
    """

    def __init__(self, message: str, *, source: Any = None, index: int | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.index = index


class NotFoundError(MultimodalRAGError, KeyError):
    """An id that is not in the knowledge base."""

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument; a message reads better.
        return str(self.args[0]) if self.args else ""


class KnowledgeBaseError(MultimodalRAGError, OSError):
    """Something is wrong with a knowledge-base directory."""


class KnowledgeBaseNotFoundError(KnowledgeBaseError, FileNotFoundError):
    """No knowledge base at the given path."""


class KnowledgeBaseExistsError(KnowledgeBaseError, FileExistsError):
    """A knowledge base already exists where a new one was to be created."""


class KnowledgeBaseLockedError(KnowledgeBaseError, BlockingIOError):
    """Another process holds the knowledge base open for writing."""


class ManifestError(KnowledgeBaseError):
    """The manifest is unreadable, incomplete or of an unknown format version."""


class CorruptFileError(KnowledgeBaseError):
    """A file of the knowledge base does not match the checksum in its manifest."""


class KnowledgeBaseAccessError(KnowledgeBaseError, PermissionError):
    """The operating system refuses access to a knowledge-base file.

    Not damage: nothing is salvaged or rebuilt because of it, and nothing is changed.
    """


class ReadOnlyError(KnowledgeBaseError, PermissionError):
    """A change was attempted on a knowledge base opened read-only."""


class EmbedderMismatchError(MultimodalRAGError, ValueError):
    """The embedder differs from the one the knowledge base was built with."""


class BackendError(MultimodalRAGError, RuntimeError):
    """A storage backend failed."""


class UnknownBackendError(BackendError, LookupError):
    """No backend is registered under that kind, or its module is not allowed."""


class BackendConnectionError(BackendError, ConnectionError):
    """A remote backend could not be reached."""


class MigrationError(BackendError):
    """A knowledge base copied to other stores does not match its source.

    Attributes:
        report: The [`MigrationReport`][multimodal_rag._migrate.MigrationReport] of the copy.
    """

    def __init__(self, message: str, *, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class ModelLoadError(MultimodalRAGError, RuntimeError):
    """Model weights could not be found, downloaded or loaded."""


class PrecisionError(ModelLoadError):
    """A precision the caller asked for fails the quality gate, or cannot run here.

    Raised instead of falling back to another precision, unless the caller allowed a
    fallback (``allow_fallback=True``, ``--allow-fallback``).

    Attributes:
        precision: The precision asked for (``"int8"``, ``"bf16"``...).
        tower: The part of the model that failed it (``"image"``, ``"text"``).
        gate: The gate's measurement (``min_cosine``, ``mean_cosine``, ``count``,
            ``passed``), or ``None`` when the precision cannot run here at all.
    """

    def __init__(
        self,
        message: str,
        *,
        precision: str,
        tower: str,
        gate: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.precision = precision
        self.tower = tower
        self.gate = gate


class MissingDependencyError(MultimodalRAGError, ImportError):
    """An optional package needed for this feature is not installed."""


class AnswererError(MultimodalRAGError, RuntimeError):
    """The answering model failed."""


class AnswererAuthenticationError(AnswererError, PermissionError):
    """The provider rejected the credentials."""


class AnswererRateLimitError(AnswererError):
    """The provider's rate limit was hit and retries did not help."""


class AnswererTimeoutError(AnswererError, TimeoutError):
    """The provider did not answer in time."""


class AnswererConnectionError(AnswererError, ConnectionError):
    """The provider could not be reached."""


class AnswererBadRequestError(AnswererError, ValueError):
    """The provider refused the request as malformed."""
