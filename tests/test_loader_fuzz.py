"""A bounded fuzz test of the loader: mutated knowledge bases open or raise the library's error.

A few hundred copies of small knowledge bases (each vector store, both file
description stores) get one file mutated — bytes flipped, cut, zeroed, inserted
or repeated — and, in half the cases, the manifest's checksum and size updated to
match, as someone crafting a file would (except for FAISS index files, which must
be trusted). Each is opened in a worker process: no crash signal, no hang, and
every failure is one of the library's errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import selectors
import shutil
import subprocess
import sys
import time
from pathlib import Path

from helpers import ColorEmbedder, current_snapshot, solid
from multimodal_rag import MultimodalRAG

CASES = 400
SEED = 20261130
TIMEOUT_S = 60.0
COMBOS = [("faiss-flat", "sqlite"), ("hnswlib", "jsonl"), ("faiss-hnsw", "sqlite"), ("faiss-ivf", "jsonl")]


def _template(root: Path, index: str, store: str) -> Path:
    kb = root / f"{index}+{store}"
    rag = MultimodalRAG.create(kb, embedder=ColorEmbedder(), vector_store=index, description_store=store)
    colours = [(23 * i % 256, 71 * i % 256, 139 * i % 256) for i in range(40)]
    rag.add([solid(c) for c in colours[:30]], ids=[f"i{i}" for i in range(30)],
            descriptions=[f"item {i}" for i in range(30)], metadata=[{"n": i} for i in range(30)], progress=False)
    rag.remove(["i3"])
    rag.save()
    rag.add([solid(c) for c in colours[30:]], ids=[f"i{i}" for i in range(30, 40)], progress=False)
    rag.describe("i4", "edited")
    rag.close()
    return kb


def _mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    how = rng.choice(["flip", "cut", "zero", "insert", "repeat", "header"])
    if not out:
        return bytes(rng.randbytes(rng.randint(1, 64)))
    if how == "flip":
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif how == "cut":
        del out[rng.randrange(len(out)) :]
    elif how == "zero":
        start = rng.randrange(len(out))
        out[start : start + rng.randint(1, 64)] = bytes(min(len(out) - start, 64))
    elif how == "insert":
        at = rng.randrange(len(out))
        out[at:at] = rng.randbytes(rng.randint(1, 64))
    elif how == "repeat":
        start = rng.randrange(len(out))
        out += out[start : start + rng.randint(1, 256)]
    else:  # the first bytes, where lengths and counts live
        for _ in range(rng.randint(1, 4)):
            offset = rng.randrange(min(len(out), 128))
            out[offset] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
    return bytes(out)


def _cases(root: Path) -> list[Path]:
    rng = random.Random(SEED)
    templates = [_template(root / "templates", index, store) for index, store in COMBOS]
    cases = []
    for number in range(CASES):
        template = templates[number % len(templates)]
        kb = root / "cases" / f"{number:04d}"
        shutil.copytree(template, kb)
        files = [p for p in kb.rglob("*") if p.is_file() and p.name != ".lock" and "images" not in p.parts]
        target = rng.choice(files)
        target.write_bytes(_mutate(target.read_bytes(), rng))
        snapshot = current_snapshot(template)
        # FAISS's reader allocates what an index file declares, before reading it: FAISS
        # index files are among those that must be trusted (docs/reliability.md), so
        # their checksum is never forged here; everything else's is, half the time.
        crafted = rng.random() < 0.5 and snapshot.name in target.parts and target.name != "index.faiss"
        if crafted:  # a matching checksum: only the loader stands between the file and the process
            manifest = json.loads((kb / "manifest.json").read_text())
            relative = str(target.relative_to(kb / "snapshots" / snapshot.name))
            manifest["files"][relative] = hashlib.sha256(target.read_bytes()).hexdigest()
            manifest.setdefault("sizes", {})[relative] = target.stat().st_size
            (kb / "manifest.json").write_text(json.dumps(manifest))
        cases.append(kb)
    return cases


def _run(cases: list[Path]) -> dict[int, str]:
    """Outcome per case: OK, LIBRARY ..., OTHER ..., CRASH (signal) or HANG."""
    # One thread: the cases are tiny, and a busy machine then cannot starve an OpenMP team.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), str(Path(__file__).parent)])}
    outcomes: dict[int, str] = {}
    remaining = list(range(len(cases)))
    while remaining:
        worker = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("fuzz_worker.py"))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.write("".join(f"{n} {cases[n]}\n" for n in remaining))
        worker.stdin.close()
        selector = selectors.DefaultSelector()
        selector.register(worker.stdout, selectors.EVENT_READ)
        current: int | None = None
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                worker.kill()
                outcomes[current if current is not None else remaining[0]] = "HANG"
                break
            line = worker.stdout.readline()
            if not line:
                code = worker.wait()
                if current is not None:
                    outcomes[current] = f"CRASH (exit {code})"
                break
            word, number, *rest = line.split(" ", 2)
            if word == "BEGIN":
                current, deadline = int(number), time.monotonic() + TIMEOUT_S
            else:
                outcomes[int(number)] = " ".join([word, *rest]).strip()
                current = None
        worker.stdout.close()
        worker.wait()
        remaining = [n for n in remaining if n not in outcomes]
    return outcomes


def test_mutated_knowledge_bases_open_or_raise_the_librarys_error(tmp_path: Path) -> None:
    cases = _cases(tmp_path)
    outcomes = _run(cases)
    bad = {n: outcome for n, outcome in outcomes.items() if not outcome.startswith(("OK", "LIBRARY"))}
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome.split(" ")[0]] = counts.get(outcome.split(" ")[0], 0) + 1
    assert len(outcomes) == CASES
    assert not bad, f"{len(bad)} of {CASES} mutated knowledge bases escaped: " + "; ".join(
        f"{cases[n].name}: {outcome}" for n, outcome in sorted(bad.items())[:10]
    )
    assert counts.get("LIBRARY", 0) > CASES // 4  # the mutations do reach the checks
