"""A checkpoint with random weights says so, and so does everything that uses it.

``make_random_clip_checkpoint`` records in the file itself that its weights are random (a
record inside torch.save's archive, which ``torch.load`` and ``clip.load`` skip); the
embedder finds it at load, the knowledge base's manifest keeps it, and every command (a
warning on stderr, ``random_weights`` in ``--json``), ``info``, ``/v1/info`` and the web page
show it. A checkpoint of the same weights without the record (real weights, as far as the
library can tell) shows none of it.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from helpers import solid
from multimodal_rag import CLIPEmbedder, MultimodalRAG
from multimodal_rag._kb.manifest import MANIFEST_FILE, Manifest
from multimodal_rag._random_checkpoint import has_random_weights
from multimodal_rag.errors import ManifestError
from tiny_clip import make_tiny_clip_checkpoint

torch = pytest.importorskip("torch")

#: What a command's text output prints on stderr when the weights are random.
WARNING = "has random weights"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``random``: as the library writes it; ``plain``: the same tensors saved by torch.save
    alone, as any other checkpoint is."""
    root = tmp_path_factory.mktemp("random-weights")
    random = make_tiny_clip_checkpoint(root / "random.pt")
    plain = root / "plain.pt"
    torch.save(torch.load(random, weights_only=True), plain)
    return {"random": random, "plain": plain}


@pytest.fixture(scope="module")
def kbs(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A knowledge base of three pictures per checkpoint, made by ``multimodal-rag index``."""
    root = tmp_path_factory.mktemp("random-weights-kbs")
    pictures = root / "pictures"
    pictures.mkdir()
    for color in ("red", "green", "blue"):
        solid(color, (32, 32)).save(pictures / f"{color}.png")
    made = {}
    for name, checkpoint in checkpoints.items():
        kb = root / f"kb-{name}"
        result = run("index", pictures, "--kb", kb, "--checkpoint", checkpoint, "--precision", "fp32")
        assert (WARNING in result.stderr) == (name == "random"), result.stderr
        made[name] = kb
    return made


def run(*args: object) -> Result:
    from multimodal_rag.cli import cli

    result = CliRunner().invoke(cli, [str(arg) for arg in args])
    assert result.exit_code == 0, (result.output, result.stderr)
    return result


def test_the_checkpoint_records_it_and_still_loads_as_any_checkpoint(
    checkpoints: dict[str, Path],
) -> None:
    from multimodal_rag.embedders.clip_loading import import_clip, is_torchscript

    random, plain = checkpoints["random"], checkpoints["plain"]
    assert has_random_weights(random) and not has_random_weights(plain)
    with zipfile.ZipFile(random) as archive:
        [record] = [name for name in archive.namelist() if name.endswith("/multimodal_rag.json")]
        assert json.loads(archive.read(record))["random_weights"] is True
    # Plain torch and openai's own loader read it as they read any state_dict.
    state = torch.load(random, map_location="cpu", weights_only=True, mmap=True)
    assert state.keys() == torch.load(plain, weights_only=True).keys()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clip.load tries TorchScript first, and torch warns
        model, _ = import_clip().load(str(random), device="cpu", jit=False)
    assert model.visual.input_resolution == 32
    assert not is_torchscript(random)
    # The embedder finds the record at load; weights without one are taken as real.
    assert CLIPEmbedder(checkpoint=random, precision="fp32", device="cpu").random_weights is True
    assert CLIPEmbedder(checkpoint=plain, precision="fp32", device="cpu").random_weights is False


def test_the_same_arguments_write_the_same_file(tmp_path: Path) -> None:
    """The record changes nothing of that: a knowledge base's fingerprint stays reproducible."""
    import time

    first = make_tiny_clip_checkpoint(tmp_path / "a" / "tiny.pt")
    time.sleep(2)  # a zip record's date has a resolution of two seconds
    second = make_tiny_clip_checkpoint(tmp_path / "b" / "tiny.pt")
    assert first.read_bytes() == second.read_bytes()


def test_not_a_zip_archive_is_not_random(tmp_path: Path) -> None:
    text = tmp_path / "weights.pt"
    text.write_bytes(b"not a checkpoint")
    assert not has_random_weights(text) and not has_random_weights(tmp_path / "missing.pt")


def test_the_manifest_records_it(kbs: dict[str, Path]) -> None:
    random = json.loads((kbs["random"] / MANIFEST_FILE).read_text())
    plain = json.loads((kbs["plain"] / MANIFEST_FILE).read_text())
    assert random["embedder"]["random_weights"] is True
    # Not a setting that rebuilds the embedder: the config keeps only the model's identity.
    assert "random_weights" not in random["embedder"]["config"]
    assert "random_weights" not in plain["embedder"]  # real models' manifests as before
    assert Manifest.from_dict(random).embedder.random_weights is True
    assert Manifest.from_dict(plain).embedder.random_weights is False
    # Reopened from its manifest, the knowledge base's embedder still knows it.
    with MultimodalRAG.open(kbs["random"], read_only=True) as rag:
        assert rag.embedder.random_weights is True
    random["embedder"]["random_weights"] = "yes"
    with pytest.raises(ManifestError, match="random_weights"):
        Manifest.from_dict(random)


@pytest.mark.parametrize(
    "command",
    [
        ["search", "{kb}", "--text", "red"],
        ["ask", "{kb}", "what is red?", "--answerer", "extractive"],
        ["show", "{kb}", "--image", "{picture}", "--out", "{out}"],
        ["info", "{kb}"],
        ["verify", "{kb}"],
    ],
    ids=lambda command: command[0],
)
def test_every_command_says_so(
    kbs: dict[str, Path], command: list[str], tmp_path: Path
) -> None:
    picture = tmp_path / "query.png"
    solid("red", (32, 32)).save(picture)
    for name, kb in kbs.items():
        argv = [arg.format(kb=kb, picture=picture, out=tmp_path / "sheet.png") for arg in command]
        text = run(*argv)
        assert (WARNING in text.stderr) == (name == "random"), (name, text.stderr)
        assert WARNING not in text.stdout
        as_json = run(*argv, "--json")
        assert WARNING not in as_json.stderr
        # Present, and true, only for random weights: real models' outputs are as before.
        assert json.loads(as_json.stdout).get("random_weights", False) is (name == "random")
        assert ('"random_weights"' in as_json.stdout) == (name == "random")
    assert "RANDOM" in run("info", kbs["random"]).stdout
    assert "RANDOM" not in run("info", kbs["plain"]).stdout


def test_the_server_info_and_page_say_so(kbs: dict[str, Path]) -> None:
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx")
    from starlette.testclient import TestClient

    from multimodal_rag.server.app import ServerSettings, create_app
    from multimodal_rag.server.reloading import ReloadingKnowledgeBase

    for name, kb in kbs.items():
        app = create_app(
            ReloadingKnowledgeBase(kb), ServerSettings(reload_interval=0, allowed_hosts=["testserver"])
        )
        with TestClient(app) as client:
            info = client.get("/v1/info").json()
            assert info["embedder"]["random_weights"] is (name == "random")
            page = client.get("/").text
    # The banner is on the page, hidden until /v1/info says the weights are random.
    assert '<p id="random-weights" role="alert" hidden>' in page
    assert '$("random-weights").hidden = !info.embedder.random_weights;' in page
