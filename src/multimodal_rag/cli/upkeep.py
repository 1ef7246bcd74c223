"""``verify``, ``repair`` and ``migrate``: check a knowledge base, mend it, or copy it to other stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from multimodal_rag.cli import output
from multimodal_rag.cli.app import (
    EXIT_FAILURE,
    JSON_OPTION,
    KB_ARGUMENT,
    Settings,
    embedder_with_weights,
    open_kb,
    parse_key_values,
    weights_options,
)

__all__ = ["migrate", "repair", "verify"]


@click.command()
@KB_ARGUMENT
@weights_options
@JSON_OPTION
@click.pass_obj
def verify(settings: Settings, kb: Path, as_json: bool) -> None:
    """Check that vectors, descriptions, image files and checksums agree.

    Exits with status 1, listing every problem, when something is wrong.
    """
    # Salvage: a file that fails its checksum is listed as a problem rather than refused.
    report = open_kb(kb, settings, read_only=True, salvage=True).verify()
    if as_json:
        output.print_json(output.verification_json(report))
    else:
        output.print_verification(kb, report)
    if not report.ok:
        click.get_current_context().exit(EXIT_FAILURE)


@click.command()
@KB_ARGUMENT
@weights_options
@JSON_OPTION
@click.pass_obj
def repair(settings: Settings, kb: Path, as_json: bool) -> None:
    """Rebuild what `verify` finds broken, without dropping any description.

    Damaged files are copied into KB/damaged/ first, and every record that can still be
    read (from the damaged file, the snapshot before it, or the journal) is kept.
    Exits with status 1 when records or changes could not be recovered, or problems
    remain (they are listed).
    """
    with open_kb(kb, settings, read_only=False, salvage=True) as rag:
        report = rag.repair()
    if as_json:
        output.print_json(output.repair_json(report))
    else:
        output.print_repair(kb, report)
    if not report.ok:
        click.get_current_context().exit(EXIT_FAILURE)


@click.command()
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--vector-store",
    default="faiss-flat",
    show_default=True,
    metavar="KIND",
    help="Vector store of the copy: faiss-flat, faiss-hnsw, faiss-ivf, hnswlib, milvus, ...",
)
@click.option(
    "--description-store",
    default="sqlite",
    show_default=True,
    metavar="KIND",
    help="Description store of the copy: sqlite, jsonl, postgres, ...",
)
@click.option(
    "--vector-option",
    "vector_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Setting of the new vector store, e.g. uri=http://milvus:19530 or collection=products "
    "(repeatable; VALUE is read as JSON when it parses).",
)
@click.option(
    "--description-option",
    "description_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Setting of the new description store, e.g. table=products (repeatable).",
)
@click.option(
    "--sample",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Stored vectors searched in both knowledge bases to compare them afterwards.",
)
@weights_options
@JSON_OPTION
@click.pass_obj
def migrate(
    settings: Settings,
    source: Path,
    target: Path,
    vector_store: str,
    description_store: str,
    vector_options: tuple[str, ...],
    description_options: tuple[str, ...],
    sample: int,
    as_json: bool,
) -> None:
    """Copy the knowledge base SOURCE into a new one at TARGET with other stores.

    Nothing is re-embedded. Milvus and PostgreSQL are found through $MILVUS_URI and
    $DATABASE_URL (or uri=/dsn= options); their passwords are never written to TARGET.
    Exits with status 1 when the copy's counts or searches differ from the source's.
    """
    from multimodal_rag._kb.manifest import read_manifest
    from multimodal_rag._migrate import migrate as copy_knowledge_base
    from multimodal_rag._registry import resolve

    # A kind alone is built by the library; settings mean building the store here.
    vs: Any = vector_store
    ds: Any = description_store
    if vector_options:
        dim = read_manifest(source).embedder.dim
        vs = resolve("vector_store", vector_store, allow_modules=settings.allow_modules)(
            dim, **parse_key_values(vector_options)
        )
    if description_options:
        ds = resolve("description_store", description_store, allow_modules=settings.allow_modules)(
            **parse_key_values(description_options)
        )
    report = copy_knowledge_base(
        source,
        target,
        vector_store=vs,
        description_store=ds,
        embedder=embedder_with_weights(source, settings),
        allow_modules=settings.allow_modules,
        sample=sample,
    )
    if as_json:
        output.print_json(output.migration_json(report))
    else:
        output.print_migration(report)
