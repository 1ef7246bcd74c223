"""``fit``: fit an adapter to a knowledge base's own pairs (kept only when it helps), or remove it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from multimodal_rag.cli import output
from multimodal_rag.cli.app import (
    EXIT_FAILURE,
    JSON_OPTION,
    KB_ARGUMENT,
    Settings,
    open_kb,
    weights_options,
)

if TYPE_CHECKING:
    from multimodal_rag.types import AdapterKind

__all__ = ["fit"]


@click.command()
@KB_ARGUMENT
@click.option(
    "--kind",
    type=click.Choice(["low-rank", "linear"]),
    default="low-rank",
    show_default=True,
    help="low-rank: a small residual (few parameters, the safe choice); linear: a full matrix.",
)
@click.option("--rank", type=click.IntRange(min=1), default=32, show_default=True, help="Rank of a low-rank adapter.")
@click.option(
    "--pairs",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE.jsonl",
    help='Extra training pairs, one {"image": id or path, "text": "..."} per line (paths relative to the file).',
)
@click.option("--no-edits", is_flag=True, help="Train without edited-image pairs (they still judge the adapter).")
@click.option(
    "--holdout",
    type=click.FloatRange(min=0.0, max=0.9, min_open=True),
    default=0.2,
    show_default=True,
    help="Share of the records held out to judge the adapter.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Makes the fit repeatable.")
@click.option("--remove", is_flag=True, help="Remove the adapter instead: the embedder's own vectors come back.")
@click.option("--progress/--no-progress", default=None, help="Show progress bars (default: on a terminal).")
@weights_options
@JSON_OPTION
@click.pass_obj
def fit(
    settings: Settings,
    kb: Path,
    kind: AdapterKind,
    rank: int,
    pairs: Path | None,
    no_edits: bool,
    holdout: float,
    seed: int,
    remove: bool,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Fit an adapter that maps the model's vectors to this catalogue's descriptions.

    Trains on each image with its description (and --pairs), holds out a share of the
    records, and keeps the adapter only when, on them, text->image recall@5 goes up and
    edited images still find their originals (image->image recall at most 0.01 lower).
    The report is printed and saved under KB/adapter-reports/ either way. Exits with
    status 1 when the adapter was not kept (the knowledge base is then unchanged).
    """
    with open_kb(kb, settings, read_only=False) as rag:
        if remove:
            removed = rag.remove_adapter()
            if as_json:
                output.print_json({"removed": removed, "fingerprint": rag.fingerprint})
            else:
                output.print_adapter_removed(kb, removed)
            return
        report = rag.fit_adapter(
            kind=kind, rank=rank, pairs=pairs, edits=not no_edits, holdout=holdout, seed=seed, progress=progress
        )
        fingerprint = rag.fingerprint
    if as_json:
        output.print_json({**report.to_dict(), "fingerprint": fingerprint})
    else:
        output.print_adapter_report(report)
    if not report.kept:
        click.get_current_context().exit(EXIT_FAILURE)
