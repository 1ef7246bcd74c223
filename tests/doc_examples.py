"""The code blocks of the project's Markdown files, so tests can run them as written."""

from __future__ import annotations

import ast
import asyncio
import atexit
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
_MODULE_HEADER = re.compile(r"^# (\w+)\.py\n")


def fenced_blocks(path: Path, language: str) -> list[str]:
    """The contents of every fenced block of ``language`` in a Markdown file, in order."""
    return [
        body for lang, body in _FENCE.findall(path.read_text(encoding="utf-8")) if lang == language
    ]


def module_blocks(path: Path) -> dict[str, str]:
    """Python blocks that start with a ``# name.py`` line: modules, keyed by name."""
    modules = {}
    for block in fenced_blocks(path, "python"):
        header = _MODULE_HEADER.match(block)
        if header:
            modules[header.group(1)] = block
    return modules


def script_blocks(path: Path) -> list[str]:
    """Python blocks that are not modules: the example to run, in order."""
    return [block for block in fenced_blocks(path, "python") if not _MODULE_HEADER.match(block)]


def write_modules(path: Path, directory: Path) -> list[Path]:
    """Write the module blocks of ``path`` into ``directory`` as ``name.py`` files."""
    written = []
    for name, code in module_blocks(path).items():
        target = directory / f"{name}.py"
        target.write_text(code, encoding="utf-8")
        written.append(target)
    return written


def import_doc_module(path: Path, name: str) -> ModuleType:
    """Import module block ``name`` of a Markdown file (once per test session)."""
    if name in sys.modules:
        return sys.modules[name]
    directory = Path(tempfile.mkdtemp(prefix="doc-modules-"))
    # The module stays importable for the whole session; its folder goes when the session ends.
    atexit.register(shutil.rmtree, directory, True)
    source = directory / f"{name}.py"
    source.write_text(module_blocks(path)[name], encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the store's kind names this module; load() must find it
    spec.loader.exec_module(module)
    return module


# -- every block of every page --------------------------------------------------

#: ``<!-- not-run: REASON -->`` on the line right before a fence: the block is not executed,
#: and the reason says why (it needs a cluster, a download, a server that runs until stopped...).
_NOT_RUN = re.compile(r"<!--\s*not-run:\s*(?P<reason>.*?)\s*-->\s*$")
#: ``<!-- needs: NAME [NAME...] -->`` on the line right before a fence: the block runs only where
#: these environment variables are set (CI sets ``MILVUS_URI`` and ``DATABASE_URL``), and is
#: skipped, saying so, elsewhere.
_NEEDS = re.compile(r"<!--\s*needs:\s*(?P<names>[A-Z][A-Z0-9_]*(?:\s+[A-Z][A-Z0-9_]*)*)\s*-->\s*$")
#: Blocks that are code or output checked by the tests: Python and shell (run page by page by
#: tests/test_doc_blocks.py; the README's, the getting-started page's and the custom-backend
#: page's by their own tests in tests/test_docs.py); ``console`` blocks are command-line
#: transcripts (tools/transcripts.py writes and checks them). ``text`` blocks that start with
#: ``multimodal-rag`` are a command's synopsis, checked against its ``--help``.
RUN_LANGUAGES = ("python", "bash", "console")
CODE_LANGUAGES = ("python", "bash")
#: Pages whose code runs in a test of its own, which also checks what it prints.
RUN_BY_OWN_TEST = {
    "README.md": "test_readme_runs_in_the_order_shown",
    "docs/getting-started.md": "test_getting_started_runs_as_written",
    "docs/fa/getting-started.md": "test_persian_getting_started_runs_as_written",
    "docs/custom-backend.md": "test_custom_backend_example_runs_from_python_and_the_command_line",
}
#: A call of the command line in a shell block: at a line's start, after ``&&``, ``;``, ``|``,
#: ``$(``, or after ``NAME=value`` assignments.
_CLI_CALL = re.compile(r"(?:^|[;&|(]|\s)multimodal-rag(?=\s|$)", re.M)


class Block:
    """One fenced block of a Markdown page, with the marker written right before it."""

    def __init__(
        self,
        page: Path,
        line: int,
        language: str,
        body: str,
        not_run: str | None,
        needs: tuple[str, ...] = (),
    ):
        self.page, self.line, self.language, self.body, self.not_run = (
            page, line, language, body, not_run
        )
        self.needs = needs

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def is_synopsis(self) -> bool:
        return self.language == "text" and self.body.startswith("multimodal-rag ")

    @property
    def runs(self) -> bool:
        """Whether it is code, a transcript or a synopsis rather than a marked illustration."""
        return self.not_run is None and (self.language in RUN_LANGUAGES or self.is_synopsis)

    @property
    def cli_calls(self) -> int:
        """How many ``multimodal-rag`` calls a shell block holds (comments left out)."""
        code = "\n".join(line.split(" #", 1)[0] for line in self.body.splitlines())
        return len(_CLI_CALL.findall(code))

    @property
    def executed(self) -> bool:
        """Whether a test executes it: every unmarked Python block, and every unmarked shell
        block that calls ``multimodal-rag`` (a block of only ``pip install`` or ``export`` lines
        has nothing a test can check, so it says why it is not run)."""
        if self.not_run is not None:
            return False
        if self.language == "python":
            return True
        return self.language == "bash" and self.cli_calls > 0

    def __repr__(self) -> str:
        return f"Block({self.where}, {self.language!r})"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a page, in order."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _NOT_RUN.search(before)
        needs = _NEEDS.search(before)
        found.append(
            Block(
                path,
                text.count("\n", 0, match.start()) + 1,
                match.group(1),
                match.group(2),
                marker.group("reason") if marker else None,
                tuple(needs.group("names").split()) if needs else (),
            )
        )
    return found


def pages() -> list[Path]:
    """The README and every page of docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def run_by_page_runner(page: Path) -> bool:
    """Whether tests/test_doc_blocks.py runs the page's code (the pages with a test of their
    own are left to it)."""
    return str(page.relative_to(REPO)) not in RUN_BY_OWN_TEST


# -- running a page's blocks, in a process of their own ---------------------------

#: The shell's ``multimodal-rag``: the command line of the Python running the page, each call
#: logged with its exit status and the one expected (0, or what a ``# ... exit status N``
#: comment on its line states), so a failure inside ``$(...)`` or a pipe is not lost. A call
#: that exits as stated counts as a success for ``set -e``.
_SHELL_PRELUDE = """\
multimodal-rag() {
    local status=0 expected=0 code args
    "$DOC_PYTHON" -m multimodal_rag "$@" || status=$?
    while IFS=$'\\t' read -r code args; do
        if [ "$args" = "$*" ]; then expected=$code; fi
    done <<< "$DOC_EXPECT"
    printf '%s\\t%s\\t%s\\n' "$status" "$expected" "$*" >> "$DOC_CALLS"
    if [ "$status" = "$expected" ]; then return 0; fi
    return $(( status ? status : 1 ))
}
set -e
"""
_STATED_STATUS = re.compile(r"multimodal-rag\s+(?P<args>[^#]*?)\s+#.*\bexit status (?P<code>\d+)")


def stated_statuses(body: str) -> str:
    """``status<TAB>arguments`` lines for the calls whose comment states an exit status."""
    import shlex

    lines = body.replace("\\\n", " ").splitlines()
    return "".join(
        f"{m.group('code')}\t{' '.join(shlex.split(m.group('args')))}\n"
        for m in map(_STATED_STATUS.search, lines)
        if m
    )


def run_page(steps_file: Path) -> int:
    """Run the blocks listed in ``steps_file`` (JSON: where, language, body), in order, in the
    current folder: Python blocks in one namespace, as a reader pasting them one after the
    other into one interpreter would (``await`` at the top level runs in an event loop); shell
    blocks in ``bash -e``, where ``multimodal-rag`` is this Python's ``-m multimodal_rag``, each
    call of which must exit 0. Prints each block's place before running it; returns 1 at the
    first failure."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    sys.path[0] = ""  # as ``python -c``: modules written into the folder import
    for step in json.loads(steps_file.read_text(encoding="utf-8")):
        where, language, body = step["where"], step["language"], step["body"]
        print(f"--- {where} ({language})", flush=True)
        if language == "python":
            try:
                code = compile(
                    body, where.rsplit(":", 1)[0], "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
                )
                if code.co_flags & inspect.CO_COROUTINE:
                    asyncio.run(eval(code, namespace))
                else:
                    exec(code, namespace)
            except BaseException:  # noqa: BLE001 - SystemExit too: report the block and stop
                traceback.print_exc()
                print(f"--- {where} failed", file=sys.stderr, flush=True)
                return 1
            continue
        calls = Path(f"{steps_file}.calls")
        calls.write_text("")
        environ = {
            **os.environ,
            "DOC_PYTHON": sys.executable,
            "DOC_CALLS": str(calls),
            "DOC_EXPECT": stated_statuses(body),
        }
        shell = subprocess.run(["bash", "-c", _SHELL_PRELUDE + body], env=environ, check=False)
        logged = [line.split("\t", 2) for line in calls.read_text().splitlines()]
        if shell.returncode != 0 or not logged or any(s != e for s, e, _ in logged):
            print(
                f"--- {where} failed: bash exited {shell.returncode}; "
                f"calls (status, expected, arguments): {logged}",
                file=sys.stderr,
                flush=True,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_page(Path(sys.argv[1])))
