"""The documentation's examples run as written, and its links lead somewhere."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from doc_examples import REPO, fenced_blocks, script_blocks, write_modules

DOCS = REPO / "docs"


def run_python(code: str, cwd: Path, *extra_path: Path) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("MULTIMODAL_RAG_", "OPENAI_"))
    }
    environ["PYTHONPATH"] = os.pathsep.join(str(p) for p in (REPO / "src", *extra_path))
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty folder holding a copy of the shipped examples, as in a fresh checkout."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    return tmp_path


def test_custom_backend_example_runs_from_python_and_the_command_line(workdir: Path) -> None:
    doc = DOCS / "custom-backend.md"
    assert [p.name for p in write_modules(doc, workdir)] == ["my_backends.py"]
    scripts = script_blocks(doc)
    assert len(scripts) == 1
    result = run_python(scripts[0], workdir, workdir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "indexed 8 images"
    assert lines[1] == "1.000  A frog." and len(lines) == 4

    # The same knowledge base through the command line, as the page shows.
    commands = [line for line in fenced_blocks(doc, "bash")[0].splitlines() if " search " in line]
    argv = commands[0].split("multimodal-rag ", 1)[1].split()
    cli = run_python(
        "import sys; from multimodal_rag.cli import main; sys.argv[0] = 'multimodal-rag'; "
        f"main({argv!r})",
        workdir,
        workdir,
    )
    assert cli.returncode == 0, cli.stderr
    first = cli.stdout.splitlines()[0]
    assert first.startswith(" 1. ") and first.endswith(f"  {lines[3]}")  # the same best match


def test_opening_custom_backends_needs_the_module_allowed(workdir: Path) -> None:
    doc = DOCS / "custom-backend.md"
    write_modules(doc, workdir)
    assert run_python(script_blocks(doc)[0], workdir, workdir).returncode == 0
    refused = run_python(
        "from multimodal_rag import MultimodalRAG; MultimodalRAG.open('custom-kb')",
        workdir,
        workdir,
    )
    assert refused.returncode == 1
    assert (
        "'my_backends:ColorHistogramEmbedder' comes from module 'my_backends', which is not allowed"
        in refused.stderr
    )


_LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")


@pytest.mark.parametrize(
    "page", sorted([REPO / "README.md", *DOCS.glob("*.md")]), ids=lambda p: p.name
)
def test_links_between_pages_resolve(page: Path) -> None:
    for target in _LINK.findall(page.read_text(encoding="utf-8")):
        if "://" not in target:
            assert (page.parent / target).is_file(), f"{page.name} links to missing {target}"
