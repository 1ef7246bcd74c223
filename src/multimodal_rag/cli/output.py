"""What the command line prints: each command's result as text, and as JSON.

Every ``--json`` shape is built here, from the library's own objects; where a record's
fields are the shape (a hit, a record, a source, a problem) it is ``attrs.asdict`` of the
record. The shapes are a stable interface, documented in ``docs/cli.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from attrs import asdict

if TYPE_CHECKING:
    from multimodal_rag._kb.manifest import Manifest
    from multimodal_rag._migrate import MigrationReport
    from multimodal_rag._verify import Problem, RepairReport, VerificationReport
    from multimodal_rag.adapter.fitting import AdapterReport
    from multimodal_rag.embedders.model_folder import ModelFolder
    from multimodal_rag.evaluation.report import EvaluationReport
    from multimodal_rag.types import AddResult, Answer, Hit, ReadTextResult, Record, SyncResult

__all__ = [
    "JSON_SCHEMA_VERSION",
    "SHOWN_DUPLICATES",
    "add_result_json",
    "answer_json",
    "comparison_json",
    "contact_sheet_json",
    "display_path",
    "evaluation_json",
    "hit_json",
    "info_json",
    "migration_json",
    "model_folder_json",
    "note_random_weights",
    "print_adapter_removed",
    "print_adapter_report",
    "print_add_result",
    "print_answer",
    "print_checkpoint_kept",
    "print_checkpoint_written",
    "print_comparison",
    "print_contact_sheet",
    "print_evaluation",
    "print_hits",
    "print_info",
    "print_json",
    "print_migration",
    "print_model_folder",
    "print_plot_written",
    "print_record",
    "print_removal",
    "print_repair",
    "print_sync_result",
    "print_verification",
    "record_json",
    "removal_json",
    "repair_json",
    "score_note",
    "search_json",
    "sync_result_json",
    "verification_json",
]


#: Duplicates listed by name in ``index``'s text output; re-indexing a folder finds them all.
SHOWN_DUPLICATES = 5


#: The version of every ``--json`` output's shape, its first key: raised when a key is removed
#: or changes meaning (new keys may appear without it).
JSON_SCHEMA_VERSION = 1


def print_json(obj: Any) -> None:
    if isinstance(obj, dict):
        obj = {"schema_version": JSON_SCHEMA_VERSION, **_model_notes(), **obj}
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False))


#: Where `note_random_weights` leaves its finding for `print_json`: click's ``Context.meta``,
#: which the group and its command share.
_RANDOM_WEIGHTS = "multimodal_rag.random_weights"

#: The line on stderr above the text output of a command whose model has random weights.
RANDOM_WEIGHTS_WARNING = (
    "warning: this knowledge base's model has random weights (a checkpoint made by "
    "`multimodal-rag random-checkpoint`, for trying the commands): its matches, scores and "
    "answers mean nothing. Index with a real model (e.g. --model ViT-B/32) for real retrieval"
)


def note_random_weights(random_weights: bool) -> None:
    """Record whether the model this command uses has random weights, and say so.

    Every ``--json`` output of the command then has ``"random_weights": true``; a text output
    gets a warning line on stderr first. An answer that happens to look right must not pass for
    one. Real weights add nothing, so their outputs stay as they were.
    """
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return
    ctx.meta[_RANDOM_WEIGHTS] = random_weights
    if random_weights and not ctx.params.get("as_json"):
        click.echo(RANDOM_WEIGHTS_WARNING, err=True)


def _model_notes() -> dict[str, Any]:
    """``"random_weights": true`` when the knowledge base's model this command used has them."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or not ctx.meta.get(_RANDOM_WEIGHTS):
        return {}
    return {"random_weights": True}


def display_path(path: str) -> str:
    """A path relative to the working directory when it lies under it, else as given (a URL too)."""
    if "://" in path:
        return path
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive, on Windows
        return path
    return path if relative.startswith("..") else relative


def _description(text: str | None) -> str:
    return text if text is not None else "(no description)"


def _config_text(config: Mapping[str, Any] | None) -> str:
    if not config:
        return "(default settings)"
    return json.dumps(config, ensure_ascii=False, sort_keys=True)


def _runtime_text(runtime: Mapping[str, Any]) -> str:
    """The embedder's engine and precision at the last save, and any fallback with its reason."""
    text = f"{runtime.get('engine', '?')} {runtime.get('precision', '?')}"
    if runtime.get("requested") not in (None, runtime.get("precision")):
        text += f" (asked for {runtime['requested']})"
    # Each tower's precision and where it came from (asked for, fell back, auto's timing).
    decided = runtime.get("decided") or {}
    towers = runtime.get("towers") or {}
    if decided:
        text += ": " + ", ".join(
            f"{tower} {towers.get(tower, '?')} ({source})" for tower, source in decided.items()
        )
    for note in runtime.get("fallbacks", []):
        text += f"; {note}"
    # Which engine "auto" chose and why, and a first run's engine prepared in the background.
    choice = runtime.get("engine_choice") or {}
    if choice.get("requested") == "auto":
        text += f"; engine auto: {choice.get('chose', '?')} ({choice.get('reason', '?')})"
    if choice.get("first_run"):
        text += f"; {choice['first_run']}"
    return text


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# -- index ---------------------------------------------------------------------


def add_result_json(kb: Path, result: AddResult, *, created: bool, total: int, reads_text: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kb": str(kb),
        "created": created,
        "added": list(result.added),
        "duplicates": [{"source": source, "id": id_} for source, id_ in result.duplicates],
        "skipped": [asdict(skipped) for skipped in result.skipped],
        "undescribed": list(result.undescribed),
        "total": total,
    }
    if reads_text:  # only for knowledge bases that read text, so other reports stay as they were
        data["unread"] = [asdict(unread) for unread in result.unread]
    return data


def print_add_result(
    kb: Path,
    result: AddResult,
    *,
    created: bool,
    total: int,
    reads_text: bool = False,
    runtime: Mapping[str, Any] | None = None,
) -> None:
    verb = "Created" if created else "Updated"
    click.echo(f"{verb} knowledge base {kb}: {total} image{'s' if total != 1 else ''} in total.")
    if runtime and result.added:  # what embedded them: engine, precision and where they came from
        click.echo(f"  embedded on: {_runtime_text(runtime)}")
    click.echo(f"  added:       {len(result.added)}")
    click.echo(f"  duplicates:  {len(result.duplicates)} (already indexed, not embedded again)")
    for source, id_ in result.duplicates[:SHOWN_DUPLICATES]:
        click.echo(f"    {display_path(source)} = {id_}")
    if len(result.duplicates) > SHOWN_DUPLICATES:
        more = len(result.duplicates) - SHOWN_DUPLICATES
        click.echo(f"    ... and {more} more (--json lists every one)")
    click.echo(f"  skipped:     {len(result.skipped)}")
    for skipped in result.skipped:
        click.echo(f"    {display_path(skipped.source)}: {skipped.reason}")
    if result.undescribed:
        click.echo(
            f"  without a description: {len(result.undescribed)} "
            "(add one with `multimodal-rag describe`)"
        )
    if reads_text:
        click.echo(f"  text not read: {len(result.unread)}" + (" (`multimodal-rag ocr` tries again)" if result.unread else ""))
        for unread in result.unread:
            click.echo(f"    {display_path(unread.source)}: {unread.reason}")


def sync_result_json(kb: Path, result: SyncResult, *, created: bool, total: int | None) -> dict[str, Any]:
    return {"kb": str(kb), "created": created, **result.to_dict(), "total": total}


def print_sync_result(kb: Path, result: SyncResult, *, created: bool, total: int | None, reads_text: bool = False) -> None:
    """A sync's summary: one count per kind of change; a dry run's plan lists each location."""
    if result.dry_run:
        click.echo(f"Plan for {kb} (dry run, nothing changed):")
    else:
        verb = "Created" if created else "Synced"
        click.echo(f"{verb} knowledge base {kb}: {total} image{'s' if total != 1 else ''} in total.")
    for label, locations in (("new", result.new), ("changed", result.changed), ("removed", result.removed)):
        click.echo(f"  {label + ':':<12} {len(locations)}")
        if result.dry_run:
            for location in locations:
                click.echo(f"    {display_path(location)}")
    click.echo(f"  {'unchanged:':<12} {result.unchanged}")
    if result.added is not None:
        click.echo(f"  {'duplicates:':<12} {len(result.added.duplicates)} (already indexed, not embedded again)")
        click.echo(f"  {'skipped:':<12} {len(result.added.skipped)}")
        for skipped in result.added.skipped:
            click.echo(f"    {display_path(skipped.source)}: {skipped.reason}")
        if reads_text:
            click.echo(f"  text not read: {len(result.added.unread)}")


def print_read_text(kb: Path, result: ReadTextResult, info: Mapping[str, Any]) -> None:
    click.echo(f"Read the text in {len(result.read)} image{'s' if len(result.read) != 1 else ''} of {kb}.")
    click.echo(f"  with text:   {info['with_text']} of {info['read']} images read")
    click.echo(f"  not read:    {len(result.skipped)}")
    for skipped in result.skipped:
        click.echo(f"    {skipped.source}: {skipped.reason}")


# -- search, show and ask ------------------------------------------------------


def hit_json(rank: int, hit: Hit) -> dict[str, Any]:
    return {"rank": rank, **_without_unread(asdict(hit))}


def _without_unread(data: dict[str, Any]) -> dict[str, Any]:
    """A hit's or record's JSON: ``ocr`` only where the text was read, so others print as before."""
    if data.get("ocr", ...) is None:
        del data["ocr"]
    return data


def _hits_json(hits: Sequence[Hit]) -> list[dict[str, Any]]:
    return [hit_json(rank, hit) for rank, hit in enumerate(hits, start=1)]


def search_json(image: Path | None, text: str | None, k: int, hits: Sequence[Hit]) -> dict[str, Any]:
    return {
        "query": {"image": str(image) if image is not None else None, "text": text},
        "k": k,
        "hits": _hits_json(hits),
    }


def score_note(hits: Sequence[Hit]) -> str | None:
    """What the printed score is, when it is not the cosine similarity (hybrid or lexical
    search): a fused score near 0.03 would otherwise read as two unrelated images."""
    if all(h.similarity is not None and abs(h.score - h.similarity) < 1e-6 for h in hits):
        return None
    channels = {name for hit in hits for name in hit.signals}
    if channels == {"lexical"}:
        return "score: the BM25 relevance of the description's words (lexical search), not a cosine similarity"
    if channels <= {"lexical", "identifier"}:
        return "score: the fused score of the word and identifier searches (lexical search), not a cosine similarity"
    if "vector" in channels and len(channels) > 1:
        return (
            "score: the fused score of the image-vector and word searches (hybrid search), "
            "not a cosine similarity; --json gives each hit's similarity"
        )
    return "score: not a cosine similarity; --json gives each hit's similarity"


def print_hits(hits: Sequence[Hit]) -> None:
    if not hits:
        click.echo("No matches (the knowledge base is empty, or nothing passes the filter).")
    note = score_note(hits)
    if note:
        click.echo(f"({note})")
    for rank, hit in enumerate(hits, start=1):
        click.echo(f"{rank:>2}. {hit.score:.4f}  {_description(hit.description)}")
        where = display_path(hit.image_path) if hit.image_path else "(no image file)"
        click.echo(f"    id {hit.id}  {where}")
        if hit.ocr is not None and hit.ocr.lines:
            click.echo(f"    text in the image: {' / '.join(line.text for line in hit.ocr.lines)}")
        if hit.matched:
            click.echo(f"    matched: {', '.join(hit.matched)}")


def contact_sheet_json(out: Path, width: int, height: int, hits: Sequence[Hit]) -> dict[str, Any]:
    return {"out": str(out), "width": width, "height": height, "hits": _hits_json(hits)}


def print_contact_sheet(out: Path, width: int, height: int, hits: Sequence[Hit]) -> None:
    click.echo(f"Wrote {out} ({width}x{height}): the query and {len(hits)} matches.")


def answer_json(question: str, image: Path | None, answer: Answer) -> dict[str, Any]:
    return {
        "question": question,
        "image": str(image) if image is not None else None,
        "answer": answer.text,
        "model": answer.model or None,
        "sources": [asdict(source) for source in answer.sources],
        "usage": dict(answer.usage),
        "latency_s": answer.latency_s,
    }


def print_answer(answer: Answer, *, streamed: bool) -> None:
    """The answer (unless it was printed as it arrived), its sources, and who answered."""
    if not streamed:
        click.echo(answer.text)
    if answer.sources:
        click.echo("\nSources:")
        for rank, source in enumerate(answer.sources, start=1):
            where = display_path(source.image_path) if source.image_path else "(no image file)"
            click.echo(
                f"{rank:>2}. {source.score:.4f}  {_description(source.description)}  [{where}]"
            )
    if answer.model:
        click.echo(f"\nAnswered by {answer.model} in {answer.latency_s:.2f} s.")
    else:  # the similarity gate answered before any model was asked
        click.echo(f"\nNo model was asked ({answer.latency_s:.2f} s).")


# -- info ----------------------------------------------------------------------


def info_json(kb: Path, manifest: Manifest, *, size_bytes: int) -> dict[str, Any]:
    from multimodal_rag._kb.manifest import FORMAT_NAME, FORMAT_VERSION

    return {
        "kb": str(kb),
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library_version": manifest.library_version,
        "generation": manifest.generation,
        "created_at": manifest.created_at,
        "saved_at": manifest.saved_at,
        "embedder": manifest.embedder.to_dict(),
        "vector_store": manifest.vector_store.to_dict(),
        "description_store": manifest.description_store.to_dict(),
        "adapter": manifest.adapter.to_dict() if manifest.adapter is not None else None,
        "text_reader": manifest.text_reader.to_dict() if manifest.text_reader is not None else None,
        "fingerprint": _fingerprint(manifest),
        "counts": {
            "vectors": manifest.counts.get("vectors"),
            "descriptions": manifest.counts.get("descriptions"),
            **_text_counts(manifest),
        },
        "size_bytes": size_bytes,
    }


def print_info(kb: Path, manifest: Manifest, *, size_bytes: int) -> None:
    from multimodal_rag._kb.manifest import FORMAT_NAME, FORMAT_VERSION

    embedder, vectors, descriptions = (
        manifest.embedder,
        manifest.vector_store,
        manifest.description_store,
    )
    counts = manifest.counts
    rows = [
        ("knowledge base", str(kb)),
        (
            "images",
            f"{counts.get('vectors', '?')} vectors, "
            f"{counts.get('descriptions', '?')} description records",
        ),
        ("embedder", f"{embedder.kind} {_config_text(embedder.config)}, {embedder.dim}-d"),
        *(
            [("weights", "RANDOM: made by `multimodal-rag random-checkpoint`; matches mean nothing")]
            if embedder.random_weights
            else []
        ),
        ("fingerprint", _fingerprint(manifest)),
        ("adapter", _adapter_text(manifest)),
        ("ocr", _ocr_text(manifest)),
        *([("runs as", _runtime_text(embedder.runtime))] if embedder.runtime else []),
        ("vector index", f"{vectors.kind} {_config_text(vectors.config)}"),
        ("descriptions", f"{descriptions.kind} {_config_text(descriptions.config)}"),
        ("size on disk", _human_size(size_bytes)),
        (
            "format",
            f"{FORMAT_NAME} v{FORMAT_VERSION}, "
            f"written by multimodal_rag {manifest.library_version}",
        ),
        ("created", manifest.created_at or "?"),
        ("saved", f"{manifest.saved_at or '?'} (generation {manifest.generation})"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")


def _text_counts(manifest: Manifest) -> dict[str, Any]:
    if manifest.text_reader is None:
        return {}
    return {"text_read": manifest.counts.get("text_read"), "with_text": manifest.counts.get("with_text")}


def _ocr_text(manifest: Manifest) -> str:
    """Whether the images' text is read, by which reader, and in how many it was at the last save."""
    reader = manifest.text_reader
    if reader is None:
        return "off (turn it on with `multimodal-rag ocr`)"
    counts = manifest.counts
    text = (
        f"{reader.kind} {_config_text(reader.config)}: read in {counts.get('text_read', '?')} of "
        f"{counts.get('vectors', '?')} images, {counts.get('with_text', '?')} with text"
    )
    if reader.kind == "rapidocr":
        from multimodal_rag._ingest.text_reading import OCR_EXTRA_HINT, ocr_installed

        if not ocr_installed():
            text += f" (the text of new images needs {OCR_EXTRA_HINT})"
    return text


def _fingerprint(manifest: Manifest) -> str:
    """The knowledge base's space, as ``MultimodalRAG.fingerprint`` names it."""
    fingerprint = manifest.embedder.fingerprint
    return fingerprint if manifest.adapter is None else f"{fingerprint}+adapter:{manifest.adapter.sha256[:16]}"


def _adapter_text(manifest: Manifest) -> str:
    adapter = manifest.adapter
    if adapter is None:
        return "none (the embedder's own vectors)"
    return f"{adapter.kind}, rank {adapter.rank}, sha256 {adapter.sha256[:16]}, fitted {adapter.fitted_at or '?'}"


# -- fit -------------------------------------------------------------------------


def print_adapter_report(report: AdapterReport) -> None:
    click.echo(str(report))
    if report.path:
        click.echo(f"Report saved as {display_path(report.path)}.")


def print_adapter_removed(kb: Path, removed: bool) -> None:
    if removed:
        click.echo(f"{kb}: adapter removed; the index holds the embedder's own vectors again.")
    else:
        click.echo(f"{kb}: no adapter to remove.")


# -- remove and describe -------------------------------------------------------


def removal_json(removed: Sequence[str], missing: Sequence[str], total: int) -> dict[str, Any]:
    return {"removed": list(removed), "missing": list(missing), "total": total}


def print_removal(removed: int, missing: Sequence[str], total: int) -> None:
    click.echo(f"Removed {removed} image{'s' if removed != 1 else ''}; {total} left.")
    for id_ in missing:
        click.echo(f"  not found: {id_}")


def record_json(record: Record) -> dict[str, Any]:
    return _without_unread(asdict(record))


def print_record(record: Record) -> None:
    click.echo(f"{record.id}: {record.description}")


# -- verify, repair and migrate ------------------------------------------------


def verification_json(report: VerificationReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "vectors": report.vectors,
        "records": report.records,
        "problems": [asdict(problem) for problem in report.problems],
    }


def _print_problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        click.echo(f"  {problem.kind}: {problem.detail}")


def print_verification(kb: Path, report: VerificationReport) -> None:
    if report.ok:
        click.echo(f"{kb}: ok ({report.vectors} vectors, {report.records} description records).")
        return
    count = len(report.problems)
    click.echo(f"{kb}: {count} problem{'s' if count != 1 else ''}")
    _print_problems(report.problems)
    click.echo("Run `multimodal-rag repair` to rebuild what can be rebuilt.")


def repair_json(report: RepairReport) -> dict[str, Any]:
    data = {
        "ok": report.ok,
        **asdict(report, recurse=False),
        "set_aside": [display_path(path) for path in report.set_aside],
        "remaining": verification_json(report.remaining),
    }
    if not report.text_read:  # only where text was read again, so other reports stay as they were
        del data["text_read"]
    return data


def print_repair(kb: Path, report: RepairReport) -> None:
    remaining = report.remaining
    if report.set_aside:
        click.echo(f"Set {len(report.set_aside)} damaged file(s) aside:")
        for path in report.set_aside:
            click.echo(f"  {display_path(path)}")
    if report.records_salvaged or report.records_from_older_snapshot or report.records_lost:
        click.echo(
            f"Recovered {report.records_salvaged} description record(s) from the damaged file(s) "
            f"and {report.records_from_older_snapshot} from the snapshot before."
        )
    click.echo(f"Re-embedded {len(report.reembedded)} image(s) whose vector was missing.")
    click.echo(f"Created {len(report.records_created)} empty record(s) for vectors without one.")
    if report.text_read:
        click.echo(f"Read the text in {len(report.text_read)} image(s) that had none.")
    if report.adapter_removed:
        click.echo("Removed the adapter, whose file was missing or changed: the index holds the raw vectors again.")
    elif report.index_rebuilt:
        click.echo("Rebuilt the vector index from its stored vectors.")
    lost_vectors = sorted(set(report.raw_vectors_lost) - set(report.reembedded))
    if lost_vectors:
        click.echo(f"LOST: {len(lost_vectors)} raw vector(s) with no image to embed again.")
    if report.records_lost:
        some = ", ".join(report.lost_ids[:10]) + (", ..." if len(report.lost_ids) > 10 else "")
        click.echo(
            f"LOST: {report.records_lost} description record(s) could not be recovered"
            + (f" (ids: {some})" if report.lost_ids else "")
            + "."
        )
    if report.changes_lost:
        click.echo(
            f"LOST: {report.changes_lost} committed change(s) since the last save (damaged journal)."
        )
    if not remaining.ok:
        click.echo(f"{len(remaining.problems)} problem(s) could not be fixed:")
        _print_problems(remaining.problems)
    elif report.ok:
        click.echo(f"{kb}: ok now.")
    else:
        click.echo(f"{kb}: consistent again, but with the losses above.")


def migration_json(report: MigrationReport) -> dict[str, Any]:
    """The copy's counts (a copy whose counts differ from the source's fails) and its overlap."""
    return {
        **asdict(report, recurse=False),
        "source": str(report.source),
        "target": str(report.target),
        "vectors": report.vectors[1],
        "descriptions": report.descriptions[1],
    }


def print_migration(report: MigrationReport) -> None:
    click.echo(
        f"Copied {report.vectors[1]} vectors, {report.descriptions[1]} descriptions and "
        f"{report.images} image file(s) from {report.source} to {report.target}."
    )
    click.echo(
        f"Searches for {report.sampled} stored vectors agree on "
        f"{report.overlap:.0%} of their results."
    )


# -- eval ----------------------------------------------------------------------


def evaluation_json(report: EvaluationReport) -> dict[str, Any]:
    """The whole report, every query's result included (``EvaluationReport.from_dict`` reads it)."""
    return report.to_dict()


def print_evaluation(report: EvaluationReport) -> None:
    from multimodal_rag.evaluation.render import report_table

    click.echo(report_table(report))


def print_plot_written(path: Path) -> None:
    click.echo(f"\nWrote {path}: recall@k per query set and the top-1 score histograms.")


def comparison_json(
    a: EvaluationReport, b: EvaluationReport, names: tuple[str, str]
) -> dict[str, Any]:
    from multimodal_rag.evaluation.render import report_differences

    return report_differences(a, b, names=names)


def print_comparison(a: EvaluationReport, b: EvaluationReport, names: tuple[str, str]) -> None:
    from multimodal_rag.evaluation.render import compare_reports

    click.echo(compare_reports(a, b, names=names))


# -- random-checkpoint ---------------------------------------------------------


def print_checkpoint_kept(path: Path) -> None:
    click.echo(f"{path} already exists; keeping it (use --force to overwrite).")


def print_checkpoint_written(path: Path, *, seed: int) -> None:
    click.echo(
        f"Wrote {path}: a small CLIP with random weights (seed {seed}); "
        "its retrieval is meaningless."
    )


# -- fetch-model ---------------------------------------------------------------


def model_folder_json(folder: ModelFolder) -> dict[str, Any]:
    return {
        "path": str(folder.path),
        "model": folder.model,
        "pretrained": folder.pretrained,
        "open_clip_version": folder.open_clip_version,
        "files": [asdict(file) for file in folder.files],
    }


def print_model_folder(folder: ModelFolder) -> None:
    total = sum(file.size for file in folder.files)
    click.echo(
        f"Fetched open_clip model {folder.model} ({folder.pretrained}) into {folder.path}: "
        f"{len(folder.files)} files, {_human_size(total)}"
    )
    for file in folder.files:
        click.echo(f"  {file.role:<17} {_human_size(file.size):>10}  {file.path}")
    click.echo(
        "Copy the folder as it is; there, with no network:\n"
        f"  multimodal-rag index IMAGES --kb KB --embedder open-clip --checkpoint {folder.path}"
    )
