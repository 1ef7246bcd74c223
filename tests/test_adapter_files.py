"""A crafted ``adapter.npz`` (its checksum forged in the manifest) is refused before it is read:
no array a file merely declares is allocated, nor one that inflates past its declared size."""

from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import ColorEmbedder, current_snapshot, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag._verify import ProblemKind
from multimodal_rag.adapter import Adapter
from multimodal_rag.errors import CorruptFileError

DIM = ColorEmbedder().dim
CHUNK = 1 << 24


def write_member(archive: zipfile.ZipFile, name: str, shape: tuple[int, ...], *, dtype: str = "<f4", fill: bytes | None = None) -> None:
    """An npy member declaring ``shape``: its array's bytes (zeros unless ``fill``), streamed so
    that a large one never sits in this process's memory."""
    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(member, {"descr": dtype, "fortran_order": False, "shape": shape})
        if fill is not None:
            member.write(fill)
            return
        left = int(np.prod(shape)) * np.dtype(dtype).itemsize
        zeros = bytes(min(CHUNK, left))
        while left:
            member.write(zeros[: min(CHUNK, left)])
            left -= min(CHUNK, left)


def crafted_adapter(path: Path, *, dim: int, members: dict[str, Any], kind: int = 1) -> Path:
    """An adapter file whose ``__header__`` says ``kind`` and ``dim``; ``members`` maps each
    array's name to its declared shape, or to ``(shape, bytes it really holds)``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        header = io.BytesIO()
        np.save(header, np.array([kind, dim], dtype=np.int64))
        archive.writestr("__header__.npy", header.getvalue())
        for name, spec in members.items():
            shape, fill = spec if isinstance(spec[0], tuple) else (spec, None)
            write_member(archive, name, shape, fill=fill)
    return path


def forge_checksum(kb: Path, relative: str) -> None:
    """Make the manifest vouch for the file as it is now, as whoever crafted it would."""
    manifest_file = kb / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    data = (current_snapshot(kb) / relative).read_bytes()
    manifest["files"][relative] = hashlib.sha256(data).hexdigest()
    manifest["sizes"][relative] = len(data)
    manifest_file.write_text(json.dumps(manifest))


def adapted_kb(path: Path) -> Path:
    """A small knowledge base with a linear adapter applied (what a kept fit leaves)."""
    from multimodal_rag._kb.directory import ADAPTER_FILE
    from multimodal_rag._kb.manifest import AdapterEntry

    rng = np.random.default_rng(0)
    adapter = Adapter(
        kind="linear",
        dim=DIM,
        arrays={f"{side}.weight": np.eye(DIM) + 0.1 * rng.standard_normal((DIM, DIM)) for side in ("image", "text")},
    )
    with MultimodalRAG.create(path, embedder=ColorEmbedder(), description_store="jsonl") as rag:
        rag.add([solid("red"), solid("blue")], ids=["red", "blue"], descriptions=["red", "blue"], progress=False)
        entry = AdapterEntry(kind="linear", rank=DIM, sha256=adapter.sha256, file=ADAPTER_FILE)
        rag._adapting.switch(adapter, entry)
    return path


HUGE = (10**6, 10**6)

#: Adapter files that are not what the knowledge base's manifest allows, by what is wrong.
CRAFTED: dict[str, dict[str, Any]] = {
    # A terabyte declared, a few bytes held: numpy would allocate the whole array first.
    "declared-huge": {"dim": DIM, "members": {"image.weight": (HUGE, b"\0" * 64), "text.weight": (DIM, DIM)}},
    # 256 MiB of zeros deflated to a quarter of a megabyte, under a header of another dimension.
    "zip-bomb": {"dim": 8192, "members": {"image.weight": (8192, 8192), "text.weight": (1, 1)}},
    # The right shapes, but a member that inflates to far more than its shape holds.
    "oversized-member": {"dim": DIM, "members": {"image.weight": ((DIM, DIM), bytes(1 << 26)), "text.weight": (DIM, DIM)}},
    # A low-rank adapter of another rank than the manifest's.
    "other-rank": {"dim": DIM, "kind": 0, "members": {"image.down": (DIM, 4096), "image.up": (4096, DIM), "text.down": (DIM, 4096), "text.up": (4096, DIM)}},
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_adapter_file_is_refused_before_its_arrays_are_allocated(tmp_path: Path, case: str) -> None:
    path = crafted_adapter(tmp_path / "adapter.npz", **CRAFTED[case])
    tracemalloc.start()  # numpy reports its array allocations to tracemalloc
    try:
        with pytest.raises(CorruptFileError, match=r"adapter\.npz"):
            Adapter.load(path, dim=DIM, rank=32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB allocated while refusing it"


def test_an_adapter_file_of_the_expected_dimension_and_rank_still_loads(tmp_path: Path) -> None:
    for kind, rank in (("linear", DIM), ("low-rank", 32)):
        adapter = Adapter.identity(DIM, kind=kind, rank=rank)
        digest = adapter.save(tmp_path / f"{kind}.npz")
        assert Adapter.load(tmp_path / f"{kind}.npz", sha256=digest, dim=DIM, rank=rank).sha256 == digest
    with pytest.raises(CorruptFileError, match="dimension 48, the embedder's have 64"):
        Adapter.load(tmp_path / "linear.npz", dim=64)


def test_a_crafted_adapter_with_a_forged_checksum_is_refused_reported_and_repaired(tmp_path: Path) -> None:
    kb = adapted_kb(tmp_path / "kb")
    with MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True) as rag:
        before = [hit.id for hit in rag.search(image=solid("red"), k=2)]
    crafted_adapter(current_snapshot(kb) / "adapter" / "adapter.npz", **CRAFTED["declared-huge"])
    forge_checksum(kb, "adapter/adapter.npz")
    with pytest.raises(CorruptFileError, match=r"adapter\.npz.*image\.weight declares shape \(1000000, 1000000\)"):
        MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True)
    with MultimodalRAG.open(kb, embedder=ColorEmbedder(), salvage=True, read_only=True) as rag:
        assert rag.verify().of_kind(ProblemKind.ADAPTER_CHANGED)
    with MultimodalRAG.open(kb, embedder=ColorEmbedder(), salvage=True) as rag:
        report = rag.repair()
        assert report.ok and report.adapter_removed and rag.adapter is None
    with MultimodalRAG.open(kb, embedder=ColorEmbedder()) as rag:
        assert rag.verify().ok and [hit.id for hit in rag.search(image=solid("red"), k=2)] == before
