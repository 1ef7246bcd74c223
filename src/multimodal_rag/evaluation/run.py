"""Running an evaluation: build the query sets, ask them through the index and exactly, measure.

Each query is embedded once and searched twice: through the knowledge base's own vector
store (what users get) and exactly, over the same stored vectors (what an exact index
would give), so that recall lost to an approximate index shows beside the rest.

Queries made from the knowledge base's own images (edited: cropped, re-encoded, pasted on
clutter...) expect their source image. A share of those sources is *held out*: their
queries are also scored against every other image, which is what the similarity gate sees
when a photo shows something the knowledge base does not hold. Negatives the user supplies
(a folder of images with no right answer) are used instead when given.

**Labelled and text queries in lexical or hybrid mode** go through the search users get
(`Querying.search_read`, what ``rag.search`` runs): a text query fuses the words', the
identifiers' and the picture's channels; an image query is read for its text (``query_ocr``, as
in ``rag.search``) and, when the photo holds text, fused with the words over descriptions and
stored text. Their *exact* counterpart is the same fusion with the vector channel taken by exact
search over the stored vectors: the word channels are the same lists in both, so ``loss@10``
is still what the approximate index loses. Each is searched one at a time, and its time is the
whole search (reading the photo, embedding, every channel, fusion). Edited images stay vector
searches: they measure the picture's robustness.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from multimodal_rag._registry import kind_of
from multimodal_rag.errors import InvalidInputError
from multimodal_rag.evaluation.metrics import first_rank
from multimodal_rag.evaluation.report import (
    RECALL_AT,
    EvaluationReport,
    GateReport,
    QueryResult,
    SetMetrics,
)
from multimodal_rag.types import Fusion, Hit, ImageInput, Record, SearchMode

__all__ = ["edited_query", "embed_queries", "evaluate"]

class SearchParts(Protocol):
    """A search's hits and what they were fused from (the facade's ``SearchParts``)."""

    @property
    def hits(self) -> list[Hit]: ...
    @property
    def mode(self) -> str: ...
    @property
    def vector(self) -> Any: ...
    @property
    def channels(self) -> dict[str, list[tuple[str, float]]]: ...
    @property
    def fusion(self) -> Fusion | None: ...


class Querying(Protocol):
    """The knowledge base's own search, in its two steps: reading the query photo, then searching
    (the facade's ``Querying``; declared here so that evaluation imports no facade part)."""

    def read_query_image(self, image: ImageInput | None, mode: SearchMode | None, query_ocr: bool | None) -> Any: ...

    def search_read(
        self,
        image: ImageInput | None,
        text: str | None,
        read: Any,
        *,
        depth: int,
        filter: None,
        text_weight: float,
        mode: SearchMode | None,
        fusion: Fusion | None,
    ) -> SearchParts: ...


#: Share of the sampled images whose edited queries also serve as unanswerable ones.
HOLDOUT = 0.2
#: Queries timed one by one (embedding and search) for the latency figures.
LATENCY_QUERIES = 50
_BATCH = 32

NOTES = {
    "text:descriptions": (
        "text:descriptions asks each image's own description and expects that image (or any with the "
        "same words): it shows whether text and images meet in the model's space, but descriptions are "
        "not how people ask; label real questions in a queries file for that"
    ),
    "held-out": (
        "the gate's unanswerable queries are edited images scored against every other image: a "
        "near-duplicate in the knowledge base makes them look answerable, as it would in use"
    ),
    "searched": (
        "labelled and description queries went through the search users get (lexical or hybrid, the "
        "query photos' text read where query_ocr allows), one at a time: their latency includes reading "
        "the photo; exact search fuses the same word channels with an exact vector channel"
    ),
}


def evaluate(
    rag: Any,
    *,
    queries: str | os.PathLike[str] | None = None,
    edits: Sequence[str] | None = None,
    negatives: str | os.PathLike[str] | None = None,
    sample: int | None = 200,
    seed: int = 0,
    k: int = 10,
    keep: float = 0.95,
    mode: SearchMode = "vector",
    fusion: Fusion | None = None,
    query_ocr: bool | None = None,
    progress: bool | None = None,
    querying: Querying | None = None,
) -> EvaluationReport:
    """Measure retrieval on ``rag`` (see [`MultimodalRAG.evaluate`][multimodal_rag._rag.MultimodalRAG.evaluate])."""
    from tqdm.auto import tqdm

    from multimodal_rag._images import open_image
    from multimodal_rag._ingest.sources import scan_images
    from multimodal_rag._validation import check_int
    from multimodal_rag.evaluation.edits import EDIT_KINDS
    from multimodal_rag.evaluation.queries import description_queries, read_labelled_queries

    started = time.perf_counter()
    kinds = tuple(EDIT_KINDS if edits is None else edits)
    unknown = sorted(set(kinds) - set(EDIT_KINDS))
    if unknown:
        raise InvalidInputError(f"unknown edit kind(s) {unknown}; the kinds are {', '.join(EDIT_KINDS)}")
    k = check_int("k", k)
    if sample is not None:
        sample = check_int("sample", sample)
    if not 0.0 < keep <= 1.0:
        raise InvalidInputError(f"keep must be in (0, 1], got {keep!r}")
    if mode not in ("vector", "lexical", "hybrid"):
        raise InvalidInputError(f"mode must be vector, lexical or hybrid; got {mode!r}")
    if mode != "vector" and not getattr(rag.description_store, "full_text", False):
        raise InvalidInputError(f"a {mode} evaluation needs a description store with a full-text index")
    if query_ocr is not None and not isinstance(query_ocr, bool):
        raise InvalidInputError(f"query_ocr must be True, False or None, got {type(query_ocr).__name__}")
    if query_ocr and mode == "vector":
        raise InvalidInputError("query_ocr=True needs mode lexical or hybrid: a vector evaluation searches by the picture alone")
    searched = mode != "vector"  # labelled and text queries go through the users' search
    if searched and querying is None:
        raise InvalidInputError(f"a {mode} evaluation needs the knowledge base's search (rag.evaluate)")

    searcher = _Searcher(rag, k=max(k, max(RECALL_AT)))
    records = rag.get_many(searcher.ids)  # kept images by their absolute path
    rng = np.random.default_rng(seed)
    with_images = [id_ for id_ in searcher.ids if _has_image(records.get(id_))]
    order = rng.permutation(len(with_images))
    chosen = [with_images[i] for i in order[: sample if sample is not None else len(order)]]
    held_out = set(chosen[: round(len(chosen) * HOLDOUT)]) if negatives is None else set()

    # Each query is made when its batch comes (an edited photo is large): memory stays
    # bounded by one batch whatever the sample.
    plan: list[tuple[str, str, tuple[str, ...], Callable[[], tuple[str, Any]]]] = []
    # An image's edits are consecutive in the plan: its last decode serves them all.
    source = functools.lru_cache(maxsize=1)(open_image)
    for id_ in chosen:
        for kind in kinds:
            plan.append((f"edit:{kind}", f"{id_} ({kind})", (id_,), edited_query(source, records[id_].image_path, id_, kind, seed)))
    labelled = read_labelled_queries(queries, records) if queries is not None else []
    for query in labelled:
        if query.text is not None:
            plan.append((query.query_set, query.text, query.expected, _text_query(query.text)))
        else:
            assert query.image is not None
            plan.append((query.query_set, query.image, query.expected, _image_query(query.image)))
    if not any(q.text is not None for q in labelled):
        for query in description_queries([records[id_] for id_ in chosen if id_ in records], records):
            assert query.text is not None
            plan.append(("text:descriptions", query.text, query.expected, _text_query(query.text)))

    # Edited images are vector searches whatever the mode; the rest, in lexical or hybrid mode,
    # are searched as users search (see the module's text).
    through_search = [entry for entry in plan if searched and not entry[0].startswith("edit:")]
    plan = [entry for entry in plan if not searched or entry[0].startswith("edit:")]

    results: list[QueryResult] = []
    answerable: list[float] = []
    unanswerable: list[float] = []
    latencies: list[float] = []
    timed: dict[str, list[float]] = {}  # single-query latencies by query set
    bar = tqdm(total=len(plan) + len(through_search), desc="evaluating", unit="query", disable=None if progress is None else not progress)
    try:
        for start in range(0, len(plan), _BATCH):
            batch = plan[start : start + _BATCH]
            made = [make() for _, _, _, make in batch]
            if not latencies and made:
                searcher.search(searcher.embed_batch(made[:1]))  # warm up: lazy loading is not latency
            begin = time.perf_counter()
            vectors = searcher.embed_batch(made)
            indexed = searcher.search(vectors)
            elapsed = (time.perf_counter() - begin) / len(batch)
            for (query_set, *_), made_query in list(zip(batch, made))[: max(0, LATENCY_QUERIES - len(latencies))]:
                begin = time.perf_counter()  # one query at a time, as a user's request comes
                searcher.search(searcher.embed_batch([made_query]))
                latencies.append(time.perf_counter() - begin)
                timed.setdefault(query_set, []).append(latencies[-1])
            exact = searcher.exact(vectors)
            for (query_set, text, expected, _), (ranked, scores), (exact_ranked, exact_scores) in zip(batch, indexed, exact):
                results.append(
                    _query_result(query_set, text, expected, (ranked, scores), (exact_ranked, exact_scores), k, elapsed)
                )
                if exact_scores and not query_set.startswith("text:"):
                    # Image queries only: text and image scores live on different scales, and
                    # the unanswerable queries the gate is weighed against are images.
                    answerable.append(float(exact_scores[0]))
                if query_set.startswith("edit:") and expected[0] in held_out:
                    # The best score among the *other* images: what the gate sees for a
                    # photo of something the knowledge base does not hold.
                    others = [float(s) for i, s in zip(exact_ranked, exact_scores) if i != expected[0]]
                    if others:
                        unanswerable.append(others[0])
            bar.update(len(batch))
        warm: set[str] = set()
        for query_set, text, expected, make in through_search:
            kind, value = make()
            assert querying is not None
            if kind not in warm:  # lazy loading (the reader's models, the text tower) is not latency
                searcher.searched(querying, kind, value, mode, fusion, query_ocr)
                warm.add(kind)
            begin = time.perf_counter()
            found = searcher.searched(querying, kind, value, mode, fusion, query_ocr)
            seconds = time.perf_counter() - begin
            latencies.append(seconds)
            timed.setdefault(query_set, []).append(seconds)
            (ranked, scores), (exact_ranked, exact_scores), best_cosine = searcher.exact_searched(found)
            results.append(
                _query_result(query_set, text, expected, (ranked, scores), (exact_ranked, exact_scores), k, seconds)
            )
            if kind == "image" and best_cosine is not None:
                answerable.append(best_cosine)  # the gate judges the picture's cosine, as the answerer does
            bar.update(1)
        if negatives is not None:
            files, _ = scan_images(Path(negatives), recursive=True)
            if not files:
                raise InvalidInputError(f"no images in the negatives folder {str(negatives)!r}")
            for start in range(0, len(files), _BATCH):
                vectors = searcher.embed_batch([("image", file) for file in files[start : start + _BATCH]])
                unanswerable.extend(float(scores[0]) for _, scores in searcher.exact(vectors) if scores)
    finally:
        bar.close()

    return EvaluationReport(
        sets=_set_metrics(results, k, timed),
        results=results,
        gate=_gate(answerable, unanswerable, keep, "negatives folder" if negatives is not None else "held-out images"),
        latency_ms={key: value * 1000 for key, value in _percentiles(latencies).items()},
        seconds=round(time.perf_counter() - started, 3),
        settings={
            "sample": sample,
            "seed": seed,
            "k": k,
            "keep": keep,
            "mode": mode,
            "fusion": fusion,
            "query_ocr": query_ocr,
            "edits": list(kinds),
            "images": len(searcher.ids),
            "queries_file": str(queries) if queries is not None else None,
            "negatives": str(negatives) if negatives is not None else None,
            # The knowledge base's space: the embedder's, and its adapter's while one is applied.
            "embedder": getattr(rag, "fingerprint", rag.embedder.fingerprint),
            "vector_store": kind_of(rag.vector_store),
            "vector_store_config": rag.vector_store.config(),
        },
        notes=[NOTES[key] for key in ("text:descriptions",) if any(r.query_set == key for r in results)]
        + ([NOTES["held-out"]] if held_out else [])
        + ([NOTES["searched"]] if through_search else []),
    )


class _Searcher:
    """Embeds queries, and searches them through the store and exactly over its vectors."""

    def __init__(self, rag: Any, *, k: int) -> None:
        self.rag = rag
        self.k = k
        self.ids: list[str] = rag.ids()
        self._known = set(self.ids)
        self._vectors = self._stored_vectors()

    def _stored_vectors(self) -> np.ndarray:
        chunks = [
            np.asarray(self.rag.vector_store.get_vectors(self.ids[i : i + 4096]), dtype=np.float32)
            for i in range(0, len(self.ids), 4096)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.rag.embedder.dim), dtype=np.float32)

    def embed_batch(self, queries: Sequence[tuple[str, Any]]) -> np.ndarray:
        """Query vectors for ``("image", image)`` and ``("text", text)`` pairs, as the facade makes them."""
        return embed_queries(self.rag.embedder, queries, adapter=getattr(self.rag, "adapter", None))

    def search(self, vectors: np.ndarray) -> list[tuple[list[str], list[float]]]:
        found = self.rag.vector_store.search(vectors, self.k)
        return [([n.id for n in row], [n.score for n in row]) for row in found]

    def searched(
        self, querying: Querying, kind: str, value: Any, mode: SearchMode, fusion: Fusion | None, query_ocr: bool | None
    ) -> tuple[str, SearchParts | None]:
        """A text or image query searched as ``rag.search`` searches it in ``mode``: an image is
        read first (``query_ocr``), and is a hybrid search only when its photo holds text (a
        vector search otherwise, as ``rag.search(image=...)``); in lexical mode, a photo in which
        nothing is read finds nothing (None)."""
        if kind == "text":
            return kind, querying.search_read(None, value, None, depth=self.k, filter=None, text_weight=0.5, mode=mode, fusion=fusion)
        read = querying.read_query_image(value, None, query_ocr)
        if mode == "lexical" and read is None:
            return kind, None
        image_mode: SearchMode | None = "lexical" if mode == "lexical" else None
        return kind, querying.search_read(value, None, read, depth=self.k, filter=None, text_weight=0.5, mode=image_mode, fusion=fusion)

    def exact_searched(
        self, found: tuple[str, SearchParts | None]
    ) -> tuple[tuple[list[str], list[float]], tuple[list[str], list[float]], float | None]:
        """A searched query's ranking through the index and exactly (the same fusion, with the
        vector channel by exact search), and the best cosine of its picture (None without one)."""
        from multimodal_rag._retrieval import CHANNEL_DEPTH, fuse_channels

        _, parts = found
        if parts is None:
            return ([], []), ([], []), None
        ranked = ([hit.id for hit in parts.hits], [hit.score for hit in parts.hits])
        if parts.vector is None:  # lexical mode: no vector channel, nothing approximate
            return ranked, ranked, None
        vector = np.asarray(parts.vector, dtype=np.float32)[None, :]
        [(exact_ids, exact_scores)] = self.exact(vector, k=max(self.k, CHANNEL_DEPTH))
        best = exact_scores[0] if exact_scores else None
        if parts.mode == "vector":
            return ranked, (exact_ids[: self.k], exact_scores[: self.k]), best
        assert parts.fusion is not None
        fused = [entry for entry in fuse_channels(list(zip(exact_ids, exact_scores)), parts.channels, parts.fusion) if entry[0] in self._known]
        return ranked, ([id_ for id_, _, _ in fused[: self.k]], [score for _, score, _ in fused[: self.k]]), best

    def exact(self, vectors: np.ndarray, *, k: int | None = None) -> list[tuple[list[str], list[float]]]:
        from multimodal_rag.vectors.ranking import exact_top_k

        if not self.ids:
            return [([], []) for _ in vectors]
        chunks = ((np.arange(i, min(i + 4096, len(self.ids))), self._vectors[i : i + 4096]) for i in range(0, len(self.ids), 4096))
        scores, positions = exact_top_k(vectors, min(self.k if k is None else k, len(self.ids)), chunks)
        return [
            ([self.ids[p] for p in row_positions], [float(s) for s in row_scores])
            for row_scores, row_positions in zip(scores, positions)
        ]


def embed_queries(embedder: Any, queries: Sequence[tuple[str, Any]], *, adapter: Any = None) -> np.ndarray:
    """Vectors for ``("image", image)`` and ``("text", text)`` queries, in one call per kind.

    Texts are normalised as the facade's queries are; with an ``adapter``, each kind goes
    through its side of it, as the facade's queries do (`query_vector`); without, they are the
    embedder's raw vectors.
    """
    from multimodal_rag._text_normalisation import normalise
    from multimodal_rag._validation import check_vectors

    dim = embedder.dim
    out = np.empty((len(queries), dim), dtype=np.float32)
    for kind, embed in (("image", embedder.embed_images), ("text", embedder.embed_texts)):
        rows = [i for i, (what, _) in enumerate(queries) if what == kind]
        if rows:
            # Checked as the facade checks a query: a custom embedder's output may be anything.
            inputs = [queries[i][1] if kind == "image" else normalise(queries[i][1]) for i in rows]
            vectors = check_vectors(embed(inputs), dim, count=len(rows), what=f"{kind} query vectors")
            out[rows] = vectors if adapter is None else adapter.apply(vectors, kind)
    return out


def edited_query(source: Callable[[str], Any], path: str, id_: str, kind: str, seed: int) -> Callable[[], tuple[str, Any]]:
    """A query maker: the image at ``path`` (decoded by ``source``) under edit ``kind``, as
    ``("image", edited image)``; the same (seed, id, kind) always makes the same edit."""

    def make() -> tuple[str, Any]:
        from multimodal_rag.evaluation.edits import edited_queries

        # The edit's randomness depends on (seed, id, kind) only, so making it again is the same
        # edit; edits return new images, so the decoded source can be shared.
        [(_, _, image)] = list(edited_queries([(id_, source(path))], [kind], seed=seed))
        return ("image", image)

    return make


def _image_query(image: ImageInput) -> Callable[[], tuple[str, Any]]:
    return lambda: ("image", image)


def _text_query(text: str) -> Callable[[], tuple[str, Any]]:
    return lambda: ("text", text)


def _query_result(
    query_set: str,
    query: str,
    expected: Sequence[str],
    found: tuple[Sequence[str], Sequence[float]],
    exact: tuple[Sequence[str], Sequence[float]],
    k: int,
    seconds: float,
) -> QueryResult:
    """One query's result: its first ``k`` ranked ids and scores, from the index and from
    exact search."""
    (ranked, scores), (exact_ranked, exact_scores) = found, exact
    return QueryResult(
        query_set=query_set,
        query=query,
        expected=expected,
        ranked=ranked[:k],
        # Unrounded: ties are equal scores, and rounding would make neighbours equal.
        scores=[float(s) for s in scores[:k]],
        exact_ranked=exact_ranked[:k],
        exact_scores=[float(s) for s in exact_scores[:k]],
        rank=first_rank(ranked, expected),
        exact_rank=first_rank(exact_ranked, expected),
        seconds=round(seconds, 6),
    )


def _has_image(record: Record | None) -> bool:
    return record is not None and record.image_path is not None and Path(record.image_path).is_file()


def _set_metrics(results: Sequence[QueryResult], k: int, timed: Mapping[str, Sequence[float]]) -> list[SetMetrics]:
    from multimodal_rag.evaluation.metrics import mean_metrics, query_metrics

    by_set: dict[str, list[QueryResult]] = {}
    for result in results:
        by_set.setdefault(result.query_set, []).append(result)
    metrics = []
    for name in sorted(by_set, key=_set_order):
        group = by_set[name]
        indexed = [query_metrics(r.ranked, r.scores, r.expected, k_values=RECALL_AT) for r in group]
        # Ties count the same way through exact search, so that an exact index loses nothing.
        # A report saved before exact scores were kept takes its exact ranks as given.
        exact = [
            query_metrics(
                r.exact_ranked,
                r.exact_scores if len(r.exact_scores) == len(r.exact_ranked) else range(len(r.exact_ranked), 0, -1),
                r.expected,
                k_values=RECALL_AT,
            )
            for r in group
        ]
        recall, mrr, ndcg = mean_metrics(indexed)
        exact_recall, exact_mrr, exact_ndcg = mean_metrics(exact)
        metrics.append(
            SetMetrics(
                query_set=name,
                queries=len(group),
                recall={str(key): round(value, 6) for key, value in recall.items()},
                mrr=round(mrr, 6),
                ndcg10=round(ndcg, 6),
                exact_recall={str(key): round(value, 6) for key, value in exact_recall.items()},
                exact_mrr=round(exact_mrr, 6),
                exact_ndcg10=round(exact_ndcg, 6),
                latency_ms={key: round(value * 1000, 3) for key, value in _percentiles(list(timed.get(name, ()))).items()}
                if timed.get(name)
                else {},
            )
        )
    return metrics


def _set_order(name: str) -> tuple[int, int | str]:
    from multimodal_rag.evaluation.edits import EDIT_KINDS

    if name.startswith("edit:") and name[5:] in EDIT_KINDS:
        return (0, EDIT_KINDS.index(name[5:]))
    return (1, name)


def _gate(answerable: list[float], unanswerable: list[float], keep: float, source: str) -> GateReport | None:
    from multimodal_rag.evaluation.metrics import auroc, recommend_gate

    if not answerable or not unanswerable:
        return None
    threshold, rejected = recommend_gate(answerable, unanswerable, keep=keep)
    return GateReport(
        answerable=[round(s, 6) for s in answerable],
        unanswerable=[round(s, 6) for s in unanswerable],
        auroc=auroc(answerable, unanswerable),
        keep=keep,
        recommended_min_score=threshold,
        unanswerable_rejected=rejected,
        negatives_source=source,
    )


def _percentiles(values: list[float]) -> dict[str, float]:
    from multimodal_rag.evaluation.metrics import percentiles

    return percentiles(values) if values else {"p50": 0.0, "p95": 0.0}
