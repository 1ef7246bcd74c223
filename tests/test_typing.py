"""Type checkers accept the public API as the docs use it, and catch the mistakes it can.

tests/typecheck/public_api_usage.py uses the API as the docs show and states, with
``assert_type``, the exact types it returns; tests/typecheck/mistakes.py holds misspelled
choices and wrong arguments, each marked with the one error it must cause. Both files pass
``mypy --strict`` and ``pyright --strict`` with no errors, where an unneeded ignore comment is
itself an error: a mistake that stops being caught fails the test. The files are only
type-checked, never run. Both checkers find ``multimodal_rag`` the way they would in a user's
project: installed in this interpreter's environment, typed by its ``py.typed`` marker, with
no project settings.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

ROOT = Path(__file__).resolve().parent.parent
USAGE = ROOT / "tests" / "typecheck" / "public_api_usage.py"
MISTAKES = ROOT / "tests" / "typecheck" / "mistakes.py"
CHECKED = (USAGE, MISTAKES)


def _require(tool: str) -> None:
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed (pip install -e '.[dev]')")
    try:
        importlib.metadata.distribution("multimodal-rag")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("multimodal-rag is not installed in this environment: pip install -e '.[dev]'")


def test_checked_scripts_are_not_collected_as_tests() -> None:
    for script in CHECKED:
        assert not script.name.startswith("test_") and not script.name.endswith("_test.py")
        assert "# pyright: strict" in script.read_text(encoding="utf-8").splitlines()[0]


def test_every_mistake_is_marked_for_both_checkers() -> None:
    # Lines that expect an error expect it from both checkers, so neither can drift alone.
    marked = [line for line in MISTAKES.read_text(encoding="utf-8").splitlines() if "ignore[" in line]
    assert len(marked) >= 10
    for line in marked:
        assert "# type: ignore[" in line and "# pyright: ignore[" in line, line


def test_mypy_strict_accepts_the_public_api(tmp_path: Path) -> None:
    _require("mypy")
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n", encoding="utf-8")  # not the project's settings, nor the user's
    result = subprocess.run(
        [
            sys.executable, "-m", "mypy", "--strict",
            "--config-file", str(config),
            # The package's analysis is cached between runs; a cold run takes a few seconds more.
            "--cache-dir", str(ROOT / ".mypy_cache" / "public-api"),
            # An expected error that no longer happens is an error (--strict implies it too).
            "--warn-unused-ignores",
            *map(str, CHECKED),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Success: no issues found in {len(CHECKED)} source files" in result.stdout


def test_pyright_strict_accepts_the_public_api(tmp_path: Path) -> None:
    _require("pyright")
    config = tmp_path / "pyrightconfig.json"
    settings = {
        "typeCheckingMode": "strict",
        # mistakes.py marks each expected error once per checker: pyright reads only its own
        # comments, and reports one that silences nothing.
        "enableTypeIgnoreComments": False,
        "reportUnnecessaryTypeIgnoreComment": "error",
    }
    config.write_text(json.dumps(settings), encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable, "-m", "pyright", "--outputjson",
            "--project", str(config),
            "--pythonpath", sys.executable,
            *map(str, CHECKED),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"pyright did not run (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    problems = [
        f"{Path(d['file']).name}:{d['range']['start']['line'] + 1}: {d['message']} ({d.get('rule', '')})"
        for d in report["generalDiagnostics"]
        if d["severity"] in ("error", "warning")
    ]
    assert problems == [], "\n".join(problems)
    assert report["summary"]["filesAnalyzed"] == len(CHECKED)
    assert result.returncode == 0, result.stderr


def test_each_choice_is_written_once() -> None:
    # The Literal aliases are what type checkers accept; the run-time checks and the backend
    # registry must accept exactly the same values, or one of them misleads.
    from multimodal_rag._registry import BUILTINS
    from multimodal_rag.embedders.precision import check_engine_and_precision
    from multimodal_rag.errors import InvalidInputError
    from multimodal_rag.types import (
        AnswererKind,
        DescriptionStoreKind,
        EmbedderKind,
        Engine,
        Precision,
        RerankerKind,
        VectorStoreKind,
    )

    for engine in get_args(Engine):
        check_engine_and_precision(engine, "fp32", on_gpu=None)
    for precision in get_args(Precision):
        check_engine_and_precision("openvino", precision, on_gpu=None)
    # Code that no type checker saw still gets the library's error, naming the value.
    with pytest.raises(InvalidInputError, match="'openvno'"):
        check_engine_and_precision("openvno", "auto", on_gpu=None)
    with pytest.raises(InvalidInputError, match="'fp61'"):
        check_engine_and_precision("torch", "fp61", on_gpu=None)
    assert sorted(get_args(EmbedderKind)) == sorted(BUILTINS["embedder"])
    assert sorted(get_args(VectorStoreKind)) == sorted(BUILTINS["vector_store"])
    assert sorted(get_args(DescriptionStoreKind)) == sorted(BUILTINS["description_store"])
    assert sorted(get_args(AnswererKind)) == sorted(BUILTINS["answerer"])
    assert sorted(get_args(RerankerKind)) == sorted(BUILTINS["reranker"])


def test_vector_aliases_resolve_at_run_time_without_importing_numpy_early() -> None:
    code = (
        "import sys\n"
        "import multimodal_rag.types as types\n"
        "print('numpy' in sys.modules)\n"
        "from multimodal_rag.types import Vector, Vectors\n"
        "import numpy as np\n"
        "from numpy.typing import NDArray\n"
        "print(Vectors == NDArray[np.float32] == Vector)\n"
        "from multimodal_rag import IdFilter\n"
        "from multimodal_rag.protocols import IdFilter as Declared\n"
        "print(IdFilter is Declared)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False", "True", "True"], result.stderr
