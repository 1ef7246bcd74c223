"""``eval``: measure retrieval on a knowledge base, read-only, or compare two saved runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from multimodal_rag.cli import output
from multimodal_rag.cli.app import JSON_OPTION, CommandFailed, Settings, open_kb, weights_options

if TYPE_CHECKING:
    from multimodal_rag.evaluation.report import EvaluationReport
    from multimodal_rag.types import Fusion, SearchMode

__all__ = ["eval_"]

#: ``--edits`` value that asks no edited-image queries.
_NO_EDITS = "none"
#: ``--sample`` value that uses every image.
_ALL = "all"
#: Options that shape a run, so meaningless with ``--compare``.
_RUN_OPTIONS = ("queries", "edits", "negatives", "sample", "seed", "k", "keep", "mode", "fusion", "query_ocr", "plot", "progress")


def _parse_edits(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, ...] | None:
    """``crop,jpeg`` as a tuple of edit kinds; ``none`` as none; unset as ``None`` (all)."""
    if value is None:
        return None
    if value.strip().lower() == _NO_EDITS:
        return ()
    from multimodal_rag.evaluation.edits import EDIT_KINDS

    kinds = tuple(part.strip() for part in value.split(","))
    unknown = [kind for kind in kinds if kind not in EDIT_KINDS]
    if unknown or not kinds:
        raise click.BadParameter(
            f"unknown edit kind(s) {', '.join(repr(k) for k in unknown)}; "
            f"the kinds are {', '.join(EDIT_KINDS)} (or {_NO_EDITS})"
        )
    return tuple(dict.fromkeys(kinds))  # in the order given, once each


def _parse_sample(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    """A whole number of at least 1, or ``all`` (``None``: every image)."""
    if value.strip().lower() == _ALL:
        return None
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a whole number nor {_ALL!r}") from None
    if number < 1:
        raise click.BadParameter(f"{number} is less than 1 (use {_ALL!r} for every image)")
    return number


@click.command("eval")
@click.argument("kb", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--queries",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='Labelled queries, JSON Lines: {"query": TEXT, "expected": [ID or image path, ...]} '
    'or {"image": PATH, "expected": [...]}.',
)
@click.option(
    "--edits",
    callback=_parse_edits,
    metavar="KIND,...",
    help="Edits that make queries from the knowledge base's own images, comma-separated "
    "(default: every kind; 'none' for none). An unknown kind lists them.",
)
@click.option(
    "--negatives",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of images with no right answer in the knowledge base, for the similarity gate "
    "(default: held-out edited images).",
)
@click.option(
    "--sample",
    callback=_parse_sample,
    metavar="N|all",
    default="200",
    show_default=True,
    help="How many knowledge-base images to make edited queries from ('all' for every one).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the sample and the edits."
)
@click.option(
    "-k",
    "--k",
    "k",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Matches retrieved per query.",
)
@click.option(
    "--keep",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.95,
    show_default=True,
    help="Share of answerable queries the recommended min_score keeps.",
)
@click.option(
    "--mode",
    type=click.Choice(["vector", "lexical", "hybrid"]),
    default="vector",
    show_default=True,
    help="vector: every query by its vector; lexical, hybrid: labelled and text queries as `search` "
    "searches them, query photos read for their text (edited images stay vector searches).",
)
@click.option(
    "--fusion",
    type=click.Choice(["rrf", "weighted"]),
    default=None,
    help="How hybrid mode fuses its channels (default: as `search`: rrf, weighted for a query "
    "photo whose text was read).",
)
@click.option(
    "--query-ocr/--no-query-ocr",
    default=None,
    help="Read the text in labelled query photos and search its words too, as `search` does "
    "(default: when the knowledge base reads text; --query-ocr also where it does not). "
    "Needs --mode lexical or hybrid.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a PNG: recall@k curves and the top-1 score histograms (needs matplotlib).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr (default: on a terminal).",
)
@click.option(
    "--compare",
    nargs=2,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="A.json B.json",
    help="Compare two runs saved with --json instead of evaluating (no KB then).",
)
@weights_options
@JSON_OPTION
@click.pass_context
def eval_(
    ctx: click.Context,
    kb: Path | None,
    queries: Path | None,
    edits: tuple[str, ...] | None,
    negatives: Path | None,
    sample: int | None,
    seed: int,
    k: int,
    keep: float,
    mode: SearchMode,  # click.Choice allows only these
    fusion: Fusion | None,
    query_ocr: bool | None,
    plot: Path | None,
    progress: bool | None,
    compare: tuple[Path, Path] | None,
    as_json: bool,
) -> None:
    """Measure how well KB finds the right images: recall, MRR, nDCG, the similarity gate, latency.

    Queries are the knowledge base's own images, edited (cropped, re-encoded, rotated, on
    clutter...), its descriptions, and the labelled queries of --queries. Opens KB read-only.
    With --compare A.json B.json, shows what changed between two runs saved with --json.
    """
    if compare:
        if kb is not None:
            raise click.UsageError("--compare takes two saved runs, not a knowledge base")
        given = [
            f"--{name}"
            for name in _RUN_OPTIONS
            if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT
        ]
        if given:
            raise click.UsageError(f"{', '.join(given)} cannot be combined with --compare")
        _compare(compare, as_json=as_json)
        return
    if kb is None:
        raise click.UsageError("give a knowledge base KB, or --compare A.json B.json")
    if query_ocr and mode == "vector":
        raise click.UsageError("--query-ocr needs --mode lexical or hybrid: a vector evaluation searches by the picture alone")

    if plot is not None:  # before the evaluation, not after it has run for minutes
        from multimodal_rag._extras import check_installed

        check_installed("matplotlib", user="multimodal-rag eval --plot", extra="eval")
    settings: Settings = ctx.obj
    with open_kb(kb, settings, read_only=True) as rag:
        report = rag.evaluate(
            queries=queries,
            edits=edits,
            negatives=negatives,
            sample=sample,
            seed=seed,
            k=k,
            keep=keep,
            mode=mode,
            fusion=fusion,
            query_ocr=query_ocr,
            progress=progress,
        )
    if plot is not None:
        _plot(report, plot)
    if as_json:
        output.print_json(output.evaluation_json(report))
    else:
        output.print_evaluation(report)
        if plot is not None:
            output.print_plot_written(plot)


def _plot(report: EvaluationReport, path: Path) -> None:
    from multimodal_rag.evaluation.render import plot_report

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        plot_report(report, path)
    except OSError as exc:
        raise CommandFailed(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc


def _load(path: Path) -> EvaluationReport:
    from multimodal_rag.evaluation.report import EvaluationReport

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return EvaluationReport.from_dict(data)
    except OSError as exc:
        raise CommandFailed(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        # ValueError covers bad JSON and text that is not UTF-8.
        raise CommandFailed(
            f"{str(path)!r} is not a report written by `multimodal-rag eval --json`: {exc}"
        ) from exc


def _compare(paths: tuple[Path, Path], *, as_json: bool) -> None:
    first, second = paths
    a, b = _load(first), _load(second)
    names = (str(first), str(second))
    if names[0] == names[1]:
        names = (f"{names[0]} (a)", f"{names[1]} (b)")
    if as_json:
        output.print_json(output.comparison_json(a, b, names))
    else:
        output.print_comparison(a, b, names)
