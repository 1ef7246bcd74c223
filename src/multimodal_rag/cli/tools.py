"""Tools that need no knowledge base: ``random-checkpoint``, ``fetch-model`` and ``completion``."""

from __future__ import annotations

from pathlib import Path

import click

from multimodal_rag.cli import output
from multimodal_rag.cli.app import JSON_OPTION

__all__ = ["completion", "fetch_model", "random_checkpoint"]


@click.command("random-checkpoint")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@click.option("--force", is_flag=True, help="Overwrite the file if it exists.")
def random_checkpoint(path: Path, seed: int, force: bool) -> None:
    """Write a small CLIP checkpoint with RANDOM weights to PATH, for trying things offline.

    Every command works with it (index --checkpoint PATH), but its search results
    and answers are meaningless: use a real model for real retrieval.
    """
    from multimodal_rag._random_checkpoint import make_random_clip_checkpoint

    if path.exists() and not force:
        output.print_checkpoint_kept(path)
        return
    make_random_clip_checkpoint(path, seed=seed)
    output.print_checkpoint_written(path, seed=seed)


@click.command("fetch-model")
@click.argument("model")
@click.option(
    "--to",
    "to",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to create (it must not exist, or be empty).",
)
@click.option(
    "--pretrained",
    default=None,
    help="The weights' tag (e.g. laion5b_s13b_b90k); may be left out when MODEL has only one.",
)
@click.option(
    "--download-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Download cache (default: the Hugging Face hub's).",
)
@JSON_OPTION
def fetch_model(
    model: str, to: Path, pretrained: str | None, download_root: Path | None, as_json: bool
) -> None:
    """Download everything open_clip model MODEL needs into one folder, to use it offline.

    The weights, the text tower's transformer config and the tokenizer's files (which
    open_clip otherwise fetches from the Hugging Face hub while loading), with a manifest
    of their SHA-256. Copy the folder to a machine without internet and give it as
    --checkpoint FOLDER to `index`: nothing is downloaded there.
    """
    from multimodal_rag.embedders.model_folder import fetch_model as fetch

    folder = fetch(model, to, pretrained=pretrained, download_root=download_root)
    if as_json:
        output.print_json(output.model_folder_json(folder))
    else:
        output.print_model_folder(folder)


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the script that completes commands, options and paths in SHELL.

    \b
    bash:  eval "$(multimodal-rag completion bash)"   (in ~/.bashrc)
    zsh:   eval "$(multimodal-rag completion zsh)"    (in ~/.zshrc)
    fish:  multimodal-rag completion fish > ~/.config/fish/completions/multimodal-rag.fish
    """
    from click.shell_completion import get_completion_class

    root = ctx.find_root()
    completer = get_completion_class(shell)
    assert completer is not None  # click knows all three
    # The variable click's completion reads: _<PROG>_COMPLETE, the program name upper-cased.
    click.echo(completer(root.command, {}, "multimodal-rag", "_MULTIMODAL_RAG_COMPLETE").source())
