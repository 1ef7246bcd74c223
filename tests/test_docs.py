"""The documentation's examples run as written, and its links lead somewhere."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

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


# -- the README and the getting-started page -----------------------------------

README = REPO / "README.md"
TEST_COMMAND = (
    "python -m venv .venv && . .venv/bin/activate && "
    "pip install torch==2.14.1 torchvision==0.29.1 -e '.[dev]' && pytest"
)


def cli_commands(page: Path) -> list[list[str]]:
    """The ``multimodal-rag`` commands of a page's bash blocks, in order, as argument lists."""
    import shlex

    commands = []
    for block in fenced_blocks(page, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split(" && "):
                if part.strip().startswith("multimodal-rag "):
                    commands.append(shlex.split(part)[1:])
    return commands


def run_cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    code = f"import sys; from multimodal_rag.cli import main; main({argv!r})"
    return run_python(code, cwd)


def test_readme_has_exactly_the_two_fresh_machine_commands() -> None:
    main_job, tests = fenced_blocks(README, "bash")
    assert tests.strip() == TEST_COMMAND
    steps = main_job.strip().split(" && ")
    assert steps[:3] == [
        "python -m venv .venv",
        ". .venv/bin/activate",
        "pip install torch==2.14.1 torchvision==0.29.1 -e .",
    ]
    assert [step.split()[1] for step in steps[3:]] == ["random-checkpoint", "index", "ask"]
    # CI installs the same pinned versions the README tells people to.
    assert "torch==2.14.1 torchvision==0.29.1 -e '.[dev]'" in (REPO / ".ci" / "run").read_text()


def test_readme_runs_in_the_order_shown(workdir: Path) -> None:
    """The main job first, then the Python snippet below it, in the same folder: nothing the
    snippet needs is made by anything but what the README showed before it."""
    outputs = []
    for argv in cli_commands(README):
        result = run_cli(argv, workdir)
        assert result.returncode == 0, f"{argv}: {result.stderr}"
        outputs.append(result.stdout)
    assert "random weights" in outputs[0]
    assert "Created knowledge base demo/kb: 8 images in total." in outputs[1]
    assert outputs[2].startswith("Best match: ") and "\nSources:\n 1. " in outputs[2]

    text = README.read_text(encoding="utf-8")
    (example,) = script_blocks(README)
    assert text.index(example) > text.index(fenced_blocks(README, "bash")[0])
    assert len(example.strip().splitlines()) <= 12
    result = run_python(example, workdir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) >= 4 and all(re.fullmatch(r"-?\d\.\d{3}  .+", line) for line in lines[:3])
    assert lines[3].startswith("Best match: ")


def test_getting_started_runs_as_written(workdir: Path) -> None:
    page = DOCS / "getting-started.md"
    for argv in cli_commands(page):
        result = run_cli(argv, workdir)
        assert result.returncode == 0, f"{argv}: {result.stderr}"
    with Image.open(workdir / "results.png") as sheet:
        assert sheet.size == (5 * 256 + 6 * 16, 256 + 84 + 2 * 16)
    for script in script_blocks(page):
        result = run_python(script, workdir)
        assert result.returncode == 0, result.stderr
    assert (workdir / "demo" / "kb-python" / "manifest.json").is_file()


def test_the_site_lists_every_page_once() -> None:
    """mkdocs.yml's navigation holds every page of docs/ exactly once (mkdocs build --strict,
    run by .ci/run, checks the pages themselves and the API reference)."""
    nav = re.findall(r"^\s*-\s+(?:[^:\n]+:\s+)?(\S+\.md)\s*$", (REPO / "mkdocs.yml").read_text(), re.M)
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages and len(set(nav)) == len(nav)
