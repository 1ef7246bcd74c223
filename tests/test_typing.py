"""Type checkers accept the public API: a script that uses it as the docs show passes
``mypy --strict`` and ``pyright --strict`` with no errors.

The script, tests/typecheck/public_api_usage.py, is only type-checked, never run. Both
checkers find ``multimodal_rag`` the way they would in a user's project: installed in this
interpreter's environment, typed by its ``py.typed`` marker, with no project settings.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
USAGE = ROOT / "tests" / "typecheck" / "public_api_usage.py"


def _require(tool: str) -> None:
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed (pip install -e '.[dev]')")
    try:
        importlib.metadata.distribution("multimodal-rag")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("multimodal-rag is not installed in this environment: pip install -e '.[dev]'")


def test_usage_script_is_not_collected_as_a_test() -> None:
    assert not USAGE.name.startswith("test_") and not USAGE.name.endswith("_test.py")
    assert "# pyright: strict" in USAGE.read_text(encoding="utf-8").splitlines()[0]


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
            str(USAGE),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 1 source file" in result.stdout


def test_pyright_strict_accepts_the_public_api(tmp_path: Path) -> None:
    _require("pyright")
    config = tmp_path / "pyrightconfig.json"
    config.write_text(json.dumps({"typeCheckingMode": "strict"}), encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable, "-m", "pyright", "--outputjson",
            "--project", str(config),
            "--pythonpath", sys.executable,
            str(USAGE),
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
    assert report["summary"]["filesAnalyzed"] == 1
    assert result.returncode == 0, result.stderr
