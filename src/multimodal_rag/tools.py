"""Tools around a knowledge base: copying it to other stores (`migrate`), ingesting a large
collection on a Ray cluster (`ingest_on_ray`), the reports of `MultimodalRAG.verify` and
`repair`, search results as one picture, fusing ranked lists of your own channels (`fuse`, as
hybrid search does), and a small random-weights CLIP checkpoint for trying things with no
download."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multimodal_rag import _lazy

# Public name -> module that defines it. Keep sorted; __all__ and the imports below match it.
_EXPORTS: dict[str, str] = {
    "MigrationReport": "multimodal_rag._migrate",
    "Problem": "multimodal_rag._verify",
    "ProblemKind": "multimodal_rag._verify",
    "RayIngestReport": "multimodal_rag._distributed.ingest",
    "RepairReport": "multimodal_rag._verify",
    "VerificationReport": "multimodal_rag._verify",
    "WorkerThroughput": "multimodal_rag._distributed.ingest",
    "fuse": "multimodal_rag._fusion",
    "ingest_on_ray": "multimodal_rag._distributed.ingest",
    "make_random_clip_checkpoint": "multimodal_rag._random_checkpoint",
    "migrate": "multimodal_rag._migrate",
    "render_contact_sheet": "multimodal_rag._contact_sheet",
}

__all__ = [
    "MigrationReport",
    "Problem",
    "ProblemKind",
    "RayIngestReport",
    "RepairReport",
    "VerificationReport",
    "WorkerThroughput",
    "fuse",
    "ingest_on_ray",
    "make_random_clip_checkpoint",
    "migrate",
    "render_contact_sheet",
]


def __getattr__(name: str) -> Any:
    return _lazy.attribute(__name__, name, _EXPORTS)


def __dir__() -> list[str]:
    return _lazy.names(__name__, _EXPORTS)


if TYPE_CHECKING:
    from multimodal_rag._contact_sheet import render_contact_sheet
    from multimodal_rag._distributed.ingest import RayIngestReport, WorkerThroughput, ingest_on_ray
    from multimodal_rag._fusion import fuse
    from multimodal_rag._migrate import MigrationReport, migrate
    from multimodal_rag._random_checkpoint import make_random_clip_checkpoint
    from multimodal_rag._verify import Problem, ProblemKind, RepairReport, VerificationReport
