"""The ``multimodal-rag`` command line: build, search, inspect, repair and move knowledge bases.

Every command takes the knowledge-base directory first. Commands that only read
(``search``, ``ask``, ``show``, ``info``, ``verify``) open it read-only, so they run
while another process is indexing. ``--json`` output is a stable interface, documented in
``docs/cli.md`` of the source repository.

Exit status: 0 when the command did what was asked, 1 when the operation failed
(the reason on stderr, with a traceback only under ``--debug``), 2 for bad usage
(unknown option, missing argument, a file that does not exist).

Modules: `app` holds the click group, its global options and
the error mapping; `output` prints every result, as text or
JSON; each command lives with its kind: ``build`` (index), ``query`` (search, show,
ask), ``info``, ``edit`` (remove, describe), ``reading`` (ocr, edit-text), ``upkeep`` (verify, repair, migrate), ``evaluate``
(eval), ``fit`` (fit an adapter, or remove it), ``serve`` (serve, over HTTP) and ``tools`` (random-checkpoint, fetch-model, completion).
"""

from __future__ import annotations

from multimodal_rag.cli import (
    build,
    edit,
    evaluate,
    fit,
    info,
    query,
    reading,
    serve,
    tools,
    upkeep,
)
from multimodal_rag.cli.app import EPILOG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, cli, main
from multimodal_rag.cli.build import INDEX_KINDS

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "INDEX_KINDS", "cli", "main"]

for _command in (
    build.index,
    query.search,
    query.show,
    query.ask,
    info.info,
    edit.remove,
    edit.describe,
    reading.edit_text,
    reading.ocr,
    upkeep.verify,
    upkeep.repair,
    upkeep.migrate,
    evaluate.eval_,
    fit.fit,
    serve.serve,
    tools.random_checkpoint,
    tools.fetch_model,
    tools.completion,
):
    _command.epilog = _command.epilog or EPILOG
    cli.add_command(_command)
del _command
