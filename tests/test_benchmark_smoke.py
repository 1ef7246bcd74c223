"""The index comparison benchmark still runs end to end (at a tiny size)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_compare_indexes_runs_at_a_tiny_size(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [
        sys.executable, str(REPO / "benchmarks" / "compare_indexes.py"),
        "--sizes", "1500", "--dim", "32", "--queries", "10", "--batch-queries", "40",
        "--ef", "16,64", "--nprobe", "4,8", "--k-factor", "8",
        "--out", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png"),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    (result,) = report["results"]
    families = {row["family"].split()[0] for row in result["rows"]}
    assert families == {"flat", "faiss-hnsw", "hnswlib", "faiss-ivf"}
    for row in result["rows"]:
        assert 0.0 <= row["recall_at_10"] <= 1.0 and row["p50_ms"] > 0 and row["bytes_per_vector"] > 32 * 4
    assert next(r for r in result["rows"] if r["family"] == "flat")["recall_at_10"] == 1.0
    assert (tmp_path / "r.png").stat().st_size > 1000
    assert "R@10" in done.stdout
