"""Tools that need no knowledge base: ``random-checkpoint`` and ``completion``."""

from __future__ import annotations

from pathlib import Path

import click

from multimodal_rag.cli import output

__all__ = ["completion", "random_checkpoint"]


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
