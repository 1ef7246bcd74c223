"""Approximate search on an hnswlib HNSW graph (``space="ip"``).

hnswlib's ``loadIndex`` trusts its file: the sizes in the header, the neighbour ids
in the link lists and the entry point are used as memory offsets unchecked, so a
crafted ``index.hnsw`` (a checksum proves integrity, not safety) could make it read
or write outside its buffers. `check_index_file` reads the file with numpy
first and refuses any file hnswlib would misread. The layout (``saveIndex`` in
hnswlib's ``hnswalg.h``, little-endian, ``size_t`` = 8 bytes):

```text
header, 96 bytes: offsetLevel0 max_elements count size_data_per_element
    label_offset offsetData (u64 each) maxlevel (i32) enterpoint (u32)
    maxM maxM0 M (u64) mult (f64) ef_construction (u64)
count level-0 records of size_data_per_element bytes each:
    u16 link count, u8 flags (bit 0: deleted), u8 unused, maxM0 x u32 neighbours,
    dim x f32 vector, u64 label
count upper-level blocks: u32 byte size (0 for a node on level 0 only), then
    one list per level above 0: u16 link count, u16 unused, maxM x u32 neighbours
```
"""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from multimodal_rag._extras import require
from multimodal_rag._validation import check_int
from multimodal_rag.errors import CorruptFileError
from multimodal_rag.protocols import IdFilter
from multimodal_rag.types import Neighbor, Vectors
from multimodal_rag.vectors.label_map import LabelMap
from multimodal_rag.vectors.labelled_store import LabelledVectorStore

__all__ = ["HNSWLibStore", "IndexFileError", "check_index_file", "check_index_layout", "declared_dim"]

_INDEX_FILE = "index.hnsw"
_IDS_FILE = "ids.json"
_INITIAL_CAPACITY = 1024
#: The largest dimension read from an index file's header (Milvus's limit too): an empty
#: index constrains it by nothing else, and a new store allocates room for vectors of it.
_MAX_DIM_IN_FILE = 32_768

_HEADER = np.dtype(
    [
        ("offset_level0", "<u8"),
        ("max_elements", "<u8"),
        ("count", "<u8"),
        ("size_data_per_element", "<u8"),
        ("label_offset", "<u8"),
        ("offset_data", "<u8"),
        ("max_level", "<i4"),
        ("entry_point", "<u4"),
        ("max_m", "<u8"),
        ("max_m0", "<u8"),
        ("m", "<u8"),
        ("mult", "<f8"),
        ("ef_construction", "<u8"),
    ]
)
# Level-0 records are checked this many at a time, so memory stays flat on large indexes.
_CHUNK = 65536


class HNSWLibStore(LabelledVectorStore):
    """Approximate nearest neighbours on an hnswlib graph.

    Removal uses hnswlib's ``mark_deleted``; later adds reuse the slots of removed
    vectors (``replace_deleted``), and the capacity doubles by itself when full, so
    nobody has to guess ``max_elements``.

    hnswlib keeps ``ef`` as one setting of the whole index, so a search that overrides
    it (``search(..., ef=...)``) holds the store's lock exclusively: it never changes
    the ``ef`` of a search running in another thread, but runs alone.

    Args:
        dim: Dimension of the vectors.
        M: Graph neighbours per node; more means better recall, more memory and a slower build.
        ef_construction: Candidate-list size while building; more means a better graph.
        ef_search: Candidate-list size while searching (hnswlib uses at least ``k``). The
            default, 128, measured recall@10 0.97 at one million CLIP-like vectors (0.90 with
            64) and 1.00 at 100,000, at well under a millisecond per query.
    """

    kind: ClassVar[str] = "hnswlib"

    def __init__(self, dim: int, *, M: int = 16, ef_construction: int = 100, ef_search: int = 128) -> None:
        super().__init__(dim)
        self._M = check_int("M", M, minimum=2)
        self._ef_construction = check_int("ef_construction", ef_construction)
        self._ef_search = check_int("ef_search", ef_search)
        hnswlib = _import_hnswlib()
        self._index = hnswlib.Index(space="ip", dim=self._dim)
        self._index.init_index(
            max_elements=_INITIAL_CAPACITY,
            M=self._M,
            ef_construction=self._ef_construction,
            allow_replace_deleted=True,
        )
        self._index.set_ef(self._ef_search)

    def config(self) -> dict[str, Any]:
        return {"M": self._M, "ef_construction": self._ef_construction, "ef_search": self._ef_search}

    def search(
        self, queries: Vectors, k: int, *, filter: IdFilter | None = None, ef: int | None = None
    ) -> list[list[Neighbor]]:
        """Search as [`VectorStore.search`][multimodal_rag.protocols.VectorStore.search]; ``ef`` overrides ``ef_search`` for this call."""
        ef = None if ef is None else check_int("ef", ef)
        if ef is None or ef == self._ef_search:
            return self._search(queries, k, filter)
        return self._search(queries, k, filter, exclusive=True, ef=ef)

    def _index_add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        index = self._index
        needed = index.get_current_count() + len(labels)
        if needed > index.get_max_elements():
            index.resize_index(max(needed, 2 * index.get_max_elements()))
        index.add_items(vectors, labels, replace_deleted=True)

    def _index_remove(self, labels: np.ndarray) -> None:
        for label in labels.tolist():
            self._index.mark_deleted(label)

    def _index_vectors(self, labels: np.ndarray) -> np.ndarray:
        return np.asarray(self._index.get_items(labels), dtype=np.float32)

    def _index_search(
        self, queries: np.ndarray, k: int, *, ef: int | None = None, **other: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        if ef is not None:
            self._index.set_ef(ef)  # under the exclusive lock; restored below
        try:
            # One thread for a single query: a thread pool costs more than it saves.
            labels, distances = self._index.knn_query(queries, k, num_threads=1 if len(queries) == 1 else -1)
        except RuntimeError:
            # hnswlib found fewer than k live neighbours (removals can cut the graph);
            # the base class answers such queries exactly.
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        finally:
            if ef is not None:
                self._index.set_ef(self._ef_search)
        # hnswlib's "ip" distance is 1 - inner product.
        return 1.0 - distances, labels.astype(np.int64)

    def save(self, directory: Path) -> None:
        path = Path(directory) / _INDEX_FILE
        with self._lock.read():
            self._index.save_index(str(path))
            # hnswlib's save reports no write error: on a full disk it returns normally
            # after writing a short file, so read back the sizes the file declares.
            try:
                check_index_layout(path, dim=self._dim, M=self._M)
            except IndexFileError as exc:
                code = errno.ENOSPC if exc.short else errno.EIO
                reason = "is the disk full?" if exc.short else "hnswlib wrote an inconsistent file"
                raise OSError(code, f"the hnswlib index was not written completely ({exc}); {reason}", str(path)) from None
            self._labels.save(Path(directory) / _IDS_FILE)

    @classmethod
    def load(cls, directory: Path, *, dim: int | None = None, **config: Any) -> HNSWLibStore:
        path = Path(directory) / _INDEX_FILE
        if dim is None:
            try:
                dim = declared_dim(path)
            except (IndexFileError, OSError) as exc:
                raise CorruptFileError(f"cannot read the hnswlib index {str(path)!r}: {exc}") from exc
        store = cls(dim, **config)
        dim = store.dim
        labels = LabelMap.load(Path(directory) / _IDS_FILE)
        # hnswlib uses the file's sizes and links as memory offsets without checking them.
        try:
            count, live = check_index_file(path, dim=dim, M=store._M)
        except (IndexFileError, OSError) as exc:
            raise CorruptFileError(f"cannot read the hnswlib index {str(path)!r}: {exc}") from exc
        hnswlib = _import_hnswlib()
        # A fresh object: load_index on the one __init__ made would discard it noisily.
        store._index = hnswlib.Index(space="ip", dim=dim)
        try:
            # The capacity is the element count checked above, never the file's own
            # max_elements, which could ask for any amount of memory.
            store._index.load_index(str(path), max_elements=max(count, 1), allow_replace_deleted=True)
        except (RuntimeError, OSError) as exc:
            raise CorruptFileError(f"cannot read the hnswlib index {str(path)!r}: {exc}") from exc
        if set(live.tolist()) != set(labels.id_of):
            raise CorruptFileError(
                f"the hnswlib index {str(path)!r} ({len(live)} live vectors) does not hold exactly "
                f"the vectors of its id map ({len(labels)} ids)"
            )
        store._index.set_ef(store._ef_search)
        store._labels = labels
        return store


def _import_hnswlib() -> Any:
    # An extra: hnswlib publishes no wheels, so installing it needs a C++ compiler.
    return require("hnswlib", user="HNSWLibStore", extra="hnswlib")


class IndexFileError(ValueError):
    """An hnswlib index file that does not match its declared layout.

    Attributes:
        short: The file ends before the sizes its header declares (a truncated write).
    """

    def __init__(self, message: str, *, short: bool = False) -> None:
        super().__init__(message)
        self.short = short


def check_index_file(path: Path, *, dim: int, M: int) -> tuple[int, np.ndarray]:
    """Check that ``path`` is an hnswlib ``ip`` index of ``dim``-dimensional vectors built with ``M``.

    Beyond `check_index_layout`: every link count is within bounds, every
    neighbour id is below the element count and on a level its node has, and no two
    live elements share a label.

    Returns:
        The number of elements (deleted ones included) and the labels of the live ones.

    Raises:
        IndexFileError: The first problem found.
        OSError: The file cannot be read.
    """
    count, levels, blocks, tail = check_index_layout(path, dim=dim, M=M)
    if count == 0:
        return 0, np.zeros(0, dtype=np.uint64)
    record = np.dtype([("links", "<u4", (1 + 2 * M,)), ("vector", "<f4", (dim,)), ("label", "<u8")])
    level0 = np.memmap(path, dtype=record, mode="r", offset=_HEADER.itemsize, shape=(count,))
    live = []
    for start in range(0, count, _CHUNK):
        chunk = level0[start : start + _CHUNK]
        links = np.asarray(chunk["links"])
        owners = np.arange(start, start + len(chunk))
        _check_lists(links, 2 * M, count, levels, None, owners)
        live.append(np.asarray(chunk["label"])[(links[:, 0] >> 16) & 1 == 0])
    if len(blocks):
        owners, starts = blocks[:, 0], blocks[:, 1]
        # One row per list: the word where it starts and the level it is on.
        per_owner = levels[owners]
        level_of = np.concatenate([np.arange(1, n + 1) for n in per_owner.tolist()])
        first = np.repeat(starts, per_owner) + (level_of - 1) * (1 + M)
        lists = tail[first[:, None] + np.arange(1 + M)]
        _check_lists(lists, M, count, levels, level_of, np.repeat(owners, per_owner))
    labels = np.concatenate(live)
    if len(np.unique(labels)) != len(labels):
        raise IndexFileError("two of its live elements have the same label")
    return count, labels


def declared_dim(path: Path) -> int:
    """The vector dimension an hnswlib index file's header declares.

    Only the header is read: `check_index_file` then checks the whole file
    against this dimension.

    Raises:
        IndexFileError: A header too short, or one that declares no usable dimension.
        OSError: The file cannot be read.
    """
    with open(path, "rb") as file:
        raw = file.read(_HEADER.itemsize)
    if len(raw) < _HEADER.itemsize:
        raise IndexFileError(f"it is {len(raw)} bytes, shorter than its {_HEADER.itemsize}-byte header", short=True)
    header = np.frombuffer(raw, dtype=_HEADER)[0]
    # Each level-0 record holds the links, then the vector, then the label.
    width = int(header["label_offset"]) - int(header["offset_data"])
    if width <= 0 or width % 4 or width // 4 > _MAX_DIM_IN_FILE:
        raise IndexFileError(
            f"its header's label_offset ({header['label_offset']}) and offset_data ({header['offset_data']}) "
            f"leave no room for a vector of 1 to {_MAX_DIM_IN_FILE} float32 components"
        )
    return width // 4


def check_index_layout(path: Path, *, dim: int, M: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Check an hnswlib index file's header and sizes against ``dim``, ``M`` and its length.

    The header must agree with ``dim`` and ``M``; the level-0 records and the
    per-element link-list sizes must add up to the file's length exactly; the entry
    point must be an element on the top level.

    Returns:
        The element count, each element's level, ``(element, first word)`` of each
        upper-level block, and the link-list words after the level-0 records.

    Raises:
        IndexFileError: The first problem found; ``short`` when the file is shorter
            than its header declares.
        OSError: The file cannot be read.
    """
    length = os.stat(path).st_size
    if length < _HEADER.itemsize:
        raise IndexFileError(f"it is {length} bytes, shorter than its {_HEADER.itemsize}-byte header", short=True)
    with open(path, "rb") as file:
        raw = np.frombuffer(file.read(_HEADER.itemsize), dtype=_HEADER)[0]
    header = {name: raw[name].item() for name in _HEADER.names or ()}
    links0 = 4 * (1 + 2 * M)  # u16 count + flags, then maxM0 neighbour ids
    expected = {
        "offset_level0": 0,
        "size_data_per_element": links0 + 4 * dim + 8,
        "label_offset": links0 + 4 * dim,
        "offset_data": links0,
        "m": M,
        "max_m": M,
        "max_m0": 2 * M,
    }
    for name, value in expected.items():
        if header[name] != value:
            raise IndexFileError(
                f"its header's {name} is {header[name]}, but an index of dimension {dim} with M={M} has {value}"
            )
    # hnswlib draws new nodes' levels with mult; a NaN or negative one would give absurd levels.
    if not math.isclose(header["mult"], 1.0 / math.log(M), rel_tol=1e-9):
        raise IndexFileError(f"its header's mult is {header['mult']!r}, not 1/ln(M)")
    count, per_element = header["count"], header["size_data_per_element"]
    if count > header["max_elements"]:
        raise IndexFileError(f"its header declares {count} elements, more than its capacity {header['max_elements']}")
    level0_end = _HEADER.itemsize + count * per_element
    if level0_end > length:
        raise IndexFileError(
            f"its header declares {count} elements of {per_element} bytes, but the file is {length} bytes",
            short=True,
        )
    if (length - level0_end) % 4:
        raise IndexFileError(f"its link lists take {length - level0_end} bytes, not a multiple of 4")
    tail = np.memmap(path, dtype="<u4", mode="r", offset=level0_end, shape=((length - level0_end) // 4,)) if (
        length > level0_end
    ) else np.zeros(0, dtype="<u4")
    levels, blocks = _upper_levels(tail, count, 4 * (1 + M))
    max_level, entry = header["max_level"], header["entry_point"]
    if count == 0:
        if max_level != -1:
            raise IndexFileError(f"it has no elements but a top level of {max_level}")
        return 0, levels, blocks, tail
    if entry >= count:
        raise IndexFileError(f"its entry point {entry} is not one of its {count} elements")
    if levels[entry] != max_level or int(levels.max()) != max_level:
        raise IndexFileError(
            f"its top level is {max_level}, but its entry point is on level {levels[entry]} "
            f"and its highest node on level {int(levels.max())}"
        )
    return count, levels, blocks, tail


def _upper_levels(tail: np.ndarray, count: int, list_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Walk the per-element link-list sizes: each element's level and ``(element, first word)`` of each block."""
    levels = np.zeros(count, dtype=np.int64)
    blocks = []
    # Most elements live on level 0 only (size 0): skip runs of zero sizes at once, so
    # the Python loop runs once per element with upper levels (about 1 in M).
    nonzero = np.flatnonzero(tail)
    word = element = 0
    while element < count:
        at = int(np.searchsorted(nonzero, word))
        next_nonzero = int(nonzero[at]) if at < len(nonzero) else len(tail)
        zeros = next_nonzero - word
        if zeros >= count - element:
            word += count - element
            element = count
            break
        element += zeros
        word = next_nonzero
        size = int(tail[word])
        if size % list_bytes:
            raise IndexFileError(f"element {element}'s link lists take {size} bytes, not a multiple of {list_bytes}")
        end = word + 1 + size // 4
        if end > len(tail):
            raise IndexFileError(f"element {element}'s link lists run past the end of the file", short=True)
        levels[element] = size // list_bytes
        blocks.append((element, word + 1))
        word = end
        element += 1
    if element < count or word > len(tail):
        raise IndexFileError("the file ends before the link lists of all its elements", short=True)
    if word != len(tail):
        raise IndexFileError(f"{4 * (len(tail) - word)} bytes follow its last link list")
    return levels, np.asarray(blocks, dtype=np.int64).reshape(-1, 2)


def _check_lists(
    lists: np.ndarray, most: int, count: int, levels: np.ndarray, level: np.ndarray | None, owner: np.ndarray
) -> None:
    """Check link lists: one per row, the u16 link count in the low half of the first word, then ids.

    ``level`` is each row's level, or ``None`` for level 0, which every node has.
    """
    counts = lists[:, 0] & 0xFFFF
    used = np.arange(most, dtype=np.uint32) < counts[:, None]
    neighbours = np.where(used, lists[:, 1:], 0)
    too_many = counts > most
    past_end = (neighbours >= count).any(axis=1)
    checks = [(too_many, f"has more than {most} links"), (past_end, f"links past its last element ({count})")]
    if level is not None and not (too_many.any() or past_end.any()):
        # A link on level l to a node without level l would make hnswlib read that
        # node's missing level-l list (a null pointer).
        below = (used & (levels[neighbours] < level[:, None])).any(axis=1)
        checks.append((below, "links to a node below the list's level"))
    for bad, problem in checks:
        if bad.any():
            row = int(np.argmax(bad))
            where = f"level-{int(level[row])}" if level is not None else "level-0"
            raise IndexFileError(f"element {int(owner[row])}'s {where} link list {problem}")
