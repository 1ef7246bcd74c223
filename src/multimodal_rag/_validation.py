"""The checks every component shares, built-in or a user's own: ids, metadata, records,
questions, vectors and integer settings.

Ids and metadata cross from the caller into files, journals and databases, so they are
checked where they enter (the facade's methods and every description store's ``put``,
through `check_record`), by rules every store can keep:

- an id is a non-empty string of at most `MAX_ID_BYTES` bytes of UTF-8,
  without control characters; a *new* id also without path separators or the names
  ``.`` and ``..`` (`check_new_id`; records of earlier versions keep theirs);
- metadata is what JSON keeps exactly: string keys, and values that are ``None``,
  ``bool``, ``int``, finite ``float``, ``str``, ``list`` or ``dict``, nested at most
  `MAX_METADATA_DEPTH` levels. A tuple or an integer key would come back as a
  list or a string after reopening, and deep nesting would overflow the stack of
  the encoder and of every reader after it. Its keys may not be
  `RESERVED_KEYS`, which a JSON Lines descriptions file uses for the record itself.

JSON that comes from outside (a filter in an HTTP form or on the command line, a
``KEY=VALUE`` option) is read by [`load_json`][multimodal_rag._validation.load_json], which refuses nesting deeper than
[`MAX_JSON_DEPTH`][multimodal_rag._validation.MAX_JSON_DEPTH] before parsing (deep nesting exhausts the parser's stack) and numbers
longer than [`MAX_JSON_DIGITS`][multimodal_rag._validation.MAX_JSON_DIGITS] digits, with [`InvalidInputError`][multimodal_rag.errors.InvalidInputError] naming the input.

Vectors are checked by every vector store on the way in (`check_ids`,
`check_vectors`, `check_queries`): a stored vector must be a finite unit
vector, since scores are inner products. A custom store can call the same functions, so
it refuses exactly what the built-in stores refuse. numpy is imported only by the vector
checks, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from multimodal_rag.errors import DimensionMismatchError, InvalidInputError
from multimodal_rag.types import Record

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "MAX_ID_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_JSON_DIGITS",
    "MAX_METADATA_DEPTH",
    "RESERVED_KEYS",
    "UNIT_NORM_TOLERANCE",
    "bad_vector_rows",
    "check_id",
    "check_ids",
    "check_int",
    "check_metadata",
    "check_new_id",
    "check_queries",
    "check_question",
    "check_read_text",
    "check_record",
    "check_timeout",
    "check_vectors",
    "is_utf8",
    "load_json",
]

#: The longest id accepted, in bytes of UTF-8.
MAX_ID_BYTES = 512

#: The deepest metadata accepted: the mapping itself is level 1, a list or dict in it level 2.
MAX_METADATA_DEPTH = 64

#: The deepest JSON [`load_json`][multimodal_rag._validation.load_json] reads: arrays and objects nested this many levels. Metadata
#: (64 levels) and a filter ($and/$or 32 levels deep, two JSON levels each) stay within it.
MAX_JSON_DEPTH = 128

#: The longest number, in digits, [`load_json`][multimodal_rag._validation.load_json] reads; Python's own limit on converting
#: integers to and from text (``sys.set_int_max_str_digits``) is 4,300 by default.
MAX_JSON_DIGITS = 4300

# Strings, whose brackets do not nest, and the brackets that do.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")
_JSON_LONG_NUMBER = re.compile(rf"(?<![0-9])[0-9]{{{MAX_JSON_DIGITS + 1}}}")  # runs tried once each

#: Keys a record's metadata may not use: a JSON Lines descriptions file keeps the record's
#: own fields under them, beside the metadata.
RESERVED_KEYS = frozenset({"id", "image_path", "description"})

#: How far from 1 a stored vector's norm may be. Scores are inner products, which equal
#: cosines only for unit vectors; a vector of norm 1e38 would outrank every other.
#: Vectors computed in bf16 or fp16 and normalised in float32 are well within this.
UNIT_NORM_TOLERANCE = 1e-2

# Unicode's control characters (category Cc): C0, DEL and C1.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

# Scalars JSON keeps exactly (bool is an int; checked for finiteness below when a float).
_SCALARS = (str, int, float, type(None))


def _shown(id: str) -> str:
    """``repr`` of an id, shortened so that a huge one does not flood the message."""
    return repr(id) if len(id) <= 80 else f"{id[:60]!r}... ({len(id)} characters)"


def check_id(id: object, *, what: str = "id") -> str:
    """Return ``id`` if it is an id a store can keep: what every store's ``put`` and every
    lookup (``get``, ``describe``, ``remove``) checks.

    Args:
        id: The id to check.
        what: How the message names it (``"id"``, ``"record id"``).

    Raises:
        InvalidInputError: Not a string, empty, too long, or holding a control
            character or a lone surrogate; the message names the id and the reason.
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
    return id


def check_new_id(id: object, *, what: str = "id") -> str:
    """Return ``id`` if a new record may take it: `check_id`, and no path separator
    and not ``.`` or ``..``.

    Ids do not name files (stored images are named by a hash of their bytes), but a custom
    backend, a log line or a terminal may still treat them as one. Version 0.1.0 accepted
    such ids, so records that already hold one stay readable, editable and removable: only
    new ids are held to this rule.

    Raises:
        InvalidInputError: As `check_id`, or a path separator, ``.`` or ``..``.
    """
    id = check_id(id, what=what)
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
            `MAX_METADATA_DEPTH`; the message names ``owner`` and the path
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


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be stored as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def load_json(text: str | bytes, *, what: str) -> Any:
    """Parse JSON that comes from outside, refusing what would exhaust the parser.

    Args:
        text: The JSON text.
        what: How messages name it (``"filter"``, ``"--where value of 'price'"``).

    Raises:
        InvalidInputError: Not JSON (its ``__cause__`` is the `json.JSONDecodeError`),
            nesting deeper than [`MAX_JSON_DEPTH`][multimodal_rag._validation.MAX_JSON_DEPTH], or a number longer than
            [`MAX_JSON_DIGITS`][multimodal_rag._validation.MAX_JSON_DIGITS] digits; the message names ``what``.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"{what} is not UTF-8 text: {exc}") from exc
    # Counted without recursion, so that neither the count nor the parse can overflow the stack.
    bare = _JSON_STRING.sub('""', text)
    depth = deepest = 0
    for bracket in _JSON_BRACKET.finditer(bare):
        depth += 1 if bracket.group() in "[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_JSON_DEPTH:
                raise InvalidInputError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
    if _JSON_LONG_NUMBER.search(bare):
        raise InvalidInputError(f"{what} holds a number of more than {MAX_JSON_DIGITS:,} digits")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{what} is not JSON: {exc}") from exc
    except (ValueError, RecursionError) as exc:  # what the checks above leave to the parser's limits
        raise InvalidInputError(f"{what} cannot be read: {exc}") from None


def check_record(record: object) -> None:
    """Refuse a record no store could keep faithfully.

    Every description store's ``put`` calls it, so the rules above (ids; metadata JSON
    gives back exactly) hold whichever store is used.

    Raises:
        InvalidInputError: The message names the record and what is wrong with it.
    """
    if not isinstance(record, Record):
        raise InvalidInputError(f"expected a Record, got {type(record).__name__}")
    check_id(record.id, what="record id")
    if record.description is not None and not isinstance(record.description, str):
        raise InvalidInputError(f"description of {record.id!r} must be a string or None")
    if record.image_path is not None and not isinstance(record.image_path, str):
        raise InvalidInputError(f"image_path of {record.id!r} must be a string or None")
    for name, value in (("id", record.id), ("description", record.description), ("image_path", record.image_path)):
        if value is not None and not is_utf8(value):
            raise InvalidInputError(f"{name} of record {record.id!r} has characters UTF-8 cannot store (lone surrogates)")
    clash = RESERVED_KEYS.intersection(record.metadata)
    if clash:
        raise InvalidInputError(f"metadata of {record.id!r} uses reserved key(s) {sorted(clash)}")
    check_metadata(record.metadata, owner=f"record {record.id!r}")
    try:  # what the structural check leaves: lone surrogates, integers too long to print
        json.dumps(record.metadata, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"metadata of {record.id!r} is not JSON-serialisable: {exc}") from exc
    if record.ocr is not None:
        check_read_text(record.ocr, owner=f"record {record.id!r}")


def check_read_text(read: object, *, owner: str) -> None:
    """Refuse read text (`multimodal_rag.ocr.ReadText`) no store could keep faithfully: lines
    that are not text, NUL or lone surrogates in them, confidences outside 0 to 1, boxes that
    are not four finite points.

    Raises:
        InvalidInputError: The message names ``owner`` and what is wrong.
    """
    from multimodal_rag.ocr import ReadText, TextLine

    if not isinstance(read, ReadText):
        raise InvalidInputError(f"the read text of {owner} must be a ReadText, got {type(read).__name__}")
    if isinstance(read.dropped, bool) or not isinstance(read.dropped, int) or read.dropped < 0:
        raise InvalidInputError(f"the read text of {owner} must count its dropped lines as an integer >= 0")
    for number, line in enumerate(read.lines, start=1):
        where = f"line {number} of the read text of {owner}"
        if not isinstance(line, TextLine) or not isinstance(line.text, str):
            raise InvalidInputError(f"{where} must be a TextLine with a string text")
        if "\x00" in line.text or not is_utf8(line.text):
            raise InvalidInputError(f"{where} has characters no store can keep (NUL or lone surrogates)")
        if not isinstance(line.confidence, (int, float)) or not 0.0 <= line.confidence <= 1.0:
            raise InvalidInputError(f"{where} has confidence {line.confidence!r}, not a number from 0 to 1")
        points = line.box
        if (
            not isinstance(points, tuple)
            or len(points) != 4
            or not all(
                isinstance(point, tuple)
                and len(point) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in point)
                for point in points
            )
        ):
            raise InvalidInputError(f"{where} has box {points!r:.120}, not four finite (x, y) points")


def check_question(question: object) -> str:
    """Return ``question`` if it is a string with something in it.

    Raises:
        InvalidInputError: Not a string, or only white space.
    """
    if not isinstance(question, str):
        raise InvalidInputError(f"the question must be a string, got {type(question).__name__}")
    if not question.strip():
        raise InvalidInputError("the question is empty")
    return question


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` as an ``int`` if it is an integer of at least ``minimum``.

    For counts and sizes (``k``, ``batch_size``, ``dim``) and tuning knobs (``M``,
    ``nprobe``). A bool is refused although Python counts it as an integer; a numpy
    integer is accepted.

    Args:
        name: The argument's name, for the message.
        value: The value to check.
        minimum: The smallest value allowed: 1 (a positive integer) unless given.

    Raises:
        InvalidInputError: Not an integer, or below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        if minimum == 1:
            wanted = "a positive integer"
        elif minimum == 0:
            wanted = "a non-negative integer"
        else:
            wanted = f"an integer of at least {minimum}"
        raise InvalidInputError(f"{name} must be {wanted}, got {value!r}")
    return int(value)


def check_timeout(value: object, *, name: str = "timeout") -> float:
    """Return ``value`` as a float if it is a positive number of seconds (a bool is not one).

    Raises:
        InvalidInputError: Not a number, or not above zero.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidInputError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def bad_vector_rows(vectors: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The rows of a float32 ``(n, dim)`` array that are not finite unit vectors, and why each is not."""
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"):
        # Squares of huge rows overflow to inf in float32: refused below like NaN.
        squares = np.einsum("ij,ij->i", vectors, vectors)
    # A slightly wider test than |norm - 1| <= tolerance, settled exactly row by row.
    candidates = np.flatnonzero(~(np.abs(squares - 1.0) <= 2.1 * UNIT_NORM_TOLERANCE))
    rows, reasons = [], []
    for row in candidates.tolist():
        vector = vectors[row].astype(np.float64)
        norm = float(np.linalg.norm(vector)) if np.isfinite(vector).all() else None
        if norm is None:
            reason = "contains NaN or infinity"
        elif norm == 0:
            reason = "is all zeros"
        elif abs(norm - 1.0) > UNIT_NORM_TOLERANCE:
            reason = f"has norm {norm:.6g}, not 1 (vectors must be normalised to unit length)"
        else:
            continue
        rows.append(row)
        reasons.append(reason)
    return np.asarray(rows, dtype=np.int64), reasons


def check_ids(ids: Sequence[str]) -> list[str]:
    """Return the ids of a vector store's ``add`` as a list, if they are non-empty strings, none repeated.

    Raises:
        InvalidInputError: One string instead of a sequence, an id that is not a
            non-empty string, or an id given twice.
    """
    if isinstance(ids, str):
        raise InvalidInputError("ids must be a sequence of strings, not a single string")
    out = list(ids)
    for id_ in out:
        if not isinstance(id_, str) or not id_:
            raise InvalidInputError(f"every id must be a non-empty string, got {id_!r}")
    if len(set(out)) != len(out):
        seen: set[str] = set()
        repeated = next(i for i in out if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise InvalidInputError(f"id {repeated!r} appears more than once in one add")
    return out


def check_vectors(
    vectors: Any, dim: int, *, count: int | None = None, what: str = "vectors", unit: bool = True
) -> np.ndarray:
    """Return vectors as a C-contiguous float32 ``(n, dim)`` array, if they are fit to store.

    One vector of shape ``(dim,)`` counts as one row.

    Args:
        vectors: Anything numpy turns into a numeric array.
        dim: The dimension required.
        count: The number of rows required (the number of ids they go with), if any.
        what: How the message names them (``"vectors"``, ``"queries"``).
        unit: Require every row's norm to be within `UNIT_NORM_TOLERANCE` of 1,
            as the embedder protocol promises (otherwise only refuse zero rows).

    Raises:
        DimensionMismatchError: Wrong dimension.
        InvalidInputError: Wrong shape or dtype, NaN/inf values, zero vectors, rows
            that are not unit vectors (with ``unit``), or a row count that differs
            from ``count``. The message names the first bad row.
    """
    import numpy as np

    try:
        array = np.asarray(vectors)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} must be a numeric array: {exc}") from exc
    if array.dtype.kind not in "fiu":
        raise InvalidInputError(f"{what} must be numeric, got dtype {array.dtype}")
    if array.ndim == 1 and count in (None, 1):
        array = array[None, :]
    if array.ndim != 2:
        raise InvalidInputError(f"{what} must have shape (n, {dim}), got {array.shape}")
    if array.shape[1] != dim:
        raise DimensionMismatchError(
            f"{what} have dimension {array.shape[1]}, but this store holds dimension {dim}"
        )
    if count is not None and array.shape[0] != count:
        raise InvalidInputError(f"got {count} ids but {array.shape[0]} {what}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = int(np.argwhere(~np.isfinite(array).all(axis=1))[0, 0])
        raise InvalidInputError(f"{what} row {bad} contains NaN or infinity")
    if unit:
        rows, reasons = bad_vector_rows(array)
        if len(rows):
            raise InvalidInputError(f"{what} row {int(rows[0])} {reasons[0]}")
        return array
    norms = np.linalg.norm(array, axis=1)
    if (norms == 0).any():
        raise InvalidInputError(f"{what} row {int(np.argmin(norms))} is all zeros")
    return array


def check_queries(queries: Any, dim: int, k: int) -> np.ndarray:
    """Check ``k`` (as `check_int`) and return the queries as `check_vectors` does.

    A query's norm only scales its scores, never its ranking, so queries need not be
    unit vectors (only stored vectors must be); they must still be finite and non-zero.

    Raises:
        InvalidInputError: ``k`` is not a positive integer, or bad queries.
        DimensionMismatchError: Queries of another dimension.
    """
    import numpy as np

    check_int("k", k)
    if (
        isinstance(queries, np.ndarray)
        and queries.dtype == np.float32
        and queries.ndim == 2
        and queries.shape[1] == dim
        and queries.flags.c_contiguous
        and np.isfinite(queries.sum())
        and queries.any(axis=1).all()
    ):
        # Fast path for the common case, a few microseconds cheaper per search: a finite
        # sum means no NaN or infinity (a huge-but-finite sum overflowing to inf only
        # sends the queries through the full check below), and no row is all zeros.
        return queries
    return check_vectors(queries, dim, what="queries", unit=False)
