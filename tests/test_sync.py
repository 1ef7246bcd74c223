"""Sync of a local folder: the three kinds of change, and a sync killed at random points.

The bucket side of sync is tested against an S3 server in ``test_object_storage.py``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ColorEmbedder
from multimodal_rag import MultimodalRAG

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "sync_worker.py"


def picture(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8))


def write(folder: Path, seeds: range) -> None:
    folder.mkdir(exist_ok=True)
    for seed in seeds:
        picture(seed).save(folder / f"{seed:05d}.png")


def change(folder: Path, *, changed: range, removed: range, added: range) -> None:
    for seed in changed:
        picture(seed + 100_000).save(folder / f"{seed:05d}.png")  # same name, new bytes
    for seed in removed:
        (folder / f"{seed:05d}.png").unlink()
    write(folder, added)


def by_path(rag: MultimodalRAG) -> dict[str, list[str | None]]:
    found: dict[str, list[str | None]] = {}
    for record in rag.get_many(rag.ids()).values():
        found.setdefault(Path(record.image_path).name, []).append(record.description)
    return found


def test_sync_of_a_folder_adds_replaces_and_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("multimodal_rag._facade.ingesting.CHUNK", 2)  # the 5 to embed in three runs
    folder = tmp_path / "photos"
    write(folder, range(10))
    with MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder()) as rag:
        rag.add_directory(folder)  # indexed before any sync: its records have no version yet
        for record in rag.get_many(rag.ids()).values():
            rag.describe(record.id, f"photo {Path(record.image_path).stem}")
        change(folder, changed=range(0, 3), removed=range(3, 5), added=range(10, 12))
        plan = rag.sync(folder, dry_run=True)
        assert (len(plan.new), len(plan.changed), len(plan.removed), plan.unchanged) == (2, 3, 2, 5)
        assert len(rag) == 10  # a dry run changes nothing
        done = rag.sync(folder)
        assert (done.new, done.changed, done.removed) == (plan.new, plan.changed, plan.removed)
        assert done.added is not None and len(done.added.added) == 5
        found = by_path(rag)
        assert sorted(found) == sorted(p.name for p in folder.iterdir())
        assert found["00000.png"] == ["photo 00000"]  # replaced, its description kept
        assert found["00010.png"] == [None]
        assert rag.verify().ok
        again = rag.sync(folder, dry_run=True)
        assert (again.new, again.changed, again.removed, again.unchanged) == ((), (), (), 10)


def test_a_descriptions_file_overrides_what_a_changed_image_keeps(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    write(folder, range(3))
    with MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder()) as rag:
        rag.sync(folder)
        for record in rag.get_many(rag.ids()).values():
            rag.describe(record.id, "old words")
        change(folder, changed=range(0, 2), removed=range(0), added=range(0))
        (tmp_path / "d.jsonl").write_text(
            '{"image_path": "00001.png", "description": "new words"}\n'
        )
        rag.sync(folder, descriptions=tmp_path / "d.jsonl")
        found = by_path(rag)
        assert found["00000.png"] == ["old words"] and found["00001.png"] == ["new words"]


@pytest.mark.slow
def test_a_sync_killed_at_random_points_finishes_when_run_again(tmp_path: Path) -> None:
    folder, kb = tmp_path / "photos", tmp_path / "kb"
    write(folder, range(400))
    with MultimodalRAG.create(kb, embedder=ColorEmbedder()) as rag:
        rag.sync(folder, progress=False)
        for record in rag.get_many(rag.ids()).values():
            rag.describe(record.id, f"photo {Path(record.image_path).stem}")
    change(folder, changed=range(0, 200), removed=range(200, 300), added=range(400, 600))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])}
    rng = random.Random(
        int(os.environ.get("SYNC_KILL_SEED", "7"))
    )  # SYNC_KILL_SEED=N tries other kill times
    kills = 0
    for _ in range(6):
        worker = subprocess.Popen(
            [sys.executable, str(WORKER), str(kb), str(folder)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.5))
        worker.send_signal(signal.SIGKILL)
        out = worker.communicate()[0]
        kills += "done" not in out
        with MultimodalRAG.open(kb, embedder=ColorEmbedder()) as rag:  # opens, replays the journal
            # Only the images deleted from the folder and not yet removed may be missing.
            problems = rag.verify().problems
            assert {p.kind for p in problems} <= {"missing-image"}, problems
    assert kills >= 3  # most kills landed mid-sync
    with MultimodalRAG.open(kb, embedder=ColorEmbedder()) as rag:
        rag.sync(folder, progress=False)
        found = by_path(rag)
        assert sorted(found) == sorted(p.name for p in folder.iterdir())
        assert all(len(descriptions) == 1 for descriptions in found.values())  # each image once
        for seed in range(0, 200):  # changed: the description carried over
            assert found[f"{seed:05d}.png"] == [f"photo {seed:05d}"]
        for seed in range(400, 600):
            assert found[f"{seed:05d}.png"] == [None]
        assert len(rag) == 500 and rag.verify().ok


def test_an_image_moved_within_the_source_keeps_its_record(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    write(folder, range(3))
    with MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder()) as rag:
        rag.sync(folder)
        moved_id = next(
            r.id for r in rag.get_many(rag.ids()).values() if r.image_path.endswith("00001.png")
        )
        rag.describe(moved_id, "kept across the move")
        (folder / "sub").mkdir()
        (folder / "00001.png").rename(folder / "sub" / "00001-renamed.png")
        done = rag.sync(folder)
        assert len(done.new) == 1 and len(done.removed) == 1
        record = rag.get(moved_id)  # the same bytes: the same record, pointed at its new place
        assert record.image_path == str((folder / "sub" / "00001-renamed.png").resolve())
        assert record.description == "kept across the move" and len(rag) == 3
        again = rag.sync(folder, dry_run=True)
        assert (again.new, again.changed, again.removed, again.unchanged) == ((), (), (), 3)
