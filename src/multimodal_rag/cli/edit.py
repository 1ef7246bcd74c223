"""``remove`` and ``describe``: change a knowledge base's images and descriptions by id."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from multimodal_rag.cli import output
from multimodal_rag.cli.app import JSON_OPTION, KB_ARGUMENT, Settings, committing, weights_options

if TYPE_CHECKING:
    from multimodal_rag._rag import MultimodalRAG

__all__ = ["describe", "remove"]


@click.command()
@KB_ARGUMENT
@click.argument("ids", nargs=-1, required=True)
@click.option("--missing-ok", is_flag=True, help="Ignore ids that are not in the knowledge base.")
@weights_options
@JSON_OPTION
@click.pass_obj
def remove(
    settings: Settings, kb: Path, ids: tuple[str, ...], missing_ok: bool, as_json: bool
) -> None:
    """Remove images (their vectors and descriptions) by id or unique id prefix.

    Nothing is removed when an id is unknown, unless --missing-ok is given.
    """
    with committing(kb, settings) as rag:
        found, missing = resolve_ids(rag, ids, missing_ok=missing_ok)
        removed = rag.remove(found)
        total = len(rag)
    if as_json:
        output.print_json(output.removal_json(found, missing, total))
    else:
        output.print_removal(removed, missing, total)


@click.command()
@KB_ARGUMENT
@click.argument("id")
@click.argument("text")
@weights_options
@JSON_OPTION
@click.pass_obj
def describe(settings: Settings, kb: Path, id: str, text: str, as_json: bool) -> None:
    """Set the description of image ID (an id or unique id prefix) to TEXT, without re-embedding."""
    with committing(kb, settings) as rag:
        (resolved,), _ = resolve_ids(rag, [id], missing_ok=False)
        record = rag.describe(resolved, text)
    if as_json:
        output.print_json(output.record_json(record))
    else:
        output.print_record(record)


def resolve_ids(
    rag: MultimodalRAG, wanted: Iterable[str], *, missing_ok: bool
) -> tuple[list[str], list[str]]:
    """Full ids for ids or unique prefixes (at least 4 characters), and the ones not found."""
    from multimodal_rag.errors import InvalidInputError, NotFoundError

    every: list[str] | None = None
    found: list[str] = []
    missing: list[str] = []
    for id_ in wanted:
        if id_ in rag:
            found.append(id_)
            continue
        if every is None:
            every = rag.ids()
        matches = [known for known in every if known.startswith(id_)] if len(id_) >= 4 else []
        if len(matches) > 1:
            raise InvalidInputError(
                f"id prefix {id_!r} is ambiguous: it matches {len(matches)} images"
            )
        if matches:
            found.append(matches[0])
        else:
            missing.append(id_)
    if missing and not missing_ok:
        raise NotFoundError(
            f"no image with id {', '.join(map(repr, missing))} in the knowledge base; "
            "nothing was changed"
        )
    return list(dict.fromkeys(found)), missing
