"""Making a knowledge base match a source (a folder or a bucket prefix): new images added,
changed ones replaced, vanished ones removed.

A sync is a plan and three journalled steps. The plan compares the source's listing, streamed
page by page, with the records whose ``image_path`` lies under the source: a listed image is
unchanged when a record of its location keeps its version (`VERSION_KEY`: the ETag, or a local
file's size and modification time), or, for a record written without one, when its bytes still
hash to the record's id. The steps then run in an order that a kill at any point leaves
recoverable by running the same sync again:

1. new and changed images are ingested (batch by batch, each batch journalled); a changed one's
   new record carries the old one's description, so nothing is lost while both exist;
2. the versions of unchanged records that had none are written (journalled puts);
3. the records of vanished images, and those the changed images replace, are removed (a
   journalled remove).

After a kill between steps, a location may have two records: the next sync keeps the one whose
version matches and removes the other, as it does any record left over from such a run.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import TYPE_CHECKING

import attrs

from multimodal_rag._facade.state import KnowledgeBaseState
from multimodal_rag._locks import reading
from multimodal_rag.types import Record, Skipped, SyncResult

if TYPE_CHECKING:
    from multimodal_rag._facade.ingesting import Ingesting
    from multimodal_rag._facade.records import Records
    from multimodal_rag._ingest.sources import Source, SourceFile
    from multimodal_rag.ocr import TextReader

__all__ = ["Syncing"]


@attrs.define
class _Plan:
    new: list[SourceFile] = attrs.field(factory=list)
    changed: list[SourceFile] = attrs.field(factory=list)
    replaced: dict[str, Record] = attrs.field(
        factory=dict
    )  # changed location -> the record it replaces
    versions: list[Record] = attrs.field(factory=list)  # unchanged records to give their version
    stale: dict[str, str] = attrs.field(factory=dict)  # id -> location, to remove
    vanished: list[str] = attrs.field(factory=list)
    unchanged: int = 0
    unreadable: list[Skipped] = attrs.field(factory=list)


class Syncing:
    """``sync`` of the knowledge base ``state`` holds (documented on the facade)."""

    def __init__(self, state: KnowledgeBaseState, ingesting: Ingesting, records: Records) -> None:
        self._state = state
        self._lock = state.lock
        self._ingesting = ingesting
        self._records = records

    def sync(
        self,
        location: str | os.PathLike[str],
        *,
        descriptions: str | os.PathLike[str] | None,
        recursive: bool,
        allow_outside: bool,
        dry_run: bool,
        batch_size: int,
        progress: bool | None,
        page_size: int | None,
        ocr: bool | TextReader | None = None,
    ) -> SyncResult:
        from multimodal_rag._ingest.pipeline import VERSION_KEY, items_from_source
        from multimodal_rag._ingest.sources import DescriptionsFile, Source

        state = self._state
        if not dry_run:
            state.check_writable()
        source = Source(
            location, recursive=recursive, allow_outside=allow_outside, page_size=page_size
        )
        if descriptions is not None:  # a bad file changes nothing: read before the listing
            DescriptionsFile(descriptions, source.location, allow_outside=allow_outside)
        plan = self._plan(source, progress=progress)
        result = SyncResult(
            new=[file.location for file in plan.new],
            changed=[file.location for file in plan.changed],
            removed=plan.vanished,
            unchanged=plan.unchanged,
            dry_run=dry_run,
        )
        if dry_run:
            return result
        items = items_from_source(
            source,
            [*plan.new, *plan.changed],
            descriptions=descriptions,
            allow_outside=allow_outside,
            kept=plan.replaced,
        )
        added = self._ingesting.ingest(items, batch_size=batch_size, progress=progress, ocr=ocr)
        added = attrs.evolve(added, skipped=(*source.refused, *plan.unreadable, *added.skipped))
        if plan.versions:
            self._records.put(plan.versions)
        failed = {skipped.source for skipped in added.skipped}
        removals = dict(plan.stale)
        for location, record in plan.replaced.items():
            if location not in failed:  # an unreadable new version leaves the old record in place
                removals[record.id] = location
        # An image that vanished in one place and is listed in another (same bytes) is the
        # same record: it is pointed at its new place instead of being removed.
        moved = {id_: where for where, id_ in added.duplicates if id_ in removals}
        if moved:
            current = self._records.get_many(list(moved))
            self._records.put(
                [
                    attrs.evolve(
                        record,
                        image_path=moved[id_],
                        metadata={k: v for k, v in record.metadata.items() if k != VERSION_KEY},
                    )
                    for id_, record in current.items()
                ]
            )
        gone = [id_ for id_ in removals if id_ not in moved]
        if gone:
            self._records.remove(gone)
        return attrs.evolve(result, added=added)

    @reading
    def _stored_under(self, source: Source) -> dict[str, list[Record]]:
        """The records whose image lies in ``source``, by location."""
        by_location: dict[str, list[Record]] = defaultdict(list)
        for record in self._state.description_store:
            if source.holds(record.image_path):
                by_location[record.image_path].append(record)  # type: ignore[index]
        return by_location

    def _plan(self, source: Source, *, progress: bool | None) -> _Plan:
        from tqdm.auto import tqdm

        from multimodal_rag._images import content_id
        from multimodal_rag._ingest.pipeline import VERSION_KEY
        from multimodal_rag.errors import ImageError

        stored = self._stored_under(source)
        plan = _Plan()
        # tqdm's disable=None shows the bar only on a terminal; the total is unknown while listing.
        bar = tqdm(desc="listing", unit="file", disable=None if progress is None else not progress)
        try:
            for file in source.files():
                bar.update(1)
                records = stored.pop(file.location, [])
                if not records:
                    plan.new.append(file)
                    continue
                current = [
                    r
                    for r in records
                    if file.version is not None and r.metadata.get(VERSION_KEY) == file.version
                ]
                if not current:  # written without a version, or changed: its bytes decide
                    try:
                        id_ = content_id(source.read(file))
                    except ImageError as exc:
                        plan.unreadable.append(Skipped(source=file.location, reason=str(exc)))
                        plan.unchanged += 1  # cannot tell: left as it is
                        continue
                    current = [r for r in records if r.id == id_]
                    if current and file.version is not None:
                        metadata = {**current[0].metadata, VERSION_KEY: file.version}
                        plan.versions.append(attrs.evolve(current[0], metadata=metadata))
                if current:
                    plan.unchanged += 1
                    keep = current[0]
                    plan.stale.update({r.id: file.location for r in records if r.id != keep.id})
                    continue
                plan.changed.append(file)
                # The record whose description carries over: a described one, if any.
                plan.replaced[file.location] = next(
                    (r for r in records if r.description is not None), records[0]
                )
                plan.stale.update(
                    {
                        r.id: file.location
                        for r in records
                        if r.id != plan.replaced[file.location].id
                    }
                )
        finally:
            bar.close()
        for location, records in stored.items():
            plan.vanished.append(location)
            plan.stale.update({r.id: location for r in records})
        plan.vanished.sort()
        return plan
