"""The first run: a cold-cache ``multimodal-rag index --engine openvino`` against the cookbook.

Each configuration runs as a whole command in its own process, timed from its start to its
exit (imports, model load, conversion, ingest, save), with its peak RSS read from the kernel
(``wait4``'s ``ru_maxrss``). The engine cache is a fresh temporary folder per cold run:

- **cookbook**: the cookbook's code (``benchmarks/ingest.py``'s ``cookbook``, run whole);
- **openvino, first run**: ``index --engine openvino`` on an empty engine cache: it ingests
  on torch and leaves the OpenVINO engine to a background process (the default);
- **background preparation**: that process, timed from the command's exit to its own, with
  its peak RSS (``VmHWM``): what the machine spends once, after the command;
- **openvino, cache warm**: the same command again once the preparation has finished;
- **openvino, prepared in the command**: the first run as earlier releases made it
  (``MULTIMODAL_RAG_ENGINE_PREPARATION=now``: conversion, int8 calibration and ``auto``'s
  timings before the ingest), on its own empty cache.

Then the first run and the cookbook again on the large set. Ratios are images/s of the
whole command against the cookbook's whole command, measured side by side in this run; the
load average is recorded (the machine may be shared).

    python benchmarks/first_run.py            # 200 and 2,000 1080p photos, ViT-B/32 shape
    python benchmarks/first_run.py --quick    # 8 photos and 24, a tiny model

Prints a table and writes ``benchmarks/results/first_run.json``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
from common import ROOT, Figure, finish, make_parser

#: Targets of the first run against the cookbook: (photos, images/s ratio), and peak RSS.
TARGET_SMALL, TARGET_LARGE, TARGET_RSS_MB = 3.0, 5.0, 1536.0


def _env(cache: Path | None, preparation: str = "background") -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "MULTIMODAL_RAG_ENGINE_PREPARATION": preparation,
    }
    if cache is not None:
        env["MULTIMODAL_RAG_CACHE_DIR"] = str(cache)
    return env


def _whole(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``command`` to its end: wall seconds and peak RSS (MiB) of the process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    out = (process.stdout.read() if process.stdout else b"").decode()
    err = (process.stderr.read() if process.stderr else b"").decode()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out[-2000:]}{err[-3000:]}")
    # ru_maxrss is in kilobytes on Linux.
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "stdout": out}


def cookbook(folder: Path, checkpoint: Path) -> dict[str, Any]:
    spec = f'{{"approach": "cookbook", "folder": "{folder}", "checkpoint": "{checkpoint}"}}'
    command = [sys.executable, "-W", "ignore", str(ROOT / "benchmarks" / "ingest.py"), "--child", spec]
    return _whole(command, _env(None))


def index(folder: Path, checkpoint: Path, cache: Path, preparation: str = "background") -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as kb:
        command = [
            sys.executable, "-W", "ignore", "-m", "multimodal_rag", "index", str(folder),
            "--kb", kb, "--checkpoint", str(checkpoint), "--engine", "openvino", "--no-progress",
        ]  # fmt: skip
        result = _whole(command, _env(cache, preparation))
        info = subprocess.run(
            [sys.executable, "-m", "multimodal_rag", "info", "--kb", kb, "--json"],
            env=_env(cache), capture_output=True, text=True, check=False,
        )  # fmt: skip
    result["info"] = info.stdout
    return result


def preparation_after(cache: Path) -> dict[str, Any]:
    """Follow the background preparation the command left: its duration and peak RSS."""
    start = time.perf_counter()
    pids = [int(p.read_text()) for p in cache.glob("preparing/*/pid")]
    peak_kb = 0
    for pid in pids:
        while True:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                break  # it has exited
            if "State:\tZ" in status:
                break
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
            time.sleep(0.05)
    logs = [p.read_text(errors="replace") for p in cache.glob("preparing/*/log.txt")]
    return {
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": peak_kb / 1024,
        "processes": len(pids),
        "runtime": logs[-1].strip().splitlines()[-1] if logs and logs[-1].strip() else "",
    }


def main() -> None:
    parser = make_parser(__doc__, data=True)
    parser.add_argument("--large", type=int, default=2000, help="photos in the large run (default 2000)")
    args = parser.parse_args()
    small, large = (8, 24) if args.quick else (200, args.large)
    print("preparing inputs (cached in", common.CACHE, ")", flush=True)
    checkpoint = common.tiny_checkpoint() if args.quick else common.vit_b_32_checkpoint()
    folders = {n: common.photos("1080p", n, args.data) for n in (small, large)}
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    scratch = Path(tempfile.mkdtemp(prefix="first-run-"))
    try:

        def row(label: str, n: int, result: dict[str, Any], cookbook_row: dict[str, Any] | None) -> dict[str, Any]:
            result = {k: v for k, v in result.items() if k not in ("stdout", "info")}
            result.update(label=label, n=n, images_per_s=n / result["seconds"])
            if cookbook_row is not None:
                result["vs_cookbook"] = result["images_per_s"] / cookbook_row["images_per_s"]
            rows.append(result)
            print(f"  {label}: {result['seconds']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
            return result

        print(f"{small} photos", flush=True)
        book = row("cookbook", small, cookbook(folders[small], checkpoint), None)
        cold_cache = scratch / "cold"
        cold = row("openvino, first run (cold cache)", small, index(folders[small], checkpoint, cold_cache), book)
        prepared = preparation_after(cold_cache)
        prepared_row = {**prepared, "label": "background preparation (after the command)", "n": 0}
        rows.append(prepared_row)
        print(f"  background preparation: {prepared['seconds']:.1f} s, peak RSS {prepared['peak_rss_mb']:.0f} MB", flush=True)
        warm = row("openvino, cache warm", small, index(folders[small], checkpoint, cold_cache), book)
        now = row(
            "openvino, prepared in the command", small,
            index(folders[small], checkpoint, scratch / "now", preparation="now"), book,
        )  # fmt: skip
        print(f"{large} photos", flush=True)
        book_large = row("cookbook", large, cookbook(folders[large], checkpoint), None)
        large_cache = scratch / "cold-large"
        cold_large = row(
            "openvino, first run (cold cache)", large, index(folders[large], checkpoint, large_cache), book_large
        )
        preparation_after(large_cache)  # not left running into the next benchmark
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    load_after = os.getloadavg()

    print()
    print(f"{'configuration':<44} {'photos':>6} {'seconds':>8} {'img/s':>6} {'vs cookbook':>11} {'peak RSS MB':>11}")
    for r in rows:
        ratio = f"{r['vs_cookbook']:.2f}x" if "vs_cookbook" in r else "-"
        speed = f"{r['images_per_s']:.1f}" if r["n"] else "-"
        print(f"{r['label']:<44} {r['n'] or '-':>6} {r['seconds']:>8.1f} {speed:>6} {ratio:>11} {r['peak_rss_mb']:>11.0f}")
    print(f"\nload average (1, 5, 15 min): before {load_before}, after {load_after}")
    if prepared.get("runtime"):
        print(f"the background preparation chose: {prepared['runtime'][:300]}")
    verdicts = {
        f"first run, {small} photos >= {TARGET_SMALL}x": cold["vs_cookbook"] >= TARGET_SMALL,
        f"first run, {large} photos >= {TARGET_LARGE}x": cold_large["vs_cookbook"] >= TARGET_LARGE,
        f"first run peak RSS <= {TARGET_RSS_MB:.0f} MB": max(cold["peak_rss_mb"], cold_large["peak_rss_mb"]) <= TARGET_RSS_MB,
        f"background preparation peak RSS <= {TARGET_RSS_MB:.0f} MB": prepared["peak_rss_mb"] <= TARGET_RSS_MB,
    }
    for name, met in verdicts.items():
        print(f"target {name}: {'met' if met else 'MISSED'}")

    report = {
        "model": "tiny random CLIP" if args.quick else "random ViT-B/32",
        "rows": rows,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "targets": verdicts,
    }
    figures = {
        "first_run_vs_cookbook": Figure(cold["vs_cookbook"], "higher", 0.6),
        "first_run_large_vs_cookbook": Figure(cold_large["vs_cookbook"], "higher", 0.6),
        "warm_vs_cookbook": Figure(warm["vs_cookbook"], "higher", 0.6),
        "prepared_in_command_vs_cookbook": Figure(now["vs_cookbook"], "higher", 0.8),
        "first_run_peak_rss_mb": Figure(cold["peak_rss_mb"], "lower", 0.5),
        "preparation_seconds": Figure(prepared["seconds"], "lower", 2.0),
    }
    finish("first_run", args, report, figures)


if __name__ == "__main__":
    main()
