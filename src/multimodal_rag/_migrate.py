"""Copy a knowledge base to other stores: from the embedded FAISS + SQLite files to Milvus +
PostgreSQL when it outgrows one machine, and back.

The copy never re-embeds: vectors are read from the source's vector store and
written to the target's, records likewise, and images kept inside the source
knowledge base are copied with it. Afterwards the two are compared (counts, and
the nearest neighbours of a sample of stored vectors) and a mismatch raises
[`MigrationError`][multimodal_rag.errors.MigrationError].
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import frozen

from multimodal_rag._kb.directory import IMAGES
from multimodal_rag._validation import check_int
from multimodal_rag.errors import InvalidInputError, MigrationError

if TYPE_CHECKING:
    from multimodal_rag._rag import MultimodalRAG
    from multimodal_rag.protocols import DescriptionStore, Embedder, VectorStore
    from multimodal_rag.types import DescriptionStoreKind, VectorStoreKind

__all__ = ["MigrationReport", "migrate"]

#: Raw vectors read at a time when they are searched exactly.
_CHUNK = 4096


@frozen(kw_only=True)
class MigrationReport:
    """What a [`migrate`][multimodal_rag._migrate.migrate] copied, and how closely the copy matches.

    Attributes:
        source: The knowledge base copied from.
        target: The knowledge base created.
        vectors: Vectors in the source, and in the target.
        descriptions: Description records in the source, and in the target.
        images: Image files copied from the source's ``images/`` folder.
        sampled: Stored vectors used as test queries.
        overlap: Mean share of the source's top-``k`` results that the target also
            returned for the sampled queries (1.0 when they agree exactly).
    """

    source: Path
    target: Path
    vectors: tuple[int, int]
    descriptions: tuple[int, int]
    images: int
    sampled: int
    overlap: float

    @property
    def counts_match(self) -> bool:
        """Whether the target holds as many vectors and records as the source."""
        return self.vectors[0] == self.vectors[1] and self.descriptions[0] == self.descriptions[1]

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values; ``vectors`` and ``descriptions`` as ``[source, target]``."""
        return {
            "source": str(self.source),
            "target": str(self.target),
            "vectors": list(self.vectors),
            "descriptions": list(self.descriptions),
            "images": self.images,
            "sampled": self.sampled,
            "overlap": self.overlap,
            "counts_match": self.counts_match,
        }


def migrate(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    vector_store: VectorStoreKind | VectorStore = "faiss-flat",
    description_store: DescriptionStoreKind | DescriptionStore = "sqlite",
    embedder: Embedder | None = None,
    allow_modules: Iterable[str] = (),
    sample: int = 20,
    k: int = 10,
    min_overlap: float = 0.9,
    batch_size: int = 1_000,
) -> MigrationReport:
    """Copy the knowledge base at ``source`` into a new one at ``target`` with other stores.

    Example, moving to servers (the URIs come from ``$MILVUS_URI`` and ``$DATABASE_URL``,
    or pass configured store instances):

    ```python
    migrate("kb/", "kb-shared/", vector_store="milvus", description_store="postgres")
    ```

    Args:
        source: An existing knowledge-base directory; it is only read.
        target: Directory of the new knowledge base (must not hold one yet).
        vector_store: The target's vector store: a built-in kind or an empty instance
            of the embedder's dimension.
        description_store: The target's description store: a kind or an empty instance.
        embedder: The source's embedder, when it should not be rebuilt from the manifest.
            It is only recorded in the target's manifest; nothing is re-embedded.
        allow_modules: Packages the source's manifest may name custom backends from.
        sample: How many stored vectors to search with, in both, after the copy.
        k: Neighbours compared per sampled query.
        min_overlap: Least acceptable mean share of the source's top-``k`` found by the
            target; approximate indexes (HNSW, IVF) may legitimately differ a little.
        batch_size: Vectors and records copied per request.

    Returns:
        The report of the copy.

    Raises:
        KnowledgeBaseExistsError: ``target`` already holds a knowledge base or other files.
        MigrationError: The copy's counts differ from the source's, or its searches
            agree less than ``min_overlap``; the target is kept for inspection and
            ``error.report`` says what was found.
    """
    from multimodal_rag._rag import MultimodalRAG

    batch_size = check_int("batch_size", batch_size)
    sample = check_int("sample", sample, minimum=0)
    k = check_int("k", k)
    if not 0.0 <= min_overlap <= 1.0:
        raise InvalidInputError(f"min_overlap must be between 0 and 1, got {min_overlap!r}")
    source, target = Path(source), Path(target)
    src = MultimodalRAG.open(source, embedder=embedder, read_only=True, allow_modules=allow_modules)
    try:
        dst = MultimodalRAG.create(
            target,
            embedder=src.embedder,
            vector_store=vector_store,
            description_store=description_store,
        )
        try:
            images = _copy_images(source / IMAGES, target / IMAGES)
            _copy_vectors(src, dst, batch_size)
            _copy_records(src, dst, batch_size)
            dst.save()
            report = MigrationReport(
                source=source,
                target=target,
                vectors=(len(src.vector_store), len(dst.vector_store)),
                descriptions=(len(src.description_store), len(dst.description_store)),
                images=images,
                sampled=min(sample, len(src.vector_store)),
                overlap=_search_overlap(src, dst, sample=sample, k=k),
            )
        finally:
            dst.close()
    finally:
        src.close()
    if not report.counts_match:
        raise MigrationError(
            f"the copy at {str(target)!r} holds {report.vectors[1]} vectors and "
            f"{report.descriptions[1]} records, the source {report.vectors[0]} and "
            f"{report.descriptions[0]}",
            report=report,
        )
    if report.overlap < min_overlap:
        raise MigrationError(
            f"searches of the copy at {str(target)!r} agree with the source on only "
            f"{report.overlap:.0%} of the top {k} (at least {min_overlap:.0%} expected)",
            report=report,
        )
    return report


def _copy_vectors(src: MultimodalRAG, dst: MultimodalRAG, batch_size: int) -> None:
    # The embedder's own vectors: a copy starts without the source's adapter (fit one again there).
    for batch in _batches(src.vector_store.ids(), batch_size):
        dst.vector_store.add(batch, src.raw_vectors(batch))


def _copy_records(src: MultimodalRAG, dst: MultimodalRAG, batch_size: int) -> None:
    # Records name the images the knowledge base keeps relative to it, so they name the
    # target's copies (made first) as they are; other images stay where they are.
    from multimodal_rag.protocols import copy_metadata

    for batch in _batches(iter(src.description_store), batch_size):
        dst.description_store.put(batch)
        copy_metadata(dst.vector_store, batch)  # the vectors were copied first


def _copy_images(old: Path, new: Path) -> int:
    if not old.is_dir():
        return 0
    new.mkdir(parents=True, exist_ok=True)
    count = 0
    for file in sorted(old.iterdir()):
        if file.is_file():
            shutil.copy2(file, new / file.name)
            count += 1
    return count


def _search_overlap(src: MultimodalRAG, dst: MultimodalRAG, *, sample: int, k: int) -> float:
    ids = sorted(src.vector_store.ids())
    if not ids or sample == 0:
        return 1.0
    # Evenly spaced over the sorted ids: the same sample every run, spread over the collection.
    step = max(1, len(ids) // sample)
    chosen = ids[::step][:sample]
    queries = src.raw_vectors(chosen)
    # Compared in the raw space, which is what the copy holds.
    expected = _raw_search(src, queries, k)
    found = [[n.id for n in row] for row in dst.vector_store.search(queries, k)]
    shares = [len(set(a) & set(b)) / len(a) if a else 1.0 for a, b in zip(expected, found, strict=True)]
    return sum(shares) / len(shares)


def _raw_search(src: MultimodalRAG, queries: Any, k: int) -> list[list[str]]:
    """The ids of each query's ``k`` nearest raw vectors in ``src``."""
    if src.adapter is None:
        return [[n.id for n in row] for row in src.vector_store.search(queries, k)]
    # The index holds adapted vectors; the raw ones are kept beside it in an exact store,
    # so the same exact search runs over them here, a chunk at a time.
    import numpy as np

    from multimodal_rag.vectors.ranking import exact_top_k

    ids = src.vector_store.ids()
    chunks = (
        (np.arange(start, min(start + _CHUNK, len(ids))), np.asarray(src.raw_vectors(ids[start : start + _CHUNK]), dtype=np.float32))
        for start in range(0, len(ids), _CHUNK)
    )
    _, rows = exact_top_k(np.asarray(queries, dtype=np.float32), k, chunks)
    return [[ids[row] for row in found] for found in rows.tolist()]


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
