"""The documentation's examples run as written, and its links lead somewhere."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from doc_examples import CODE_LANGUAGES, REPO, blocks, fenced_blocks, script_blocks, write_modules
from doc_examples import pages as doc_pages

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
    assert [p.name for p in write_modules(doc, workdir)] == ["my_backends.py", "test_my_backends.py"]
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
    note, first = cli.stdout.splitlines()[:2]
    # A text search of a store with a full-text index is hybrid: the score is not a cosine.
    assert note.startswith("(score: ") and "not a cosine similarity" in note
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
    "page", sorted([REPO / "README.md", *DOCS.rglob("*.md")]), ids=lambda p: str(p.relative_to(REPO))
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
    # CI installs the same pinned versions the README tells people to, and the same dev extra
    # (with the extras whose servers it starts, such as ray, beside it).
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"torch==2\.14\.1 torchvision==0\.29\.1 -e '\.\[dev(,[a-z-]+)*\]'", ci), ci


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


@pytest.mark.slow
def test_persian_getting_started_runs_as_written(workdir: Path) -> None:
    """docs/fa/getting-started.md: its commands in order, then its Python, in one folder; the
    Persian descriptions are found by their words and by their Persian metadata."""
    import shlex

    page = DOCS / "fa" / "getting-started.md"
    outputs = []
    for block in blocks(page):
        if block.language != "bash" or not block.executed:
            continue
        for line in block.body.replace("\\\n", " ").splitlines():
            argv = shlex.split(line)
            assert argv[0] == "multimodal-rag", line
            result = run_cli(argv[1:], workdir)
            assert result.returncode == 0, f"{argv}: {result.stderr}"
            outputs.append(result.stdout)
    assert "Created knowledge base demo/kb-fa: 8 images in total." in outputs[1]
    assert "Best match: یک " in outputs[2]
    heron = "یک حواصیل آبی بزرگ."
    lexical = [line for line in outputs[3].splitlines() if line.startswith(" 1. ")]
    assert lexical and lexical[0].endswith(heron), outputs[3]
    animals = {"یک قورباغهٔ سبز.", heron, "یک پنگوئن.", "یک ببر."}
    found = [line.split("  ", 1)[1] for line in outputs[4].splitlines() if re.match(r" \d\. ", line)]
    assert len(found) == 3 and set(found) <= animals, outputs[4]
    created, reopened = (run_python(script, workdir) for script in script_blocks(page))
    assert created.returncode == 0 and reopened.returncode == 0, created.stderr + reopened.stderr
    assert created.stdout.strip() == "8 added, 0 already there"
    printed = reopened.stdout.splitlines()
    # Three matches of the photo, then the lexical search's one hit, then the answer.
    assert printed[3] == heron and printed[4].startswith("Best match: "), reopened.stdout


def test_the_site_lists_every_page_once() -> None:
    """mkdocs.yml's navigation holds every page of docs/ exactly once (mkdocs build --strict,
    run by .ci/run, checks the pages themselves and the API reference)."""
    nav = re.findall(r"^\s*-\s+(?:[^:\n]+:\s+)?(\S+\.md)\s*$", (REPO / "mkdocs.yml").read_text(), re.M)
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages and len(set(nav)) == len(nav)


# -- the API reference ---------------------------------------------------------

SRC = REPO / "src" / "multimodal_rag"
# A Sphinx role (:meth:`x`, :class:`x`, ...) or a reStructuredText literal-block marker (a line
# ending in "::"): the site renders Markdown, where both show up as literal text.
SPHINX_ROLE = re.compile(r":(?:py:)?(?:meth|class|func|attr|mod|exc|data|obj|ref|const|term):`")
LITERAL_MARKER = re.compile(r"\S::\s*$", re.M)


def docstrings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of the module's, every class's and every function's docstring."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                found.append((node.body[0].lineno, doc))
    return found


def test_no_sphinx_markup_in_docstrings_or_pages() -> None:
    """Cross-references are Markdown ([`create`][multimodal_rag._rag.MultimodalRAG.create]) or
    plain code; code blocks are fenced."""
    leftovers = [
        f"{path.relative_to(REPO)}:{line}: {match.group(0).strip()}"
        for path in sorted(SRC.rglob("*.py"))
        for line, doc in docstrings(path)
        for match in [*SPHINX_ROLE.finditer(doc), *LITERAL_MARKER.finditer(doc)]
    ]
    leftovers += [
        f"{page.relative_to(REPO)}: {match.group(0)}"
        for page in sorted([README, *DOCS.rglob("*.md")])
        for match in SPHINX_ROLE.finditer(page.read_text(encoding="utf-8"))
    ]
    assert not leftovers, "\n".join(leftovers)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation site, built as CI builds it (--strict: an unresolved reference fails)."""
    out = tmp_path_factory.mktemp("site")
    environ = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=REPO, env=environ, capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr
    return out


def public_methods(cls: type) -> list[str]:
    """The public methods and properties of ``cls``, its own and those it inherits from this
    package's classes (not object's, Protocol's or Enum's)."""
    names = []
    for name in dir(cls):
        if name.startswith("_"):
            continue
        owner = next((c for c in cls.__mro__ if name in vars(c)), None)
        if owner is None or not owner.__module__.startswith("multimodal_rag"):
            continue
        member = vars(owner)[name]
        if isinstance(member, (staticmethod, classmethod, property)) or inspect.isfunction(member):
            names.append(name)
    return names


def documented_classes(page: Path) -> list[tuple[str, type]]:
    """The classes a reference page renders, each with the path its anchors are under: each
    ``::: path`` that is a class (a public re-export is rendered under the path named), and
    the public classes defined in each ``::: module``."""
    import importlib

    classes: list[tuple[str, type]] = []
    for path in re.findall(r"^::: (\S+)$", page.read_text(encoding="utf-8"), re.M):
        module_name, _, name = path.rpartition(".")
        try:
            obj = importlib.import_module(path)
        except ImportError:
            obj = getattr(importlib.import_module(module_name), name)
        if inspect.ismodule(obj):
            classes += [
                (f"{obj.__name__}.{key}", value)
                for key, value in vars(obj).items()
                if inspect.isclass(value) and value.__module__ == obj.__name__
                and not key.startswith("_")
            ]
        elif inspect.isclass(obj):
            classes.append((path, obj))
    return classes


@pytest.mark.parametrize(
    "page",
    sorted(p for p in (DOCS / "reference").glob("*.md") if p.stem != "index"),
    ids=lambda p: p.stem,
)
def test_every_public_method_of_a_documented_class_is_on_its_page(site: Path, page: Path) -> None:
    """Inherited ones included: the built-in vector stores' methods come from their base class."""
    html = (site / "reference" / page.stem / "index.html").read_text(encoding="utf-8")
    missing = [
        f"{path}.{name}"
        for path, cls in documented_classes(page)
        for name in public_methods(cls)
        if f'id="{path}.{name}"' not in html
    ]
    assert not missing, f"{page.name} lacks: {missing}"
    assert not SPHINX_ROLE.search(html), f"{page.name} shows a Sphinx role as text"


# -- every block of every page runs, or says why it does not -------------------


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_block_runs_or_says_why(page: Path) -> None:
    """A block is Python or shell code, a transcript (checked by
    test_transcripts_match_a_fresh_run), a synopsis (checked against --help), or it carries
    ``<!-- not-run: REASON -->`` on the line before its fence: no output, file format or
    sample is shown without saying whether it came from a run."""
    unexplained = [b.where for b in blocks(page) if not b.runs and not b.not_run]
    assert not unexplained, f"blocks neither run nor marked not-run: {unexplained}"
    # Python and shell code is executed: page by page by tests/test_doc_blocks.py, or by the
    # page's own test. A shell block with no multimodal-rag command has nothing to execute.
    unexecuted = [
        b.where for b in blocks(page)
        if b.language in CODE_LANGUAGES and b.not_run is None and not b.executed
    ]
    assert not unexecuted, f"code blocks no test executes and not marked not-run: {unexecuted}"
    empty = [b.where for b in blocks(page) if b.not_run is not None and not b.not_run.strip()]
    assert not empty, f"not-run markers without a reason: {empty}"


def test_synopses_name_only_real_options() -> None:
    """Each ``multimodal-rag COMMAND [OPTIONS]`` synopsis names only options its --help lists."""
    from click.testing import CliRunner

    from multimodal_rag.cli import cli

    wrong = []
    for page in doc_pages():
        for block in blocks(page):
            if not block.is_synopsis or block.not_run:
                continue
            for line in block.body.split("\nmultimodal-rag "):
                words = line.removeprefix("multimodal-rag ").split()
                command = [] if words[0].startswith("[") else [words[0]]
                shown = CliRunner().invoke(cli, [*command, "--help"], terminal_width=200)
                assert shown.exit_code == 0, shown.output
                for option in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", line):
                    if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", shown.output):
                        wrong.append(f"{block.where}: {' '.join(command)} {option}")
    assert not wrong, f"options no --help lists: {wrong}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "page",
    [p for p in doc_pages() if any(b.language == "console" and b.runs for b in blocks(p))],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_transcripts_match_a_fresh_run(page: Path) -> None:
    """Every command-line transcript is what the command prints today (tools/transcripts.py
    writes them; durations, dates and the run's folder are the only things normalised)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("transcripts", REPO / "tools" / "transcripts.py")
    assert spec is not None and spec.loader is not None
    transcripts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(transcripts)
    diff = transcripts.stale(page)
    assert not diff, f"run `python tools/transcripts.py {page.relative_to(REPO)}`:\n{diff}"


def test_getting_started_lists_every_extra() -> None:
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    table = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    missing = [name for name in extras if name != "dev" and f"`{name}`" not in table]
    assert not missing, f"getting-started.md's extras table leaves out {missing}"
