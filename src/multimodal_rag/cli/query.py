"""``search``, ``show`` and ``ask``: query a knowledge base, read-only."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from multimodal_rag._registry import BUILTINS, resolve
from multimodal_rag.cli import output
from multimodal_rag.cli.app import (
    IMAGE,
    JSON_OPTION,
    KB_ARGUMENT,
    CommandFailed,
    Settings,
    cli_message,
    open_kb,
    parse_key_values,
    weights_options,
)

if TYPE_CHECKING:
    from multimodal_rag.protocols import Answerer
    from multimodal_rag.types import Fusion, SearchMode

__all__ = ["answerer_from_options", "answerer_options", "ask", "search", "show"]

#: ``--answerer`` choice that lets the knowledge base pick one (and say why).
_AUTO = "auto"


def _search_options(command: Any) -> Any:
    """--mode, --fusion, --filter and --rerank: how search finds its matches."""
    return _answer_search_options(
        click.option(
            "--fusion",
            type=click.Choice(["rrf", "weighted"]),
            default=None,
            help="How hybrid mode fuses its rankings (default: rrf; weighted when the text in "
            "--image was read).",
        )(command)
    )


def answerer_options(command: Any) -> Any:
    """--answerer, --answer-model and --min-score, which ask and serve share."""
    for option in reversed(
        [
            click.option(
                "--answerer",
                "answerer_kind",
                type=click.Choice([_AUTO, *sorted(BUILTINS["answerer"])]),
                default=_AUTO,
                show_default=True,
                help="auto: openai if OPENAI_API_KEY is set, else extractive (offline, quotes the best match)",
            ),
            click.option(
                "--answer-model",
                default=None,
                metavar="NAME",
                help="Model of the openai answerer, e.g. gpt-4o.",
            ),
            click.option(
                "--min-score",
                type=click.FloatRange(-1.0, 1.0),
                default=None,
                metavar="SIMILARITY",
                help="Similarity gate: matches below it are not used, and when none is left the answer "
                "says so without asking a model (`multimodal-rag eval` recommends a value).",
            ),
        ]
    ):
        command = option(command)
    return command


def answerer_from_options(
    answerer_kind: str, answer_model: str | None, min_score: float | None
) -> tuple[str, Answerer | None, str | None]:
    """The kind `answerer_options` chose, its answerer, and for auto why it was chosen.

    Raises:
        click.UsageError: --answer-model with the extractive answerer.
    """
    if answer_model is not None and answerer_kind == "extractive":
        raise click.UsageError("--answer-model applies to the openai answerer")
    kind = "openai" if answer_model is not None else answerer_kind
    return (kind, *_build_answerer(kind, answer_model, min_score))


def _answer_search_options(command: Any) -> Any:
    """--mode, --filter, --rerank and --query-ocr, which search and ask share."""
    for option in reversed(
        [
            click.option(
                "--mode",
                type=click.Choice(["vector", "lexical", "hybrid"]),
                default=None,
                help="vector: CLIP vectors; lexical: the descriptions' words (BM25); hybrid: both, fused "
                "(default for a text when the knowledge base has a full-text index).",
            ),
            click.option(
                "--filter",
                "filter_json",
                metavar="JSON",
                help='Metadata conditions, e.g. \'{"price": {"$lt": 100}, "category": {"$in": ["a", "b"]}}\'.',
            ),
            click.option(
                "--rerank",
                "rerank_model",
                metavar="MODEL",
                default=None,
                help="Reorder the best candidates with a vision model (OpenAI-compatible, e.g. gpt-4o-mini).",
            ),
            click.option(
                "--query-ocr/--no-query-ocr",
                default=None,
                help="Read the text in --image and search its words too (default: when the knowledge "
                "base reads text and --mode is not vector).",
            ),
        ]
    ):
        command = option(command)
    return command


def _filter(where: tuple[str, ...], filter_json: str | None) -> dict[str, Any] | None:
    """--where KEY=VALUE pairs and a --filter JSON object, combined (all must hold)."""
    from multimodal_rag._validation import load_json
    from multimodal_rag.errors import InvalidInputError

    conditions: dict[str, Any] = dict(parse_key_values(where, option="--where") or {})
    if filter_json is not None:
        try:
            extra = load_json(filter_json, what="the filter")
        except InvalidInputError as exc:
            raise click.BadParameter(str(exc), param_hint="--filter") from exc
        if not isinstance(extra, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--filter")
        conditions = {"$and": [conditions, extra]} if conditions else extra
    return conditions or None


def _reranker(model: str | None) -> Any:
    if model is None:
        return None
    from multimodal_rag.rerankers.vision_llm import VisionLLMReranker

    return VisionLLMReranker(model=model)


@click.command()
@KB_ARGUMENT
@click.option("--image", type=IMAGE, help="Query image.")
@click.option(
    "--text",
    help="Query text: matched with the images (CLIP) and, where the knowledge base has a "
    "full-text index, with the descriptions' words.",
)
@click.option(
    "-k", "k", type=click.IntRange(min=1), default=5, show_default=True, help="How many matches."
)
@click.option(
    "--text-weight",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Weight of --text when both --image and --text are given.",
)
@click.option(
    "--where",
    multiple=True,
    metavar="KEY=VALUE",
    help="Keep only matches whose metadata has KEY=VALUE (repeatable).",
)
@_search_options
@weights_options
@JSON_OPTION
@click.pass_obj
def search(
    settings: Settings,
    kb: Path,
    image: Path | None,
    text: str | None,
    k: int,
    text_weight: float,
    where: tuple[str, ...],
    mode: SearchMode | None,  # click.Choice allows only these
    fusion: Fusion | None,
    filter_json: str | None,
    rerank_model: str | None,
    query_ocr: bool | None,
    as_json: bool,
) -> None:
    """Find the images that best match an image, a text, or both."""
    if image is None and text is None:
        raise click.UsageError("give --image, --text, or both")
    metadata_filter = _filter(where, filter_json)
    rag = open_kb(kb, settings, read_only=True)
    hits = rag.search(
        image=image,
        text=text,
        k=k,
        filter=metadata_filter,
        text_weight=text_weight,
        mode=mode,
        fusion=fusion,
        rerank=_reranker(rerank_model),
        query_ocr=query_ocr,
    )
    if as_json:
        output.print_json(output.search_json(image, text, k, hits))
    else:
        output.print_hits(hits)


@click.command()
@KB_ARGUMENT
@click.option("--image", type=IMAGE, required=True, help="Query image.")
@click.option(
    "-k",
    "k",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="How many matches to draw.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PNG file to write.",
)
@click.option(
    "--tile",
    type=click.IntRange(min=64),
    default=256,
    show_default=True,
    help="Side of each image, in pixels.",
)
@weights_options
@JSON_OPTION
@click.pass_obj
def show(
    settings: Settings, kb: Path, image: Path, k: int, out: Path, tile: int, as_json: bool
) -> None:
    """Draw the query image beside its top-k matches, with scores and descriptions, as a PNG."""
    from multimodal_rag._contact_sheet import render_contact_sheet

    rag = open_kb(kb, settings, read_only=True)
    hits = rag.search(image=image, k=k)
    sheet = render_contact_sheet(image, hits, tile=tile)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(out, format="PNG")
    except OSError as exc:
        raise CommandFailed(f"cannot write {str(out)!r}: {exc.strerror or exc}") from exc
    if as_json:
        output.print_json(output.contact_sheet_json(out, sheet.width, sheet.height, hits))
    else:
        output.print_contact_sheet(out, sheet.width, sheet.height, hits)


@click.command()
@KB_ARGUMENT
@click.argument("question")
@click.option(
    "--image", type=IMAGE, help="Your image: the search query, and shown to the answerer."
)
@click.option(
    "-k",
    "k",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Matches the answer may draw on.",
)
@click.option(
    "--where",
    multiple=True,
    metavar="KEY=VALUE",
    help="Use only matches whose metadata has KEY=VALUE.",
)
@answerer_options
@click.option("--stream", is_flag=True, help="Print the answer as it arrives.")
@_answer_search_options
@weights_options
@JSON_OPTION
@click.pass_obj
def ask(
    settings: Settings,
    kb: Path,
    question: str,
    image: Path | None,
    k: int,
    where: tuple[str, ...],
    mode: str | None,
    filter_json: str | None,
    rerank_model: str | None,
    query_ocr: bool | None,
    answerer_kind: str,
    answer_model: str | None,
    min_score: float | None,
    stream: bool,
    as_json: bool,
) -> None:
    """Answer QUESTION about an image from the descriptions of its closest matches.

    Without --image the question itself is the search. The answerer is not stored
    with the knowledge base: OPENAI_API_KEY and OPENAI_BASE_URL choose the provider.
    """
    if stream and as_json:
        raise click.UsageError("--stream and --json cannot be combined")
    kind, answerer, reason = answerer_from_options(answerer_kind, answer_model, min_score)
    rag = open_kb(kb, settings, read_only=True, answerer=answerer)
    if kind == _AUTO and not as_json:
        click.echo(f"note: {cli_message(reason or rag.answerer_reason)}", err=True)
    metadata_filter = _filter(where, filter_json)
    search = {"mode": mode, "rerank": _reranker(rerank_model), "query_ocr": query_ocr}
    if stream:
        with rag.ask(question, image=image, k=k, filter=metadata_filter, stream=True, **search) as chunks:
            for chunk in chunks:
                click.echo(chunk, nl=False)  # click.echo flushes, so each chunk shows at once
            answer = chunks.answer
        click.echo()
    else:
        answer = rag.ask(question, image=image, k=k, filter=metadata_filter, **search)
    if as_json:
        output.print_json(output.answer_json(question, image, answer))
    else:
        output.print_answer(answer, streamed=stream)


def _build_answerer(
    kind: str, model: str | None, min_score: float | None
) -> tuple[Answerer | None, str | None]:
    """The answerer of a built-in ``kind``, and for auto why it was chosen.

    ``(None, None)`` for auto without settings: the knowledge base chooses.
    """
    if kind == _AUTO:
        if min_score is None:
            return None, None
        from multimodal_rag.answerers.default import choose_answerer

        return choose_answerer(min_score=min_score)
    cls: type[Answerer] = resolve("answerer", kind)
    options: dict[str, Any] = {"model": model} if model is not None else {}
    if min_score is not None:
        options["min_score"] = min_score
    return cls(**options), None
