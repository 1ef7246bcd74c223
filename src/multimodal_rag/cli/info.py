"""``info``: what a knowledge base is made of, from its manifest alone."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import click

from multimodal_rag.cli import output
from multimodal_rag.cli.app import JSON_OPTION, KB_ARGUMENT

__all__ = ["info"]


@click.command()
@KB_ARGUMENT
@JSON_OPTION
def info(kb: Path, as_json: bool) -> None:
    """Show what a knowledge base is made of: model, index, counts, size, format.

    Reads only the manifest, so it works even where the model's weights are not available.
    """
    from multimodal_rag._kb.manifest import read_manifest

    manifest = read_manifest(kb)
    output.note_random_weights(manifest.embedder.random_weights)
    size_bytes = _directory_size(kb)
    if as_json:
        output.print_json(output.info_json(kb, manifest, size_bytes=size_bytes))
    else:
        output.print_info(kb, manifest, size_bytes=size_bytes)


def _directory_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed while we walked
                total += os.lstat(os.path.join(root, name)).st_size
    return total
