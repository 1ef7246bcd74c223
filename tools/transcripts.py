"""Write, or check, the command-line transcripts of the documentation from real runs.

A transcript is a ```console block of README.md or a page of docs/: each line that starts with
``$ `` is a command (a line ending in ``\\`` continues on the next), and the lines after it are
what it printed, standard output and standard error together, as a terminal shows them. Every
transcript of a page runs here, in the page's order, in one fresh folder per page that holds a
copy of ``examples/``, with this Python's ``multimodal-rag`` first on ``PATH``, no
``OPENAI_*`` or ``MULTIMODAL_RAG_*`` variable set, 100 columns, no GPU, and a home (so caches)
of its own. A page's first transcript
therefore makes what the later ones use (``multimodal-rag random-checkpoint demo/clip-random.pt``).

    python tools/transcripts.py           # run every transcript and write the outputs in the pages
    python tools/transcripts.py --check   # exit 1, showing the differences, when a page is stale

A command that exits with a status other than 0 must show it (``...; echo "exit status $?"``):
the run stops otherwise, so an unexpected failure is never written into a page.

What truly varies from run to run is normalised, and nothing else:

- the run's folder is written as ``/abs/path`` (in the pages too);
- when comparing, durations (``0.00 s``, ``3.126 ms``, ``23.722 s per 1,000 queries``, the JSON
  keys ``latency_s``, ``seconds``, ``p50`` and ``p95``) and ISO timestamps
  (``2026-01-01T12:00:00Z``), the cost rows of ``eval --compare``, and a knowledge base's size
  on disk (``info``'s ``size on disk`` and ``size_bytes``: the manifest's length moves by a few
  bytes with the values it records) are masked on both sides, so a page keeps the figures of the run
  that wrote it;
- trailing spaces at the end of a line are dropped.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ABS_PATH = "/abs/path"

_TRANSCRIPT = re.compile(r"^```console[^\n]*\n(.*?)^```", re.M | re.S)
_MASKS = (
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"), "<timestamp>"),
    (re.compile(r'("(?:latency_s|seconds|p50|p95)": )-?[\d.]+(?:e-?\d+)?'), r"\1<time>"),
    (re.compile(r"\b\d[\d,]*(?:\.\d+)?(?:e-?\d+)? ?(?:ms|s)\b"), "<time>"),
    # A knowledge base's size moves by a few bytes with the manifest's recorded values.
    (re.compile(r'("size_bytes": )\d+'), r"\1<size>"),
    (re.compile(r"^(size on disk +)\S+ \S+$", re.M), r"\1<size>"),
    # `eval --compare`'s cost table: the unit is in the row's name, and the header's spacing
    # follows the widths of the figures.
    (re.compile(r"^((?:latency p\d\d \(ms\)|total time \(s\)) ).*$", re.M), r"\1<times>"),
    (re.compile(r"^cost +\S.*$", re.M), "cost <columns>"),
)


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def masked(text: str) -> str:
    """``text`` with what varies between runs (durations, timestamps) masked."""
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


def commands(transcript: str) -> Iterator[str]:
    """The commands of a transcript (``$ `` lines, with their ``\\`` continuations)."""
    lines = transcript.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("$ "):
            command = [line[2:]]
            while command[-1].endswith("\\") and i + 1 < len(lines):
                i += 1
                command.append(lines[i])
            yield "\n".join(command)


def run(command: str, folder: Path) -> str:
    """Run one command in ``folder`` as a user's shell would; what it printed, normalised."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MULTIMODAL_RAG_", "OPENAI_"))
    }
    environ.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), environ.get("PATH", "")]),
        PYTHONPATH=str(REPO / "src"),
        PYTHONUNBUFFERED="1",  # the order a terminal shows, stdout and stderr interleaved
        COLUMNS="100",
        NO_COLOR="1",
        # The same on every machine: on the CPU, with a fresh cache (no engine decision or
        # quality-gate result of an earlier run), in a home of its own.
        CUDA_VISIBLE_DEVICES="",
        HOME=str(folder / ".home"),
        XDG_CACHE_HOME=str(folder / ".home" / ".cache"),
    )
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=folder,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )
    output = result.stdout.replace(str(folder.resolve()), ABS_PATH).replace(str(folder), ABS_PATH)
    if result.returncode != 0:
        raise RuntimeError(
            f"`{command}` exited with status {result.returncode}; a transcript shows a failure "
            f"with `; echo \"exit status $?\"`:\n{output}"
        )
    return "\n".join(line.rstrip() for line in output.splitlines())


def fresh(page: Path) -> str:
    """The page with every transcript's output replaced by that of a fresh run."""
    text = page.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="transcripts-") as tmp:
        folder = Path(tmp)
        shutil.copytree(REPO / "examples", folder / "examples")
        (folder / ".home").mkdir()

        def rerun(match: re.Match[str]) -> str:
            parts = []
            for command in commands(match.group(1)):
                parts.append(f"$ {command}")
                output = run(command, folder)
                if output:
                    parts.append(output)
            return "```console\n" + "\n".join(parts) + "\n```"

        return _TRANSCRIPT.sub(rerun, text)


def stale(page: Path) -> str:
    """A diff of the page's transcripts against a fresh run (timings masked); empty when none."""
    old = page.read_text(encoding="utf-8")
    if not _TRANSCRIPT.search(old):
        return ""
    new = fresh(page)
    diff = difflib.unified_diff(
        masked(old).splitlines(),
        masked(new).splitlines(),
        f"{page.relative_to(REPO)} (committed)",
        f"{page.relative_to(REPO)} (a fresh run)",
        lineterm="",
    )
    return "\n".join(diff)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when stale")
    parser.add_argument("pages", nargs="*", type=Path, help="default: README.md and docs/")
    args = parser.parse_args()
    status = 0
    for page in [p.resolve() for p in args.pages] or pages():
        if args.check:
            diff = stale(page)
            if diff:
                print(diff)
                status = 1
        elif _TRANSCRIPT.search(page.read_text(encoding="utf-8")):
            outputs = iter(_TRANSCRIPT.findall(fresh(page)))
            # Read again just before writing: the runs take minutes, and the prose around the
            # transcripts may have been edited meanwhile.
            text = page.read_text(encoding="utf-8")
            text = _TRANSCRIPT.sub(lambda _, new=outputs: "```console\n" + next(new) + "```", text)
            page.write_text(text, encoding="utf-8")
            print(f"wrote {page.relative_to(REPO)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
