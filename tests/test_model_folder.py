"""fetch_model / ``multimodal-rag fetch-model``: a model folder fetched online, loaded offline.

A fake Hugging Face hub serves a tiny multilingual model (xlm-roberta-base-ViT-B-32's
architecture: an xlm-roberta text tower and tokenizer, at made-up hub names): the real
fetching code downloads from it through ``huggingface_hub.hf_hub_download``, and the folder
then loads and embeds Persian text and images with every network connection refused.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import huggingface_hub  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError  # noqa: E402

from helpers import varied_pictures  # noqa: E402
from multimodal_rag import MultimodalRAG, OpenCLIPEmbedder  # noqa: E402
from multimodal_rag.cli import cli  # noqa: E402
from multimodal_rag.embedders import fetch_model  # noqa: E402
from multimodal_rag.embedders.model_folder import MANIFEST_NAME, read_model_folder  # noqa: E402
from multimodal_rag.errors import InvalidInputError, ModelLoadError  # noqa: E402
from tiny_open_clip import (  # noqa: E402
    TINY_HF_TEXT,
    TINY_XLM,
    TINY_XLM_TAG,
    TINY_XLM_TEXT_REPO,
    make_tiny_hf_text_weights_repo,
    make_tiny_nllb_repo,
    make_tiny_xlm_roberta_repo,
    register_tiny_hf_text_model,
)

PERSIAN = ["تمبر قرمز با پرنده", "عکس یک سگ در برف"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fake hub's repositories: repository id -> folder of its files."""
    root = tmp_path_factory.mktemp("hub")
    repos = {}
    for name, make_text_repo in (
        (TINY_XLM, make_tiny_xlm_roberta_repo),
        ("tiny-nllb-clip-base", make_tiny_nllb_repo),
    ):
        _family, _tag, text_repo, weights_repo = TINY_HF_TEXT[name]
        repos[text_repo] = make_text_repo(root / text_repo)
        register_tiny_hf_text_model(name, root / "configs")
        repos[weights_repo] = make_tiny_hf_text_weights_repo(
            name, repos[text_repo], root / weights_repo
        )
    return repos


@pytest.fixture
def downloads(
    hub: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[tuple[str, str]]]:
    """Serve ``hf_hub_download`` from the fake hub; the requests are recorded."""
    requests: list[tuple[str, str]] = []

    def download(*, repo_id: str, filename: str, **kwargs: Any) -> str:
        requests.append((repo_id, filename))
        path = hub[repo_id] / filename
        if not path.is_file():
            raise _absent(repo_id, filename)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    _hub_answers(monkeypatch)
    yield requests


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every connection fails as it would offline; the attempts are recorded."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args[1] if len(args) > 1 else args[0])
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield attempts


@pytest.fixture(scope="module")
def fetched(hub: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder fetched from the fake hub, for the tests that only read it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub, "hf_hub_download", _serve(hub))
        _hub_answers(patch)
        folder = tmp_path_factory.mktemp("fetched") / "tiny-xlm"
        fetch_model(TINY_XLM, folder)
    return folder


def _serve(hub: dict[str, Path]) -> Callable[..., str]:
    def download(*, repo_id: str, filename: str, **kwargs: Any) -> str:
        path = hub[repo_id] / filename
        if not path.is_file():
            raise _absent(repo_id, filename)
        return str(path)

    return download


def _hub_answers(patch: pytest.MonkeyPatch) -> None:
    """The hub's host accepts connections (fetch_model checks that first); nothing else does."""
    from huggingface_hub import constants

    class Connection:
        def close(self) -> None:
            pass

    def connect(address: tuple[str, int], *args: object, **kwargs: object) -> Connection:
        if address[0] != "huggingface.co":
            raise OSError("network is unreachable")
        return Connection()

    patch.setattr(socket, "create_connection", connect)
    patch.setattr(constants, "HF_HUB_OFFLINE", False)


def _absent(repo: str, filename: str) -> RemoteEntryNotFoundError:
    """What the hub client raises for a file its repository lacks (an HTTP 404)."""
    import importlib

    response_type = huggingface_hub.errors.Response
    http = importlib.import_module(response_type.__module__.split(".")[0])
    url = f"https://huggingface.co/{repo}/resolve/main/{filename}"
    response = response_type(404, request=http.Request("GET", url))
    return RemoteEntryNotFoundError(f"404 Client Error: {url}", response=response)


# -- fetching --------------------------------------------------------------------------


#: The tokenizer files each tiny model's hub repository has (as the real ones: xlm-roberta-base
#: has no tokenizer_config.json; NLLB's config.json names an encoder-decoder).
TOKENIZER_FILES = {
    TINY_XLM: {"tokenizer.json", "config.json"},
    "tiny-nllb-clip-base": {"tokenizer.json", "tokenizer_config.json", "config.json"},
}


@pytest.mark.parametrize("name", sorted(TINY_HF_TEXT))
def test_fetch_gathers_weights_config_and_tokenizer_with_a_manifest(
    name: str, hub: dict[str, Path], downloads: list[tuple[str, str]], tmp_path: Path
) -> None:
    _family, tag, text_repo, weights_repo = TINY_HF_TEXT[name]
    folder = fetch_model(name, tmp_path / name)  # its only tag is chosen
    assert folder.model == name and folder.pretrained == tag
    roles = {file.path: file.role for file in folder.files}
    assert roles == {
        "open_clip_model.safetensors": "weights",
        "open_clip_config.json": "open_clip_config",
        "text-config/config.json": "text_config",
        **{f"tokenizer/{file}": "tokenizer" for file in TOKENIZER_FILES[name]},
    }
    # Each file is the hub's, byte for byte, and the manifest's hash is its hash.
    import hashlib

    for file in folder.files:
        data = (folder.path / file.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == file.sha256 and len(data) == file.size
    assert (folder.path / "open_clip_model.safetensors").read_bytes() == (
        hub[weights_repo] / "open_clip_model.safetensors"
    ).read_bytes()
    assert (folder.path / "text-config" / "config.json").read_bytes() == (
        hub[text_repo] / "config.json"
    ).read_bytes()
    assert folder.weights.source.startswith(f"https://huggingface.co/{weights_repo}/")
    config = json.loads((folder.path / "open_clip_config.json").read_text())
    assert config["model_cfg"]["text_cfg"]["hf_model_name"] == text_repo
    assert config["preprocess_cfg"]["mean"] == list(open_clip.get_pretrained_cfg(name, tag)["mean"])
    # The safetensors copy is asked for first, as open_clip does.
    assert downloads[0] == (weights_repo, "open_clip_model.safetensors")
    assert json.loads((folder.path / MANIFEST_NAME).read_text())["model"] == name
    assert folder.path.stat().st_mode & 0o777 == 0o755  # readable by others, as a copy would be
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no partial folder left beside it


@pytest.mark.parametrize("name", sorted(TINY_HF_TEXT))
def test_the_folder_loads_and_embeds_persian_with_no_network(
    name: str,
    hub: dict[str, Path],
    downloads: list[tuple[str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _family, tag, text_repo, weights_repo = TINY_HF_TEXT[name]
    folder = fetch_model(name, tmp_path / name)
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    embedder = OpenCLIPEmbedder(name, tag, checkpoint=folder.path, precision="fp32")
    texts = embedder.embed_texts(PERSIAN)
    images = embedder.embed_images(varied_pictures(5, gradient=False)[:2])
    assert texts.shape == (2, 32) and images.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(texts[0], texts[1])  # two sentences, two vectors
    assert attempts == []
    # The same weights as the hub's: the text vectors are open_clip's own for this model.
    import torch
    from open_clip.tokenizer import HFTokenizer

    text_cfg = dict(open_clip.get_model_config(name)["text_cfg"])
    text_cfg.update(hf_model_name=str(hub[text_repo]), hf_model_pretrained=False)
    reference = open_clip.create_model(
        name, pretrained=str(hub[weights_repo] / "open_clip_model.safetensors"), text_cfg=text_cfg
    ).eval()
    tokens = HFTokenizer(str(hub[text_repo]), context_length=embedder.context_length)(PERSIAN)
    with torch.inference_mode():
        theirs = torch.nn.functional.normalize(reference.encode_text(tokens), dim=-1).numpy()
    np.testing.assert_allclose(texts, theirs, atol=1e-5)
    assert embedder.fingerprint.startswith(f"open_clip:{name}:{tag}:sha256=")


@pytest.mark.slow  # the reopened embedder times its precisions (auto): ~6-20 s here
def test_a_knowledge_base_built_from_the_folder_reopens_offline(
    fetched: Path, tmp_path: Path, no_network: list[object]
) -> None:
    embedder = OpenCLIPEmbedder(TINY_XLM, TINY_XLM_TAG, checkpoint=fetched, precision="fp32")
    pictures = varied_pictures(5, gradient=False)
    with MultimodalRAG.create(tmp_path / "kb", embedder=embedder) as rag:
        ids = rag.add(pictures[:4], progress=False).ids
    # Rebuilt from the manifest, which records the folder as the checkpoint.
    with MultimodalRAG.open(tmp_path / "kb", read_only=True) as reopened:
        assert reopened.embedder.fingerprint == embedder.fingerprint
        assert len(reopened.search(text=PERSIAN[0], k=3)) == 3
        assert reopened.search(image=pictures[2], k=1)[0].id == ids[2]
    assert no_network == []


def test_the_cli_fetches_then_indexes_from_the_folder(
    downloads: list[tuple[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    folder = tmp_path / "tiny-xlm"
    result = runner.invoke(
        cli, ["fetch-model", TINY_XLM, "--pretrained", TINY_XLM_TAG, "--to", str(folder), "--json"]
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["model"] == TINY_XLM and shown["path"] == str(folder.resolve())
    assert {file["role"] for file in shown["files"]} == {
        "weights",
        "open_clip_config",
        "text_config",
        "tokenizer",
    }
    images = tmp_path / "images"
    images.mkdir()
    for i, picture in enumerate(varied_pictures(5, gradient=False)[:3]):
        picture.save(images / f"{i}.png")
    # Offline, the folder alone: --model and --pretrained come from its manifest.
    monkeypatch.setattr(socket, "create_connection", _refuse)
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    kb = tmp_path / "kb"
    result = runner.invoke(
        cli,
        [
            "index",
            str(images),
            "--kb",
            str(kb),
            "--embedder",
            "open-clip",
            "--checkpoint",
            str(folder),
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["search", str(kb), "--text", PERSIAN[1], "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["hits"]) == 2


def _refuse(*args: object, **kwargs: object) -> None:
    raise OSError("network is unreachable")


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remove", "named"),
    [
        ("tokenizer/tokenizer.json", "tokenizer/tokenizer.json (tokenizer) is missing"),
        ("text-config/config.json", "text-config/config.json (text_config) is missing"),
        ("open_clip_model.safetensors", "open_clip_model.safetensors (weights) is missing"),
        (MANIFEST_NAME, f"has no {MANIFEST_NAME}"),
    ],
)
def test_an_incomplete_folder_names_the_missing_file(
    fetched: Path, tmp_path: Path, remove: str, named: str, no_network: list[object]
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(fetched, copy)
    (copy / remove).unlink()
    with pytest.raises(ModelLoadError) as info:
        OpenCLIPEmbedder(TINY_XLM, TINY_XLM_TAG, checkpoint=copy)
    assert named in str(info.value) and str(copy) in str(info.value)
    assert no_network == []


def test_a_truncated_or_changed_file_is_refused(fetched: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(fetched, copy)
    weights = copy / "open_clip_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # a copy cut short
    with pytest.raises(
        ModelLoadError, match=r"open_clip_model.safetensors \(weights\) has \d+ bytes"
    ):
        OpenCLIPEmbedder(TINY_XLM, TINY_XLM_TAG, checkpoint=copy)
    # The same size, one weight changed: it would load, but it is not the fetched model.
    data = bytearray((fetched / "open_clip_model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(
        ModelLoadError, match=r"open_clip_model.safetensors \(weights\) does not match the SHA-256"
    ):
        OpenCLIPEmbedder(TINY_XLM, TINY_XLM_TAG, checkpoint=copy)
    shutil.copyfile(fetched / "open_clip_model.safetensors", weights)
    config = copy / "text-config" / "config.json"
    text = config.read_text()
    config.write_text(text.replace('"hidden_size": 32', '"hidden_size": 64'))
    with pytest.raises(ModelLoadError, match=r"config.json \(text_config\) does not match"):
        read_model_folder(copy)


def test_a_folder_of_another_model_says_which_it_holds(fetched: Path) -> None:
    with pytest.raises(
        ModelLoadError,
        match=rf"holds open_clip model '{TINY_XLM}' with pretrained '{TINY_XLM_TAG}'",
    ):
        OpenCLIPEmbedder("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k", checkpoint=fetched)


def test_unknown_names_and_a_used_destination_are_refused(
    downloads: list[tuple[str, str]], tmp_path: Path
) -> None:
    with pytest.raises(ModelLoadError, match="unknown open_clip model 'ViT-Z-99'"):
        fetch_model("ViT-Z-99", tmp_path / "a")
    with pytest.raises(ModelLoadError, match="unknown pretrained tag 'nope'.*laion5b_s13b_b90k"):
        fetch_model(TINY_XLM, tmp_path / "a", pretrained="nope")
    with pytest.raises(ModelLoadError, match="several pretrained tags.*openai.*pretrained="):
        fetch_model("ViT-B-32", tmp_path / "a")
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="not an empty folder"):
        fetch_model(TINY_XLM, used)
    assert (used / "keep.txt").read_text() == "mine"
    assert downloads == [] and not (tmp_path / "a").exists()


def test_a_network_failure_names_the_model_and_the_file_and_leaves_nothing(
    hub: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    serve = _serve(hub)

    def flaky(*, repo_id: str, filename: str, **kwargs: Any) -> str:
        if repo_id == TINY_XLM_TEXT_REPO:  # the weights come, then the connection drops
            raise LocalEntryNotFoundError("cannot reach huggingface.co")
        return serve(repo_id=repo_id, filename=filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", flaky)
    _hub_answers(monkeypatch)
    with pytest.raises(ModelLoadError) as info:
        fetch_model(TINY_XLM, tmp_path / "tiny-xlm")
    message = str(info.value)
    assert f"open_clip model {TINY_XLM!r}" in message
    assert f"https://huggingface.co/{TINY_XLM_TEXT_REPO}/resolve/main/config.json" in message
    assert "cannot reach huggingface.co" in message
    assert list(tmp_path.iterdir()) == []  # no half folder, no leftovers


def test_offline_the_cli_fails_at_once_in_one_line(
    hub: dict[str, Path], no_network: list[object], tmp_path: Path
) -> None:
    result = CliRunner().invoke(cli, ["fetch-model", TINY_XLM, "--to", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert result.output.startswith(
        f"error: cannot fetch open_clip model {TINY_XLM!r} with pretrained {TINY_XLM_TAG!r}: "
        "huggingface.co cannot be reached"
    )
    assert result.output.count("\n") == 1 and "network is unreachable" in result.output
    assert len(no_network) == 1  # one quick probe, not the hub client's retries
    assert list(tmp_path.iterdir()) == []


def test_with_hf_hub_offline_set_nothing_is_tried(
    hub: dict[str, Path], no_network: list[object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match=f"model {TINY_XLM!r}.*HF_HUB_OFFLINE=1 is set"):
        fetch_model(TINY_XLM, tmp_path / "m")
    assert no_network == []


def test_a_manifest_that_is_malformed_or_leads_outside_is_refused(
    fetched: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(fetched, copy)
    manifest = copy / MANIFEST_NAME
    original = json.loads(manifest.read_text())
    manifest.write_text("{not json")
    with pytest.raises(ModelLoadError, match=f"cannot read {MANIFEST_NAME}"):
        read_model_folder(copy)
    manifest.write_text(json.dumps({**original, "files": [{"path": "x"}]}))
    with pytest.raises(ModelLoadError, match=f"{MANIFEST_NAME} is malformed"):
        read_model_folder(copy)
    outside = dict(original["files"][0], path="../elsewhere/open_clip_model.safetensors")
    manifest.write_text(json.dumps({**original, "files": [outside, *original["files"][1:]]}))
    with pytest.raises(ModelLoadError, match="outside the folder"):
        read_model_folder(copy)
    # A manifest that leaves out the files its model needs is incomplete.
    kept = [file for file in original["files"] if file["role"] != "tokenizer"]
    manifest.write_text(json.dumps({**original, "files": kept}))
    with pytest.raises(ModelLoadError, match="needs its tokenizer files"):
        read_model_folder(copy)


def test_a_folder_takes_no_tokenizer_besides(fetched: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="brings its own tokenizer"):
        OpenCLIPEmbedder(TINY_XLM, TINY_XLM_TAG, checkpoint=fetched, tokenizer=tmp_path)
