"""``ocr`` and ``edit-text``: read the text in a knowledge base's images, and correct it by hand."""

from __future__ import annotations

from pathlib import Path

import click

from multimodal_rag.cli import output
from multimodal_rag.cli.app import JSON_OPTION, KB_ARGUMENT, Settings, committing, weights_options

__all__ = ["edit_text", "ocr"]


@click.command()
@KB_ARGUMENT
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Images read per batch.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr (default: on a terminal).",
)
@weights_options
@JSON_OPTION
@click.pass_obj
def ocr(
    settings: Settings, kb: Path, batch_size: int, progress: bool | None, as_json: bool
) -> None:
    """Read the text in every image that has none yet, and read it in the images added later.

    Nothing is embedded again. Each batch is committed as it is read, so an interrupted run
    goes on where it stopped. Needs the ocr extra: pip install 'multimodal-rag[ocr]'.
    """
    with committing(kb, settings) as rag:
        result = rag.read_text(batch_size=batch_size, progress=progress)
        info = rag.ocr_info
    if as_json:
        output.print_json(
            {"kb": str(kb), **result.to_dict(), "with_text": info["with_text"], "total": len(rag)}
        )
    else:
        output.print_read_text(kb, result, info)


@click.command("edit-text")
@KB_ARGUMENT
@click.argument("id")
@click.argument("text", required=False)
@click.option("--remove", is_flag=True, help="Remove the text read in the image instead.")
@weights_options
@JSON_OPTION
@click.pass_obj
def edit_text(
    settings: Settings, kb: Path, id: str, text: str | None, remove: bool, as_json: bool
) -> None:
    """Set the text read in image ID (an id or unique id prefix) to TEXT, one line per line.

    With --remove the text is removed; a knowledge base that reads text reads it again on
    `ocr` or `repair` (set TEXT to "" to keep it empty instead).
    """
    from multimodal_rag.cli.edit import resolve_ids

    if (text is None) == (not remove):
        raise click.UsageError("give TEXT or --remove (not both)")
    with committing(kb, settings) as rag:
        (resolved,), _ = resolve_ids(rag, [id], missing_ok=False)
        record = rag.edit_text(resolved, None if remove else text)
    if as_json:
        output.print_json(output.record_json(record))
    else:
        click.echo(
            f"{record.id}: {'(no text read)' if record.ocr is None else record.ocr.text or '(no text)'}"
        )
