"""Reading a damaged knowledge base back: everything that can still be read, and a count of the rest.

When a file of the current snapshot fails its checksum, ``open(salvage=True)``
does not start that store empty. For the descriptions — the one part that cannot
be rebuilt from the images — it reads, in order of preference:

1. every record the damaged file still holds (the store's ``salvage``: JSONL lines
   around the damage, SQLite rows on either side of a damaged page);
2. records of the snapshot before it, which each save keeps for this purpose,
   for ids the damaged file no longer has (they may be older versions; they are
   counted apart);
3. the journal, replayed on top as on every open.

What is still missing after that is counted and named in `SalvageFindings`,
which [`MultimodalRAG.verify`][multimodal_rag._rag.MultimodalRAG.verify] and [`MultimodalRAG.repair`][multimodal_rag._rag.MultimodalRAG.repair] report; repair
sets the damaged files aside in ``damaged/`` instead of deleting them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import field, frozen

from multimodal_rag.errors import CorruptFileError
from multimodal_rag.types import str_tuple

if TYPE_CHECKING:
    from multimodal_rag._kb.directory import KnowledgeBaseDirectory
    from multimodal_rag.protocols import DescriptionStore

__all__ = ["SalvageFindings", "salvage_descriptions", "set_aside"]


@frozen(kw_only=True)
class SalvageFindings:
    """What a salvaging open found damaged, what it read back, and what is lost.

    Attributes:
        damaged_files: Files of the snapshot that failed their checksums.
        records_salvaged: Records read from the damaged description files.
        records_from_older_snapshot: Records taken from the snapshot before (possibly
            older versions).
        lost_ids: Ids whose record could not be recovered anywhere, where known.
        records_lost: How many records could not be recovered (at least ``len(lost_ids)``).
        changes_lost: Committed journal entries that the journal no longer holds.
        adapter_problem: What is wrong with the adapter's file (missing, changed), when
            an adapter was applied and it could not be loaded; repair removes the adapter.
        raw_vectors_damaged: The raw vectors kept beside an adapted index failed their
            checksums (they start empty).
    """

    damaged_files: tuple[str, ...] = field(converter=str_tuple, default=())
    records_salvaged: int = 0
    records_from_older_snapshot: int = 0
    lost_ids: tuple[str, ...] = field(converter=str_tuple, default=())
    records_lost: int = 0
    changes_lost: int = 0
    adapter_problem: str | None = None
    raw_vectors_damaged: bool = False

    @property
    def anything_lost(self) -> bool:
        return bool(self.records_lost or self.changes_lost)


def salvage_descriptions(
    store_cls: Any,
    config: Mapping[str, Any],
    directory: KnowledgeBaseDirectory,
    generation: int,
    *,
    expected_ids: set[str] | None,
) -> tuple[DescriptionStore, int, int]:
    """Read the damaged description store of snapshot ``generation`` and fill it from older snapshots.

    Only records of ``expected_ids`` (the snapshot's vector ids, when its vectors are
    intact) are taken from older snapshots, so images removed since are not revived.

    Returns the store, the number of records read from the damaged files, and the
    number taken from older snapshots. Which ids are still missing is for the caller
    to say, once the vectors and the journal are known.

    Raises:
        KnowledgeBaseAccessError: A file may not be read (not damage; nothing is read around it).
    """
    store = _read(store_cls, config, directory.snapshot(generation) / "descriptions")
    if store is None:
        store = store_cls(**config)
    salvaged = len(store)
    from_older = 0
    for older in directory.older_snapshots(generation):
        previous = _read(store_cls, config, older / "descriptions")
        if previous is None:
            continue
        missing = [
            record
            for record in previous
            if record.id not in store and (expected_ids is None or record.id in expected_ids)
        ]
        store.put(missing)
        from_older += len(missing)
    return store, salvaged, from_older


def _read(store_cls: Any, config: Mapping[str, Any], directory: Path) -> Any:
    salvage = getattr(store_cls, "salvage", None)
    try:
        return salvage(directory, **config) if callable(salvage) else store_cls.load(directory, **config)
    except CorruptFileError:
        return None


def set_aside(directory: KnowledgeBaseDirectory, files: list[str]) -> list[Path]:
    """Copy damaged files into ``damaged/<time>/``, keeping their paths; returns the copies.

    Copies, not moves: the snapshot they belong to stays as it was until a save
    replaces it. Links are never followed (a knowledge base holds none).
    """
    if not files:
        return []
    target = directory.damaged / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    copies = []
    for name in files:
        source = Path(name)
        try:
            relative = source.relative_to(directory.path)
        except ValueError:
            continue
        if source.is_symlink() or not source.is_file():
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination, follow_symlinks=False)
        copies.append(destination)
    return copies
