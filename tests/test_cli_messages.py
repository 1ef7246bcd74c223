"""What the command line says when something is wrong: options to give, never Python arguments.

The library's errors advise Python callers (``pass checkpoint=...``); the command line turns
that advice into its own options. These tests raise the library's real errors and check what
a command-line user reads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import solid
from test_cli import COLOR, REPO, ok, run_cli

#: What only a Python caller can act on: an argument (``checkpoint=``), a class to build.
PYTHON_ADVICE = re.compile(r"\b[a-z_]+=(?!\d)|Embedder\(|MultimodalRAG\.")


def assert_no_python_advice(message: str) -> None:
    assert not PYTHON_ADVICE.search(message.replace("HF_HUB_OFFLINE=1", "")), message


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder of three images, and a tiny random CLIP checkpoint."""
    from tiny_clip import make_tiny_clip_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    images = root / "images"
    images.mkdir()
    for i, name in enumerate(("red", "green", "blue")):
        solid(name, (40 + 8 * i, 30)).save(images / f"{name}.png")
    return images, make_tiny_clip_checkpoint(root / "tiny.pt")


# -- the library's advice, in command-line terms -------------------------------


def test_a_missing_knowledge_base_names_the_command_that_creates_one(tmp_path: Path) -> None:
    result = run_cli("search", tmp_path, "--text", "red")
    assert result.returncode == 1
    assert "create one with `multimodal-rag index DIRECTORY --kb KB`" in result.stderr
    assert_no_python_advice(result.stderr)


def test_checkpoint_advice_names_the_options(tmp_path: Path) -> None:
    from multimodal_rag.cli.app import cli_message
    from multimodal_rag.embedders.clip import CLIPEmbedder
    from multimodal_rag.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="checkpoint=") as missing:
        CLIPEmbedder(checkpoint=tmp_path / "gone.pt")
    message = cli_message(str(missing.value))
    assert "give --checkpoint the path of a CLIP weights file" in message
    assert_no_python_advice(message)

    with pytest.raises(ModelLoadError, match="checkpoint=") as unknown:
        CLIPEmbedder("no-such-model")
    message = cli_message(str(unknown.value))
    assert "give --checkpoint /path/to/weights.pt (with --model naming them)" in message
    assert_no_python_advice(message)


def test_open_clip_advice_names_the_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("open_clip")
    from huggingface_hub import constants

    from multimodal_rag.cli.app import cli_message
    from multimodal_rag.embedders.openclip import OpenCLIPEmbedder
    from multimodal_rag.errors import ModelLoadError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="checkpoint=") as caught:
        OpenCLIPEmbedder("ViT-B-16-SigLIP2", "webli", download_root=tmp_path)
    message = cli_message(str(caught.value))
    assert "give --checkpoint /path/to/weights --tokenizer /path/to/tokenizer-folder" in message
    assert_no_python_advice(message)


def test_the_answerer_note_names_no_python_argument(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    images, checkpoint = tiny
    kb = tmp_path / "kb"
    ok(run_cli("index", images, "--kb", kb, "--checkpoint", checkpoint))
    result = ok(run_cli("ask", kb, "Which colour?", "-k", "1"))
    note = next(line for line in result.stderr.splitlines() if line.startswith("note: "))
    assert "set OPENAI_API_KEY to answer with a vision model" in note
    assert_no_python_advice(note)


# -- where the weights are now -------------------------------------------------


@pytest.mark.slow  # several commands, each loading the model in a new process
def test_a_knowledge_base_whose_checkpoint_moved_opens_with_checkpoint(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    images, original = tiny
    checkpoint = Path(shutil.copy(original, tmp_path / "weights.pt"))
    kb = tmp_path / "kb"
    ok(run_cli("index", images, "--kb", kb, "--checkpoint", checkpoint))
    moved = checkpoint.rename(tmp_path / "moved.pt")

    lost = run_cli("search", kb, "--text", "red")
    assert lost.returncode == 1 and "give --checkpoint the path of a CLIP weights file" in lost.stderr
    assert_no_python_advice(lost.stderr)

    hits = json.loads(ok(run_cli("search", kb, "--text", "red", "--checkpoint", moved, "--json")).stdout)
    assert len(hits["hits"]) == 3
    ok(run_cli("ask", kb, "Which colour?", "--checkpoint", moved))
    ok(run_cli("verify", kb, "--checkpoint", moved))
    # A command that writes records where the weights are now: no option needed afterwards.
    ok(run_cli("index", images, "--kb", kb, "--checkpoint", moved))
    assert json.loads(ok(run_cli("info", kb, "--json")).stdout)["embedder"]["config"]["checkpoint"] == str(moved)
    ok(run_cli("search", kb, "--text", "red"))


def test_weights_options_are_refused_where_the_embedder_takes_none(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    images, checkpoint = tiny
    kb = tmp_path / "kb"
    ok(run_cli("index", images, "--kb", kb, "--checkpoint", checkpoint))
    result = run_cli("search", kb, "--text", "red", "--tokenizer", tmp_path)
    assert result.returncode == 2
    assert "--tokenizer does not apply to this knowledge base, whose embedder is 'clip'" in result.stderr


@pytest.mark.parametrize(
    "command", ["search", "show", "ask", "eval", "fit", "verify", "repair", "remove", "describe", "migrate", "serve"]
)
def test_every_command_that_loads_the_model_takes_checkpoint(command: str) -> None:
    from multimodal_rag.cli import cli

    options = {opt for param in cli.commands[command].params for opt in param.opts}
    assert {"--checkpoint", "--tokenizer"} <= options


# -- a file that is not CLIP weights -------------------------------------------


def test_a_checkpoint_that_is_not_weights_says_what_it_is_not(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    images, _ = tiny
    text = tmp_path / "notes.pt"
    text.write_text("not a model\n")
    result = run_cli("index", images, "--kb", tmp_path / "kb", "--checkpoint", text)
    assert result.returncode == 1
    assert "is not a file torch.save writes (it begins b'not a model\\n')" in result.stderr
    assert "expected a CLIP model's state_dict saved with torch.save" in result.stderr
    # Not torch's words, and no model that was never asked for.
    assert "mmap" not in result.stderr and "ViT-B/32" not in result.stderr
    assert not (tmp_path / "kb").exists()


def test_tensors_that_are_not_clip_are_named_so(tmp_path: Path) -> None:
    import torch

    from multimodal_rag.embedders.clip import CLIPEmbedder
    from multimodal_rag.errors import ModelLoadError

    other = tmp_path / "other.pt"
    torch.save({"layer.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(ModelLoadError, match="it holds tensors, but not a CLIP model's") as caught:
        CLIPEmbedder(checkpoint=other)
    assert "ViT-B/32" not in str(caught.value)


# -- a folder with no images ---------------------------------------------------


def test_a_folder_with_no_images_fails_unless_allowed(photos_empty: Path, tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    refused = run_cli(*COLOR, "index", photos_empty, "--kb", kb, "--embedder", "helpers:ColorEmbedder")
    assert refused.returncode == 1
    assert f"no images in {str(photos_empty)!r} or its subfolders" in refused.stderr
    assert "no knowledge base was created. Give --allow-empty" in refused.stderr
    assert not kb.exists()

    allowed = ok(
        run_cli(*COLOR, "index", photos_empty, "--kb", kb, "--embedder", "helpers:ColorEmbedder", "--allow-empty")
    )
    assert allowed.stderr.startswith(f"warning: no images in {str(photos_empty)!r}")
    assert json.loads(ok(run_cli("info", kb, "--json")).stdout)["counts"]["vectors"] == 0

    again = run_cli(*COLOR, "index", photos_empty, "--kb", kb)
    assert again.returncode == 1 and "nothing was indexed" in again.stderr


@pytest.fixture
def photos_empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("no images here")
    return folder


# -- open_clip without network -------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on exit: connecting is refused


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "unreachable"])
def test_open_clip_without_cached_weights_fails_fast(
    offline: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("open_clip")
    from huggingface_hub import constants

    from multimodal_rag.embedders.openclip import OpenCLIPEmbedder
    from multimodal_rag.errors import ModelLoadError

    if offline == "HF_HUB_OFFLINE":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        why = "HF_HUB_OFFLINE=1 is set, so nothing is downloaded"
    else:  # the hub's address leads nowhere, as on a machine without network
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
        why = "127.0.0.1 cannot be reached to download them"
    import open_clip  # noqa: F401 - imported before the clock starts: its import is not the point

    started = time.monotonic()
    with pytest.raises(ModelLoadError) as caught:
        OpenCLIPEmbedder("ViT-B-16-SigLIP2", "webli", download_root=tmp_path)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert why in message and "HF_HUB_OFFLINE=1" in message
    assert "checkpoint='/path/to/weights', tokenizer='/path/to/tokenizer-folder'" in message


@pytest.mark.slow  # several commands, each loading the model in a new process
def test_open_clip_offline_on_the_command_line_names_the_options(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("open_clip")
    images, _ = tiny
    result = run_cli(
        "index", images, "--kb", tmp_path / "kb", "--embedder", "open-clip", "--model", "ViT-B-16-SigLIP2",
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    assert result.returncode == 1
    assert "HF_HUB_OFFLINE=1 is set" in result.stderr
    assert "give --checkpoint /path/to/weights --tokenizer /path/to/tokenizer-folder" in result.stderr
    assert "Retry" not in result.stderr
    assert_no_python_advice(result.stderr)


# -- extras checked first; quiet engines -------------------------------------


def test_eval_plot_without_matplotlib_fails_before_evaluating(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from helpers import ColorEmbedder
    from multimodal_rag import MultimodalRAG
    from multimodal_rag.cli import cli

    kb = tmp_path / "kb"
    with MultimodalRAG.create(kb, embedder=ColorEmbedder()) as rag:
        rag.add(solid("red", (20, 20)), descriptions="red")
    evaluated: list[bool] = []
    monkeypatch.setattr(MultimodalRAG, "evaluate", lambda *a, **k: evaluated.append(True))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    result = CliRunner().invoke(
        cli, [*COLOR, "eval", str(kb), "--plot", str(tmp_path / "plot.png")], standalone_mode=True
    )
    assert result.exit_code == 1, result.output
    assert "pip install 'multimodal-rag[eval]'" in result.output
    assert evaluated == []


def test_the_openvino_engine_keeps_torch_cuda_home_notice_quiet(tmp_path: Path) -> None:
    pytest.importorskip("nncf")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MULTIMODAL_RAG_")}
    environ.update(CUDA_HOME=str(tmp_path), PYTHONPATH=str(REPO / "src"))
    script = (
        "import torch, sys\n"
        "if torch.cuda.is_available(): sys.exit(3)\n"
        "from multimodal_rag.embedders.openvino_engine import import_nncf\n"
        "import_nncf()\n"
        "import nncf.torch  # as nncf.quantize does for a torch model\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environ, timeout=300
    )
    if result.returncode == 3:
        pytest.skip("a CUDA runtime is present: torch has nothing to warn about")
    assert result.returncode == 0, result.stderr
    assert "No CUDA runtime is found" not in result.stderr
