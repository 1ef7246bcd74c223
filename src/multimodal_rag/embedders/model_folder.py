"""A model folder: everything an ``open_clip`` model needs, fetched online, loaded offline.

Besides its weights, a model whose text tower is a Hugging Face transformer (the
multilingual xlm-roberta and NLLB CLIPs) needs that transformer's configuration from the
hub, and a model with a Hugging Face tokenizer (those, SigLIP 2's Gemma tokenizer) needs
the tokenizer's files: ``open_clip`` fetches both by their hub names while it builds the
model. `fetch_model` downloads all of them, on a machine with internet, into one folder
with a manifest; ``OpenCLIPEmbedder(model, pretrained, checkpoint=folder)`` then loads the
folder with no network access at all. The folder holds:

- ``model-manifest.json``: what each file is, its size and SHA-256, where it came from;
- ``open_clip_config.json``: the architecture and the tag's preprocessing, as open_clip
  publishes them (``{"model_cfg": ..., "preprocess_cfg": ...}``);
- the weights, named as the tag's download names them (``open_clip_model.safetensors``);
- ``text-config/config.json``: the text tower's transformer configuration (for a config
  with ``hf_model_name``);
- ``tokenizer/``: the tokenizer's files (for a config with ``hf_tokenizer_name``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal, cast

from attrs import asdict, frozen

from multimodal_rag._extras import require
from multimodal_rag._hashing import sha256_file
from multimodal_rag.embedders.openclip_loading import import_open_clip, offline_reason
from multimodal_rag.errors import InvalidInputError, ModelLoadError

__all__ = [
    "MANIFEST_NAME",
    "FileRole",
    "ModelFile",
    "ModelFolder",
    "fetch_model",
    "read_model_folder",
    "required_roles",
]

#: The manifest's file name in a model folder.
MANIFEST_NAME = "model-manifest.json"
_FORMAT = 1

#: What a file of a model folder is for.
FileRole = Literal["weights", "open_clip_config", "text_config", "tokenizer"]
_ROLES: tuple[FileRole, ...] = ("weights", "open_clip_config", "text_config", "tokenizer")

_TEXT_CONFIG_DIR = "text-config"
_TOKENIZER_DIR = "tokenizer"

#: The files a Hugging Face tokenizer may be made of; a repository holds some of them.
#: ``config.json`` too: without a ``tokenizer_config.json`` (xlm-roberta-base has none)
#: transformers picks the tokenizer class from the model type it names.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "config.json",
    "sentencepiece.bpe.model",
    "spiece.model",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
)
#: At least one of these: the vocabulary itself.
_VOCABULARY_FILES = frozenset(_TOKENIZER_FILES) - {
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "config.json",
}

#: The keys of a pretrained tag that say how images are prepared.
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode", "fill_color")

_USER = "fetch_model"


@frozen(kw_only=True)
class ModelFile:
    """One file of a model folder.

    Attributes:
        path: Its path in the folder, with ``/`` separators.
        role: What it is for: ``"weights"``, ``"open_clip_config"``, ``"text_config"``
            (the text tower's transformer configuration) or ``"tokenizer"``.
        sha256: Hex SHA-256 of its bytes.
        size: Its size in bytes.
        source: Where it was downloaded from (a URL), or ``"open_clip"`` for the
            configuration written from the installed ``open_clip``.
    """

    path: str
    role: FileRole
    sha256: str
    size: int
    source: str


@frozen(kw_only=True)
class ModelFolder:
    """A folder made by `fetch_model`, as its manifest describes it.

    Attributes:
        path: The folder, absolute.
        model: The ``open_clip`` architecture (``"xlm-roberta-base-ViT-B-32"``).
        pretrained: The tag of its weights (``"laion5b_s13b_b90k"``).
        open_clip_version: The ``open_clip`` version that fetched it.
        files: Every file, in the manifest's order.
    """

    path: Path
    model: str
    pretrained: str
    open_clip_version: str
    files: tuple[ModelFile, ...]

    def of_role(self, role: FileRole) -> tuple[ModelFile, ...]:
        """The files with that role."""
        return tuple(file for file in self.files if file.role == role)

    @property
    def weights(self) -> ModelFile:
        """The weights file."""
        return self.of_role("weights")[0]

    @property
    def text_config(self) -> Path | None:
        """The folder of the text tower's ``config.json``, for models with a transformer text tower."""
        return self.path / _TEXT_CONFIG_DIR if self.of_role("text_config") else None

    @property
    def tokenizer(self) -> Path | None:
        """The tokenizer's folder, for models with a Hugging Face tokenizer."""
        return self.path / _TOKENIZER_DIR if self.of_role("tokenizer") else None

    def model_config(self) -> dict[str, Any]:
        """The architecture as written in ``open_clip_config.json``."""
        config = _read_json(self.path / "open_clip_config.json", self.path)
        model_cfg = config.get("model_cfg")
        if not isinstance(model_cfg, dict):
            raise ModelLoadError(
                f"model folder {str(self.path)!r}: open_clip_config.json has no 'model_cfg'; "
                "fetch the model again"
            )
        return cast("dict[str, Any]", model_cfg)


def fetch_model(
    model: str,
    to: str | os.PathLike[str],
    *,
    pretrained: str | None = None,
    download_root: str | os.PathLike[str] | None = None,
) -> ModelFolder:
    """Download everything ``open_clip`` model ``model`` needs into the new folder ``to``.

    The weights of tag ``pretrained``, the text tower's transformer configuration and the
    tokenizer's files, with a manifest (``model-manifest.json``). Downloads go through the
    Hugging Face hub cache (or ``download_root``) first, so a second fetch reuses them. The
    folder appears only once complete: a failed fetch leaves nothing at ``to``.

    Args:
        model: An ``open_clip`` architecture (``open_clip.list_models()``), such as
            ``"xlm-roberta-base-ViT-B-32"``.
        to: The folder to create; it must not exist, or be empty.
        pretrained: The weights' tag (``open_clip.list_pretrained_tags_by_model(model)``);
            may be left out when the model has a single tag.
        download_root: The download cache (default: the Hugging Face hub's, or
            ``~/.cache/clip`` for files open_clip downloads by URL).

    Returns:
        The folder, as `read_model_folder` reads it.

    Raises:
        ModelLoadError: Unknown model or tag, a model without pretrained weights, or a
            download that failed (the message names the model and the file).
        InvalidInputError: ``to`` exists and is not an empty folder.
        MissingDependencyError: ``open-clip-torch`` or ``transformers`` is not installed.
    """
    open_clip = import_open_clip()
    require("transformers", user=_USER, extra="open-clip")
    config = open_clip.get_model_config(model)
    if config is None:
        raise ModelLoadError(
            f"unknown open_clip model {model!r}; open_clip.list_models() lists the architectures "
            "and open_clip.list_pretrained() those with weights (for example "
            "xlm-roberta-base-ViT-B-32, ViT-B-16-SigLIP2)"
        )
    tags = list(open_clip.list_pretrained_tags_by_model(model))
    if pretrained is None:
        if len(tags) != 1:
            raise ModelLoadError(
                f"open_clip model {model!r} has "
                + (
                    f"several pretrained tags ({', '.join(tags)}): pass pretrained= one of them"
                    if tags
                    else "no pretrained weights to fetch"
                )
            )
        pretrained = str(tags[0])
    tag = dict(open_clip.get_pretrained_cfg(model, pretrained))
    if not tag:
        raise ModelLoadError(
            f"unknown pretrained tag {pretrained!r} for open_clip model {model!r}; its tags: "
            f"{', '.join(tags) or 'none'}"
        )
    target = Path(to).expanduser().resolve()
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        raise InvalidInputError(
            f"cannot fetch open_clip model {model!r} into {str(target)!r}: it exists and is not "
            "an empty folder; choose a new folder"
        )
    offline = offline_reason(tag)
    if offline is not None:
        raise ModelLoadError(
            f"cannot fetch open_clip model {model!r} with pretrained {pretrained!r}: "
            f"{offline.replace('them', 'its files')}; fetch-model needs the network (run it on a "
            "machine with internet, then copy the folder)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    cache = str(Path(download_root).expanduser()) if download_root is not None else None
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        work.chmod(0o755)  # mkdtemp's folder is private; a model folder is for sharing
        fetcher = _Fetcher(model=model, pretrained=pretrained, folder=work, cache=cache)
        files = fetcher.fetch(open_clip, config, tag)
        _check_loads(work, config, model)
        manifest = {
            "format": _FORMAT,
            "model": model,
            "pretrained": pretrained,
            "open_clip_version": str(open_clip.__version__),
            "files": [asdict(file) for file in files],
        }
        (work / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            target.rmdir()  # empty, checked above
        work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return read_model_folder(target)


def read_model_folder(path: str | os.PathLike[str], *, check_hashes: bool = True) -> ModelFolder:
    """The model folder at ``path``, after checking that every file its manifest names is there.

    Args:
        path: A folder made by `fetch_model`.
        check_hashes: Also check each file's SHA-256, but for the weights' (the loader
            hashes them anyway, and they may be gigabytes).

    Raises:
        ModelLoadError: Not a model folder, or one that is incomplete (the message names
            the missing or changed file).
    """
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {str(folder)!r} is not a directory")
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ModelLoadError(
            f"{str(folder)!r} is not a model folder: it has no {MANIFEST_NAME}; make one with "
            "`multimodal-rag fetch-model MODEL --to FOLDER` on a machine with internet"
        )
    manifest = _read_json(manifest_path, folder)
    try:
        if manifest["format"] != _FORMAT:
            raise ModelLoadError(
                f"model folder {str(folder)!r} has format {manifest['format']!r}, which this "
                f"version does not read (it reads {_FORMAT}); fetch the model again"
            )
        files = tuple(
            ModelFile(
                path=str(item["path"]),
                role=_role(item["role"]),
                sha256=str(item["sha256"]),
                size=int(item["size"]),
                source=str(item["source"]),
            )
            for item in manifest["files"]
        )
        result = ModelFolder(
            path=folder,
            model=str(manifest["model"]),
            pretrained=str(manifest["pretrained"]),
            open_clip_version=str(manifest["open_clip_version"]),
            files=files,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"model folder {str(folder)!r}: {MANIFEST_NAME} is malformed ({exc!r}); fetch the "
            "model again"
        ) from exc
    for role in ("weights", "open_clip_config"):
        if not result.of_role(role):
            raise ModelLoadError(
                f"model folder {str(folder)!r}: its manifest lists no {role} file; fetch the "
                "model again"
            )
    for file in files:
        _check_file(folder, file, check_hash=check_hashes and file.role != "weights")
    missing = required_roles(result.model_config()) - {file.role for file in files}
    if missing:
        raise ModelLoadError(
            f"model folder {str(folder)!r} is incomplete: model {result.model!r} needs its "
            f"{' and '.join(sorted(missing))} files, which its manifest does not list; fetch the "
            "model again"
        )
    return result


def required_roles(config: dict[str, Any]) -> set[FileRole]:
    """The roles a model of this ``open_clip`` configuration needs in its folder."""
    text = config.get("text_cfg", {})
    roles: set[FileRole] = {"weights", "open_clip_config"}
    if text.get("hf_model_name"):
        roles.add("text_config")
    if text.get("hf_tokenizer_name"):
        roles.add("tokenizer")
    return roles


# -- fetching ----------------------------------------------------------------------


class _Fetcher:
    """Downloads one model's files into a folder, recording each."""

    def __init__(self, *, model: str, pretrained: str, folder: Path, cache: str | None) -> None:
        self.model = model
        self.pretrained = pretrained
        self.folder = folder
        self.cache = cache
        self.files: list[ModelFile] = []

    def fetch(self, open_clip: Any, config: dict[str, Any], tag: dict[str, Any]) -> list[ModelFile]:
        self._weights(open_clip, tag)
        self._write_config(config, tag)
        text = config.get("text_cfg", {})
        if text.get("hf_model_name"):
            repo = str(text["hf_model_name"])
            source = self._hub_file(repo, "config.json", required=True)
            assert source is not None
            self._add(
                source,
                f"{_TEXT_CONFIG_DIR}/config.json",
                "text_config",
                _hub_url(repo, "config.json"),
            )
        if text.get("hf_tokenizer_name"):
            self._tokenizer(str(text["hf_tokenizer_name"]))
        return self.files

    def _weights(self, open_clip: Any, tag: dict[str, Any]) -> None:
        hub = str(tag.get("hf_hub", ""))
        if hub:
            from multimodal_rag.embedders.openclip_loading import hub_weights_files

            repo, candidates = hub_weights_files(hub)  # as open_clip downloads them
            for candidate in candidates:
                source = self._hub_file(repo, candidate, required=candidate == candidates[-1])
                if source is not None:
                    self._add(source, candidate, "weights", _hub_url(repo, candidate))
                    return
        url = str(tag.get("url", ""))
        if not url:
            raise ModelLoadError(
                f"open_clip has no download for model {self.model!r} with pretrained "
                f"{self.pretrained!r}"
            )
        from open_clip.pretrained import download_pretrained_from_url

        try:
            path = download_pretrained_from_url(url, cache_dir=self.cache)
        except Exception as exc:
            raise self._failed(f"downloading its weights from {url}", exc) from exc
        self._add(Path(path), os.path.basename(url), "weights", url)

    def _write_config(self, config: dict[str, Any], tag: dict[str, Any]) -> None:
        preprocess = {key: tag[key] for key in _PREPROCESS_KEYS if key in tag}
        if tag.get("quick_gelu"):
            # What the tag's weights were trained with, which the architecture leaves off.
            config = {**config, "quick_gelu": True}
        path = self.folder / "open_clip_config.json"
        path.write_text(
            json.dumps({"model_cfg": config, "preprocess_cfg": preprocess}, indent=2) + "\n",
            encoding="utf-8",
        )
        self.files.append(
            ModelFile(
                path=path.name,
                role="open_clip_config",
                sha256=sha256_file(path),
                size=path.stat().st_size,
                source="open_clip",
            )
        )

    def _tokenizer(self, repo: str) -> None:
        found = []
        for name in _TOKENIZER_FILES:
            source = self._hub_file(repo, name, required=False)
            if source is not None:
                self._add(source, f"{_TOKENIZER_DIR}/{name}", "tokenizer", _hub_url(repo, name))
                found.append(name)
        if not _VOCABULARY_FILES & set(found):
            raise ModelLoadError(
                f"cannot fetch open_clip model {self.model!r}: https://huggingface.co/{repo} "
                f"has none of the tokenizer files {', '.join(sorted(_VOCABULARY_FILES))}"
            )

    def _hub_file(self, repo: str, filename: str, *, required: bool) -> Path | None:
        """The file from the hub (through its cache); ``None`` if the repository lacks it."""
        import huggingface_hub
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            return Path(
                huggingface_hub.hf_hub_download(
                    repo_id=repo,
                    filename=filename,
                    cache_dir=self.cache,
                    library_name="open_clip",
                )
            )
        except EntryNotFoundError as exc:
            # The local kind means the hub could not be asked (offline, unreachable).
            if isinstance(exc, LocalEntryNotFoundError) or required:
                raise self._failed(f"downloading {_hub_url(repo, filename)}", exc) from exc
            return None
        except Exception as exc:
            raise self._failed(f"downloading {_hub_url(repo, filename)}", exc) from exc

    def _failed(self, what: str, exc: BaseException) -> ModelLoadError:
        return ModelLoadError(
            f"cannot fetch open_clip model {self.model!r} with pretrained {self.pretrained!r}: "
            f"{what} failed ({type(exc).__name__}: {exc}); fetch-model needs access to "
            "huggingface.co (run it on a machine with internet, then copy the folder)"
        )

    def _add(self, source: Path, relative: str, role: FileRole, origin: str) -> None:
        destination = self.folder / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
        self.files.append(
            ModelFile(
                path=relative,
                role=role,
                sha256=sha256_file(destination),
                size=destination.stat().st_size,
                source=origin,
            )
        )


def _check_loads(folder: Path, config: dict[str, Any], model: str) -> None:
    """Read the fetched configuration and tokenizer as the embedder will, from the folder alone."""
    text = config.get("text_cfg", {})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if text.get("hf_model_name"):
                from transformers import AutoConfig

                AutoConfig.from_pretrained(str(folder / _TEXT_CONFIG_DIR), local_files_only=True)
            if text.get("hf_tokenizer_name"):
                from open_clip.tokenizer import HFTokenizer

                HFTokenizer(
                    str(folder / _TOKENIZER_DIR),
                    context_length=int(text.get("context_length", 77)),
                    tokenizer_mode=text.get("tokenizer_mode"),
                    local_files_only=True,
                    **text.get("tokenizer_kwargs", {}),
                )
    except Exception as exc:
        raise ModelLoadError(
            f"the files fetched for open_clip model {model!r} do not load offline: {exc}"
        ) from exc


def _hub_url(repo: str, filename: str) -> str:
    return f"https://huggingface.co/{repo}/resolve/main/{filename}"


# -- reading -----------------------------------------------------------------------


def _read_json(path: Path, folder: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(
            f"model folder {str(folder)!r} is incomplete: {path.name} is missing; copy the "
            "whole folder again"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"model folder {str(folder)!r}: cannot read {path.name} ({exc})"
        ) from exc
    if not isinstance(value, dict):
        raise ModelLoadError(f"model folder {str(folder)!r}: {path.name} is not a JSON object")
    return cast("dict[str, Any]", value)


def _role(value: object) -> FileRole:
    for role in _ROLES:
        if value == role:
            return role
    raise ValueError(f"unknown file role {value!r}")


def _check_file(folder: Path, file: ModelFile, *, check_hash: bool) -> None:
    path = folder / file.path
    # A manifest names files inside its folder only: it may come from someone else.
    if ".." in Path(file.path).parts or Path(file.path).is_absolute():
        raise ModelLoadError(
            f"model folder {str(folder)!r}: its manifest names {file.path!r}, outside the folder"
        )
    if not path.is_file():
        raise ModelLoadError(
            f"model folder {str(folder)!r} is incomplete: {file.path} ({file.role}) is missing; "
            "copy the whole folder again"
        )
    size = path.stat().st_size
    if size != file.size:
        raise ModelLoadError(
            f"model folder {str(folder)!r} is incomplete: {file.path} ({file.role}) has "
            f"{size} bytes, its manifest says {file.size}; copy the whole folder again"
        )
    if check_hash and sha256_file(path) != file.sha256:
        raise ModelLoadError(
            f"model folder {str(folder)!r}: {file.path} ({file.role}) does not match the "
            "SHA-256 in its manifest; copy the whole folder again"
        )
