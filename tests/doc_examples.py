"""The code blocks of the project's Markdown files, so tests can run them as written."""

from __future__ import annotations

import importlib.util
import re
import sys
import tempfile
from pathlib import Path
from types import ModuleType

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
#: and the reason says why (it needs an OpenAI key, a server, a download, ...).
_NOT_RUN = re.compile(r"<!--\s*not-run:\s*(?P<reason>.*?)\s*-->\s*$")
#: Blocks that are code or output checked by the tests: Python and shell (the README's, the
#: getting-started page's and the custom-backend page's run in tests/test_docs.py);
#: ``console`` blocks are command-line transcripts (tools/transcripts.py writes and checks them).
#: ``text`` blocks that start with ``multimodal-rag`` are a command's synopsis, checked against
#: its ``--help``.
RUN_LANGUAGES = ("python", "bash", "console")


class Block:
    """One fenced block of a Markdown page, with the marker written right before it."""

    def __init__(self, page: Path, line: int, language: str, body: str, not_run: str | None):
        self.page, self.line, self.language, self.body, self.not_run = (
            page, line, language, body, not_run
        )

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

    def __repr__(self) -> str:
        return f"Block({self.where}, {self.language!r})"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a page, in order."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _NOT_RUN.search(before)
        found.append(
            Block(
                path,
                text.count("\n", 0, match.start()) + 1,
                match.group(1),
                match.group(2),
                marker.group("reason") if marker else None,
            )
        )
    return found


def pages() -> list[Path]:
    """The README and every page of docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
