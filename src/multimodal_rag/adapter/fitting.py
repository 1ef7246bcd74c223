"""Fitting an adapter to a knowledge base, and judging it before it is applied.

`fit_and_judge` gathers the pairs (each described record's raw image vector and its
description's text vector; extra pairs from a JSON Lines file; edited images and their
originals, made by the evaluation tool's edits), holds out a share of the records, trains
(`fit_adapter_weights`) and measures the held-out
records before and after. The adapter is worth keeping only when text-to-image recall@5
goes up by more than chance and image-to-image recall (edited held-out images finding their
originals among all images) drops at no k by more than `IMAGE_TOLERANCE` beyond chance.
The facade applies it (``MultimodalRAG.fit_adapter``); this module only decides.

"More than chance" is a paired test over the held-out descriptions, not a bare comparison of
two recalls: with a few hundred of them, an adapter that learned nothing still finds one or
two more by luck, and "0.000 -> 0.008" is not a reason to change every stored vector. Each
description either changed its outcome at k = 5 (gained: found now, missed before; or lost)
or did not; were the adapter no better, a changed outcome would be a gain or a loss with equal
odds. The one-sided exact sign test (McNemar's exact test) gives the chance of at least this
many gains among the changed outcomes under that hypothesis; the adapter is kept only when it
is below `SIGNIFICANCE`. The margin so grows with the held-out set's noise: with no
losses, 7 gains are needed whatever the set's size, and more the more it loses. Edited images
take the same test the other way: a fall beyond the tolerance refuses the adapter only when
the losses are beyond chance too (a few of a few hundred are the edits' luck).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from attrs import field, frozen

from multimodal_rag.adapter.projection import KINDS, Adapter
from multimodal_rag.adapter.training import fit_adapter_weights, split_pairs
from multimodal_rag.errors import InvalidInputError
from multimodal_rag.types import AdapterKind, Record

__all__ = ["IMAGE_TOLERANCE", "RECALL_AT", "SIGNIFICANCE", "AdapterReport", "fit_and_judge", "recall_at", "sign_test"]

#: The recalls reported, each way.
RECALL_AT = (1, 5, 10)
#: The k whose text-to-image recall must go up.
DECIDING_K = 5
#: How far image-to-image recall may fall, at any k, for the adapter to be kept.
IMAGE_TOLERANCE = 0.01
#: The sign test's p-value must fall below this for a text-to-image gain to count: an
#: adapter that learned nothing passes one fit in a hundred at most.
SIGNIFICANCE = 0.01
#: Share of the training records that decides when training stops (the held-out records
#: judge the adapter afterwards, so they take no part in choosing it).
_STOPPING_SHARE = 0.1
_BATCH = 32
_TEXT_BATCH = 256
_CHUNK = 4096


def _recalls(value: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    return {str(way): {str(k): float(v) for k, v in recalls.items()} for way, recalls in value.items()}


def _numbers(value: Mapping[str, float]) -> dict[str, float]:
    return {str(key): number for key, number in value.items()}


@frozen(kw_only=True)
class AdapterReport:
    """What a fit did, measured on held-out records, and whether the adapter was kept.

    Attributes:
        kept: Whether the adapter is now applied to the knowledge base.
        reason: Why it was kept or not, in a sentence.
        kind, rank, seed: The settings of the fit.
        sha256: The fitted adapter's digest (kept or not).
        before, after: Recall@1/5/10 on the held-out records, ``"text->image"`` (each
            description finding its image among all images) and ``"image->image"`` (an
            edited copy finding its original; absent when no image file could be read).
            ``before`` is the knowledge base as it was (with its adapter, if it had one).
        test: The text-to-image test at k = 5 over the held-out descriptions: ``gained``
            (found after, not before), ``lost`` (the reverse), ``p_value`` (the one-sided
            exact sign test's for the gains), ``p_loss`` (the same for the losses) and
            ``alpha`` (`SIGNIFICANCE`, what ``p_value`` had to be below).
        records: Records used: ``{"train": n, "holdout": n}``.
        pairs: Pairs trained on: ``{"descriptions": n, "extra": n, "image": n}``.
        epochs, best_epoch: Epochs run, and the one whose weights were kept.
        train_loss, holdout_loss: Losses at the kept epoch (on the stopping share).
        temperature: The learned temperature.
        train_seconds: Training time; ``seconds``: the whole fit, embedding included.
        embedder: The embedder's fingerprint.
        fitted_at: When (UTC, ISO 8601).
        path: Where the report was saved (``adapter-reports/<time>.json``), if it was.
    """

    kept: bool
    reason: str
    kind: str
    rank: int
    seed: int
    sha256: str
    before: dict[str, dict[str, float]] = field(converter=_recalls)
    after: dict[str, dict[str, float]] = field(converter=_recalls)
    records: dict[str, int]
    pairs: dict[str, int]
    epochs: int
    best_epoch: int
    train_loss: float
    holdout_loss: float
    temperature: float
    train_seconds: float
    seconds: float
    embedder: str
    fitted_at: str
    test: dict[str, float] = field(factory=dict, converter=_numbers)
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {
            "kept": self.kept,
            "reason": self.reason,
            "kind": self.kind,
            "rank": self.rank,
            "seed": self.seed,
            "sha256": self.sha256,
            "before": self.before,
            "after": self.after,
            "test": dict(self.test),
            "records": dict(self.records),
            "pairs": dict(self.pairs),
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "train_loss": _rounded(self.train_loss),
            "holdout_loss": _rounded(self.holdout_loss),
            "temperature": _rounded(self.temperature),
            "train_seconds": round(self.train_seconds, 3),
            "seconds": round(self.seconds, 3),
            "embedder": self.embedder,
            "fitted_at": self.fitted_at,
            "path": self.path,
        }

    def __str__(self) -> str:
        lines = [f"{'kept' if self.kept else 'not kept'}: {self.reason}"]
        lines.append(f"{'recall (held-out)':<24}{'before':>22}{'after':>22}")
        for way in ("text->image", "image->image"):
            if way in self.before and way in self.after:
                before = " ".join(f"@{k}={self.before[way][str(k)]:.3f}" for k in RECALL_AT)
                after = " ".join(f"@{k}={self.after[way][str(k)]:.3f}" for k in RECALL_AT)
                lines.append(f"{way:<16}{before:>30}{after:>30}")
        lines.append(
            f"{self.kind} adapter (rank {self.rank}), {self.records['train']} training and "
            f"{self.records['holdout']} held-out records, {self.pairs['descriptions'] + self.pairs['extra']} text "
            f"and {self.pairs['image']} image pairs; {self.epochs} epochs (best {self.best_epoch}), "
            f"loss {self.holdout_loss:.4f}, {self.train_seconds:.1f} s training, {self.seconds:.1f} s in all"
        )
        return "\n".join(lines)


def _rounded(value: float) -> float | None:
    return None if value != value else round(value, 6)  # NaN (no epoch improved) as null


def recall_at(queries: np.ndarray, gallery: np.ndarray, expected: Sequence[Sequence[int]]) -> dict[str, float]:
    """Recall@1/5/10 of ``queries`` searching ``gallery`` (rows of unit vectors) exactly.

    A query's rank is one more than the number of gallery rows scoring above its best
    right answer (``expected``: gallery rows); ties count in its favour.
    """
    return _recall(ranks_of(queries, gallery, expected))


def _recall(ranks: np.ndarray) -> dict[str, float]:
    if len(ranks) == 0:
        return {str(k): 0.0 for k in RECALL_AT}
    return {str(k): float(np.mean(ranks <= k)) for k in RECALL_AT}


def ranks_of(queries: np.ndarray, gallery: np.ndarray, expected: Sequence[Sequence[int]]) -> np.ndarray:
    """Each query's rank, as `recall_at` counts it."""
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), _CHUNK):
        scores = queries[start : start + _CHUNK] @ gallery.T
        for row, right in enumerate(expected[start : start + _CHUNK]):
            best = scores[row, list(right)].max()
            ranks[start + row] = int((scores[row] > best).sum()) + 1
    return ranks


def sign_test(gained: int, lost: int) -> float:
    """The one-sided exact sign test's p-value: the chance of ``gained`` or more gains among
    ``gained + lost`` changed outcomes, each a gain or a loss with equal odds.

    Summed in logarithms, so that thousands of changed outcomes neither overflow nor lose
    the tail: ``P = sum_{i >= gained} C(n, i) / 2**n``.
    """
    n = gained + lost
    if gained <= 0:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(gained, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top - n * math.log(2)) * math.fsum(math.exp(x - top) for x in logs))


def fit_and_judge(
    rag: Any,
    *,
    kind: AdapterKind = "low-rank",
    rank: int = 32,
    pairs: str | os.PathLike[str] | None = None,
    edits: bool = True,
    holdout: float = 0.2,
    seed: int = 0,
    progress: bool | None = None,
) -> tuple[AdapterReport, Adapter | None]:
    """Fit an adapter to ``rag``'s records and judge it (see ``MultimodalRAG.fit_adapter``).

    Returns:
        The report, and the adapter when it is to be kept (``None`` otherwise). Nothing of
        ``rag`` is changed.
    """
    from multimodal_rag._validation import check_int

    started = time.perf_counter()
    if kind not in KINDS:
        raise InvalidInputError(f"adapter kind must be one of {', '.join(KINDS)}; got {kind!r}")
    rank = check_int("rank", rank)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInputError(f"seed must be a non-negative integer, got {seed!r}")
    embedder = rag.embedder
    ids: list[str] = rag.vector_store.ids()
    records: dict[str, Record] = rag.get_many(ids)  # kept images by their absolute path
    raw = _raw_vectors(rag, ids)
    row_of = {id_: row for row, id_ in enumerate(ids)}

    described = [row for row, id_ in enumerate(ids) if _text(records.get(id_))]
    train_part, held_part = split_pairs(len(described), holdout=holdout, seed=seed)
    train_rows = [described[i] for i in train_part]
    held_rows = [described[i] for i in held_part]
    held = set(held_rows)

    texts = [_text(records[ids[row]]) for row in described]
    text_vectors = _embed_texts(embedder, texts, progress=progress)
    text_of = dict(zip(described, text_vectors))
    # Every image with the very same description is a right answer too (as in evaluation).
    same_text: dict[str, list[int]] = {}
    for row, text in zip(described, texts):
        same_text.setdefault(text, []).append(row)

    extra_images, extra_texts = _extra_pairs(pairs, embedder, records, row_of, raw, held) if pairs is not None else (
        np.zeros((0, raw.shape[1]), np.float32),
        np.zeros((0, raw.shape[1]), np.float32),
    )

    # Edited copies: of the held-out images to judge by, of the others to train on.
    with_image = [row for row, id_ in enumerate(ids) if _image_file(records.get(id_))]
    held_images = [row for row in with_image if row in held]
    edit_rows = held_images + ([row for row in with_image if row not in held] if edits else [])
    edited = _edited_vectors(embedder, ids, records, edit_rows, seed=seed, progress=progress)
    held_edited = edited[: len(held_images)]
    train_edited = (edited[len(held_images) :], raw[edit_rows[len(held_images) :]]) if edits else None

    def measure(adapter: Adapter | None) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
        """Recalls each way, and each held-out query's rank."""

        def image(vectors: np.ndarray) -> np.ndarray:
            return vectors if adapter is None else adapter.apply(vectors, "image")

        gallery = image(raw)
        queries = np.stack([text_of[row] for row in held_rows])
        if adapter is not None:
            queries = adapter.apply(queries, "text")
        expected = [same_text[_text(records[ids[row]])] for row in held_rows]
        ranks = {"text->image": ranks_of(queries, gallery, expected)}
        if held_images:
            ranks["image->image"] = ranks_of(image(held_edited), gallery, [[row] for row in held_images])
        return {way: _recall(way_ranks) for way, way_ranks in ranks.items()}, ranks

    before, ranks_before = measure(rag.adapter)

    # Training arrays: description pairs of the training records, then the extra pairs.
    pair_images = np.concatenate([raw[train_rows], extra_images])
    pair_texts = np.concatenate([np.stack([text_of[row] for row in train_rows]), extra_texts])
    fit_rows, stop_rows = _stopping_split(len(train_rows), len(pair_images), seed=seed)
    fit = fit_adapter_weights(
        pair_images,
        pair_texts,
        train=fit_rows,
        holdout=stop_rows,
        kind=kind,
        rank=rank,
        image_pairs=train_edited if train_edited is not None and len(train_edited[0]) else None,
        seed=seed,
    )
    after, ranks_after = measure(fit.adapter)
    test = _paired_test(ranks_before["text->image"], ranks_after["text->image"], DECIDING_K)
    image_tests = {
        at: _paired_test(ranks_before["image->image"], ranks_after["image->image"], at)
        for at in RECALL_AT
        if "image->image" in ranks_before
    }
    kept, reason = _judge(before, after, test, image_tests)
    report = AdapterReport(
        kept=kept,
        reason=reason,
        kind=kind,
        rank=fit.adapter.rank,
        seed=seed,
        sha256=fit.adapter.sha256,
        before=before,
        after=after,
        records={"train": len(train_rows), "holdout": len(held_rows)},
        pairs={
            "descriptions": len(train_rows),
            "extra": len(extra_images),
            "image": 0 if train_edited is None else len(train_edited[0]),
        },
        epochs=fit.epochs,
        best_epoch=fit.best_epoch,
        train_loss=fit.train_loss,
        holdout_loss=fit.holdout_loss,
        temperature=fit.temperature,
        train_seconds=fit.seconds,
        seconds=time.perf_counter() - started,
        embedder=embedder.fingerprint,
        fitted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        test=test,
    )
    return report, fit.adapter if kept else None


def _paired_test(before: np.ndarray, after: np.ndarray, k: int) -> dict[str, float]:
    """The sign test of the held-out queries whose outcome at ``k`` changed: ``p_value`` for
    a gain; ``p_loss``, the same test the other way, for a loss."""
    found_before, found_after = before <= k, after <= k
    gained = int(np.count_nonzero(found_after & ~found_before))
    lost = int(np.count_nonzero(found_before & ~found_after))
    return {
        "k": k,
        "gained": gained,
        "lost": lost,
        "p_value": sign_test(gained, lost),
        "p_loss": sign_test(lost, gained),
        "alpha": SIGNIFICANCE,
    }


def _judge(
    before: Mapping[str, Mapping[str, float]],
    after: Mapping[str, Mapping[str, float]],
    test: Mapping[str, float],
    image_tests: Mapping[int, Mapping[str, float]] | None = None,
) -> tuple[bool, str]:
    k = str(DECIDING_K)
    old, new = before["text->image"][k], after["text->image"][k]
    gained, lost, p = int(test["gained"]), int(test["lost"]), test["p_value"]
    change = f"{old:.3f} -> {new:.3f}: {gained} held-out descriptions found that were not, {lost} lost"
    if new <= old:
        return False, (
            f"text->image recall@{k} on the held-out records did not go up ({change}; "
            f"sign test p = {p:.3g}, not below {SIGNIFICANCE})"
        )
    if not p < SIGNIFICANCE:
        return False, (
            f"text->image recall@{k} on the held-out records went up ({change}), but no more than chance "
            f"would: the one-sided sign test gives p = {p:.3g}, not below {SIGNIFICANCE}"
        )
    gain = f"text->image recall@{k} went up ({change}; sign test p = {p:.3g}, below {SIGNIFICANCE})"
    if "image->image" in before:
        # The same test the other way: a fall beyond the tolerance counts when chance would
        # rarely make it (3 of 244 images lost can be the edits' luck; 10 of 244 cannot).
        for at in RECALL_AT:
            was, now = before["image->image"][str(at)], after["image->image"][str(at)]
            loss = (image_tests or {}).get(at)
            p_loss = 0.0 if loss is None else loss["p_loss"]
            if now < was - IMAGE_TOLERANCE and p_loss < SIGNIFICANCE:
                return False, (
                    f"{gain} but edited images find their originals less often: image->image recall@{at} "
                    f"{was:.3f} -> {now:.3f}, more than {IMAGE_TOLERANCE} lower and more than chance "
                    f"(sign test p = {p_loss:.3g}, below {SIGNIFICANCE})"
                )
        return True, (
            f"{gain} and image->image recall fell at no k by more than {IMAGE_TOLERANCE} beyond chance "
            f"(sign test p < {SIGNIFICANCE})"
        )
    return True, f"{gain}; no image file could be read to check image->image"


def _stopping_split(described: int, total: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the training pairs to fit on and to stop on: a share of the description pairs
    (the first ``described`` rows) stops training; extra pairs are only ever fitted on."""
    if described < 4:
        raise InvalidInputError(f"an adapter needs at least 4 described training records, got {described}")
    fit, stop = split_pairs(described, holdout=_STOPPING_SHARE, seed=seed + 1)
    return np.concatenate([fit, np.arange(described, total)]), stop


def _text(record: Record | None) -> str:
    return (record.description or "").strip() if record is not None else ""


def _image_file(record: Record | None) -> bool:
    return record is not None and record.image_path is not None and Path(record.image_path).is_file()


def _raw_vectors(rag: Any, ids: Sequence[str]) -> np.ndarray:
    chunks = [np.asarray(rag.raw_vectors(ids[i : i + _CHUNK]), dtype=np.float32) for i in range(0, len(ids), _CHUNK)]
    return np.concatenate(chunks) if chunks else np.zeros((0, rag.embedder.dim), dtype=np.float32)


def _bar(total: int, desc: str, progress: bool | None) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=None if progress is None else not progress)


def _embed_texts(embedder: Any, texts: Sequence[str], *, progress: bool | None) -> np.ndarray:
    from multimodal_rag.evaluation.run import embed_queries

    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    with _bar(len(texts), "embedding descriptions", progress) as bar:
        for start in range(0, len(texts), _TEXT_BATCH):
            batch = texts[start : start + _TEXT_BATCH]
            out[start : start + len(batch)] = embed_queries(embedder, [("text", text) for text in batch])
            bar.update(len(batch))
    return out


def _edited_vectors(
    embedder: Any, ids: Sequence[str], records: Mapping[str, Record], rows: Sequence[int], *, seed: int, progress: bool | None
) -> np.ndarray:
    """Raw vectors of one edited copy of each row's image, the edit kind drawn per image from ``seed``."""
    from multimodal_rag._images import open_image
    from multimodal_rag.evaluation.edits import EDIT_KINDS
    from multimodal_rag.evaluation.run import edited_query, embed_queries

    source = functools.lru_cache(maxsize=1)(open_image)
    kinds = np.random.default_rng(seed).integers(len(EDIT_KINDS), size=len(ids))
    out = np.zeros((len(rows), embedder.dim), dtype=np.float32)
    with _bar(len(rows), "embedding edited images", progress) as bar:
        for start in range(0, len(rows), _BATCH):
            batch = rows[start : start + _BATCH]
            made = []
            for row in batch:
                path = records[ids[row]].image_path
                assert path is not None
                made.append(edited_query(source, path, ids[row], EDIT_KINDS[kinds[row]], seed)())
            out[start : start + len(batch)] = embed_queries(embedder, made)
            bar.update(len(batch))
    return out


def _extra_pairs(
    path: str | os.PathLike[str],
    embedder: Any,
    records: Mapping[str, Record],
    row_of: Mapping[str, int],
    raw: np.ndarray,
    held: set[int],
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of a JSON Lines file ``{"image": id or path, "text": "..."}``, as raw vectors.

    An image that is a knowledge-base id takes its stored raw vector; a path (relative to
    the file) is embedded. Pairs of held-out records are left out, so they judge unseen.

    Raises:
        InvalidInputError: The file cannot be read, or a line is not such a pair; names the line.
    """
    from multimodal_rag.evaluation.run import embed_queries

    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read the pairs file {str(path)!r}: {exc}") from exc
    images: list[np.ndarray] = []
    texts: list[str] = []
    to_embed: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise InvalidInputError(f"{str(path)!r} line {number} is not JSON: {exc}") from exc
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not isinstance(entry.get("text"), str) or not entry["text"].strip():
            raise InvalidInputError(f'{str(path)!r} line {number} must be {{"image": id or path, "text": "..."}}')
        image, text = entry["image"], entry["text"].strip()
        if image in row_of:
            if row_of[image] in held:
                continue
            images.append(raw[row_of[image]])
        else:
            file = path.parent / image
            if not file.is_file():
                raise InvalidInputError(f"{str(path)!r} line {number}: {image!r} is neither an id of the knowledge base nor an image file")
            to_embed.append((len(images), str(file)))
            images.append(np.zeros(raw.shape[1], dtype=np.float32))
        texts.append(text)
    for start in range(0, len(to_embed), _BATCH):
        batch = to_embed[start : start + _BATCH]
        vectors = embed_queries(embedder, [("image", file) for _, file in batch])
        for (row, _), vector in zip(batch, vectors):
            images[row] = vector
    dim = raw.shape[1]
    if not texts:
        return np.zeros((0, dim), np.float32), np.zeros((0, dim), np.float32)
    text_vectors = np.concatenate(
        [embed_queries(embedder, [("text", t) for t in texts[i : i + _TEXT_BATCH]]) for i in range(0, len(texts), _TEXT_BATCH)]
    )
    return np.stack(images).astype(np.float32), text_vectors
