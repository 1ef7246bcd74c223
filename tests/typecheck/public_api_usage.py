# pyright: strict
"""A user's script that does what README.md and docs/ show, written to be type-checked.

tests/test_typing.py runs ``mypy --strict`` and ``pyright --strict`` on this file and
expects no errors: it is how the library's annotations are held to what users write.
It is never imported or run (pytest does not collect it: its name does not start with
``test_``), so nothing here needs images, weights or a network.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np
from numpy.typing import NDArray
from PIL import Image
from typing_extensions import assert_type

from multimodal_rag import (
    AddResult,
    Answer,
    Answerer,
    AnswerStream,
    AsyncAnswerStream,
    CLIPEmbedder,
    Embedder,
    ExtractiveAnswerer,
    FaissFlatStore,
    Hit,
    MultimodalRAG,
    MultimodalRAGError,
    OpenAIAnswerer,
    Record,
    Source,
    VectorStore,
    __version__,
)
from multimodal_rag._images import content_id, open_image
from multimodal_rag.answerers import PromptTemplate
from multimodal_rag.answerers.prompt import DEFAULT_PROMPT
from multimodal_rag.descriptions import PostgresDescriptionStore
from multimodal_rag.errors import (
    AnswererError,
    AnswererRateLimitError,
    DimensionMismatchError,
    ImageError,
    InvalidInputError,
    KnowledgeBaseNotFoundError,
    NotFoundError,
    UnknownBackendError,
)
from multimodal_rag.ocr import OCREngine, RapidOCRReader, TextLine, TextReader
from multimodal_rag.protocols import IdFilter
from multimodal_rag.types import (
    DescriptionStoreKind,
    Engine,
    Fusion,
    ImageInput,
    Neighbor,
    Precision,
    SearchMode,
    Vector,
    Vectors,
    VectorStoreKind,
)
from multimodal_rag.vectors import MilvusVectorStore

# -- README.md and docs/getting-started.md ---------------------------------------------------


def readme() -> None:
    embedder = CLIPEmbedder(checkpoint="demo/clip-random.pt")  # or CLIPEmbedder("ViT-B/32")
    with MultimodalRAG.create("demo/kb-python", embedder=embedder, exist_ok=True) as rag:
        result: AddResult = rag.add_directory(
            "examples/stamps/images", descriptions="examples/stamps/description.jsonl"
        )
        print(len(result.added), "added,", len(result.duplicates), "already there,", len(result.skipped), "skipped")
        first_id: str = result[0]
        print(first_id, list(result))
        photo = "examples/stamps/queries/heron_greatblue_flying.png"
        for hit in rag.search(image=photo, k=3):
            print(f"{hit.score:.3f}  {hit.description}  {hit.metadata}")
        print(rag.ask("What bird is this?", image=photo).text)


def open_and_ask() -> None:
    rag = MultimodalRAG.open("demo/kb-python", read_only=True)
    photo = "examples/stamps/queries/heron_greatblue_flying.png"
    hits: list[Hit] = rag.search(image=photo, text="a bird", k=3, filter={"category": "animals"})
    print(hits[0].id, hits[0].image_path)
    answer = rag.ask("What bird is this?", image=photo)
    print(answer.text)
    print([source.id for source in answer.sources], answer.model, answer.usage, f"{answer.latency_s:.2f} s")
    for source in answer.sources:
        print(source.id, round(source.score, 3), source.description)
    print(rag.ask("a red bicycle", k=1, filter=lambda id_: id_.startswith("a")).text)


# -- docs/answerers.md -----------------------------------------------------------------------


def streaming(rag: MultimodalRAG) -> None:
    stream = rag.ask("What is this?", image="photo.jpg", stream=True)
    for chunk in stream:  # text as it arrives
        print(chunk, end="", flush=True)
    print(stream.answer.sources, stream.answer.usage)

    with rag.ask("What is this?", image="photo.jpg", stream=True) as early:
        first: str = next(early)
        print(first, early.done)

    for chunk in (walrus := rag.ask("What is this?", image="photo.jpg", stream=True)):
        print(chunk, end="")
    print(walrus.answer.usage)


def stream_or_not(rag: MultimodalRAG, want_stream: bool) -> None:
    # With a flag known only at run time the result is either kind.
    result = rag.ask("What is this?", stream=want_stream)
    assert_type(result, Answer | AnswerStream)
    assert_type(rag.ask("What is this?", stream=False, k=1, mode="lexical"), Answer)
    text = result.text if isinstance(result, Answer) else "".join(result)
    print(text)


async def with_asyncio(rag: MultimodalRAG) -> None:
    answer: Answer = await rag.aask("What is this?", image="photo.jpg")
    assert_type(await rag.aask("What is this?", stream=bool(answer.sources)), Answer | AsyncAnswerStream)
    print(answer.text)
    stream: AsyncAnswerStream = await rag.aask("What is this?", image="photo.jpg", stream=True)
    async for chunk in stream:
        print(chunk, end="")
    answer = await stream.get_answer()
    print(answer.usage, stream.answer.model)
    async with await rag.aask("What is this?", stream=True) as early:
        print(await early.__anext__())


def answerers() -> None:
    answerer = OpenAIAnswerer(model="gpt-4o", max_tokens=300)
    rag = MultimodalRAG.open("kb/", answerer=answerer)
    prompt: PromptTemplate = attrs.evolve(DEFAULT_PROMPT, system=DEFAULT_PROMPT.system + "\nAnswer in French.")
    rag.answerer = OpenAIAnswerer(prompt=prompt, base_url="http://localhost:11434/v1", api_key="none")
    rag.answerer = ExtractiveAnswerer()
    result = rag.describe_missing(batch_size=8, workers=4)
    print(len(result.described), "described;", result.skipped)
    rag.save()


class FirstWordAnswerer(Answerer):
    kind: ClassVar[str] = "first-word"

    def answer(
        self,
        question: str,
        *,
        image: ImageInput | None,
        matches: Sequence[Hit],
        metadata: Mapping[str, Any] | None = None,
    ) -> Answer:
        best = matches[0].description if matches and matches[0].description else "nothing"
        sources = [Source(id=hit.id, score=hit.score, description=hit.description) for hit in matches]
        return Answer(text=best.split()[0], sources=sources, model="first-word")

    def config(self) -> dict[str, Any]:
        return {}


def custom_answerer(rag: MultimodalRAG) -> None:
    rag.answerer = FirstWordAnswerer()
    answer = rag.ask("What is it?")
    source: Source = answer.sources[0]
    print(answer.text, source.image_path)
    print(Answer(text="none", sources=(source,)).sources)


def errors(rag: MultimodalRAG) -> None:
    try:
        print(rag.ask("What is this?", image="photo.jpg").text)
    except AnswererRateLimitError:
        print("slow down")
    except AnswererError as exc:
        print("the model failed:", exc, exc.__cause__)
    except ImageError as exc:
        print("bad image:", exc.source)
    except InvalidInputError as exc:
        print("bad input:", exc)
    try:
        rag.get("nope")
    except NotFoundError as exc:
        print(exc)
    try:
        MultimodalRAG.open("custom-kb")
    except (KnowledgeBaseNotFoundError, UnknownBackendError) as exc:
        print(exc)
    except MultimodalRAGError as exc:
        print("something else:", exc)


# -- docs/custom-backend.md ------------------------------------------------------------------


class NumpyVectorStore(VectorStore):
    """Exact search over one float32 matrix, saved as ``vectors.npy`` and ``ids.json``."""

    kind: ClassVar[str] = "numpy"

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._lock = threading.RLock()
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._matrix: Vectors = np.zeros((0, dim), dtype=np.float32)

    @property
    def dim(self) -> int:
        return self._dim

    def add(self, ids: Sequence[str], vectors: Vectors) -> None:
        checked = self._check_vectors(vectors)
        if len(ids) != len(checked):
            raise InvalidInputError(f"got {len(ids)} ids but {len(checked)} vectors")
        with self._lock:
            new = [i for i, id_ in enumerate(ids) if id_ not in self._row]
            matrix = np.vstack([self._matrix, checked[new]])
            for i, id_ in enumerate(ids):
                if id_ in self._row:
                    matrix[self._row[id_]] = checked[i]
            for i in new:
                self._row[ids[i]] = len(self._ids)
                self._ids.append(ids[i])
            self._matrix = matrix

    def search(self, queries: Vectors, k: int, *, filter: IdFilter | None = None) -> list[list[Neighbor]]:
        checked = self._check_vectors(queries)
        with self._lock:
            ids, matrix = list(self._ids), self._matrix
        rows = np.arange(len(ids))
        if filter is not None:
            rows = np.array([r for r in rows if filter(ids[r])], dtype=np.int64)
        results: list[list[Neighbor]] = []
        for scores in checked @ matrix[rows].T:
            best = np.argsort(-scores, kind="stable")[:k]
            results.append([Neighbor(ids[rows[j]], float(scores[j])) for j in best])
        return results

    def remove(self, ids: Iterable[str]) -> int:
        with self._lock:
            gone = {id_ for id_ in ids if id_ in self._row}
            keep = [r for r, id_ in enumerate(self._ids) if id_ not in gone]
            self._matrix = self._matrix[keep]
            self._ids = [self._ids[r] for r in keep]
            self._row = {id_: r for r, id_ in enumerate(self._ids)}
            return len(gone)

    def get_vectors(self, ids: Sequence[str]) -> Vectors:
        with self._lock:
            missing = [id_ for id_ in ids if id_ not in self._row]
            if missing:
                raise NotFoundError(f"no vector with id {missing[0]!r}")
            return self._matrix[[self._row[id_] for id_ in ids]].copy()

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, id: object) -> bool:
        return id in self._row

    def config(self) -> dict[str, Any]:
        return {}

    def save(self, directory: Path) -> None:
        with self._lock:
            ids, matrix = list(self._ids), self._matrix
        np.save(directory / "vectors.npy", matrix)
        (directory / "ids.json").write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, *, dim: int | None = None, **config: Any) -> NumpyVectorStore:
        matrix: Vectors = np.load(directory / "vectors.npy", allow_pickle=False)
        store = cls(matrix.shape[1] if dim is None else dim, **config)
        store._matrix = matrix
        ids: list[str] = json.loads((directory / "ids.json").read_text(encoding="utf-8"))
        store._ids = ids
        store._row = {id_: r for r, id_ in enumerate(ids)}
        return store

    def _check_vectors(self, array: Vectors) -> Vectors:
        if array.ndim != 2:
            raise InvalidInputError(f"vectors must have shape (n, {self._dim}), got {array.shape}")
        if array.shape[1] != self._dim:
            raise DimensionMismatchError(f"vectors have dimension {array.shape[1]}, not {self._dim}")
        return array.astype(np.float32)


class ColorHistogramEmbedder(Embedder):
    """Embeds an image as its colour histogram."""

    kind: ClassVar[str] = "color-histogram"

    def __init__(self, bins: int = 8) -> None:
        self.bins = bins

    @property
    def dim(self) -> int:
        return 3 * self.bins

    @property
    def fingerprint(self) -> str:
        return f"color-histogram:bins={self.bins}:v1"

    def config(self) -> dict[str, Any]:
        return {"bins": self.bins}

    def embed_images(self, images: Sequence[ImageInput]) -> Vectors:
        rows: list[Vectors] = []
        for index, image in enumerate(images):
            try:
                picture = open_image(image)
            except ImageError as exc:
                exc.index = index  # lets batch ingest skip just this image
                raise
            rows.append(self._histogram(picture))
        return np.array(rows, dtype=np.float32).reshape(len(rows), self.dim)

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        rows = [self._histogram(Image.new("RGB", (8, 8), text)) for text in texts]
        return np.array(rows, dtype=np.float32).reshape(len(rows), self.dim)

    def _histogram(self, picture: Image.Image) -> Vectors:
        pixels = np.asarray(picture.convert("RGB")).reshape(-1, 3)
        counts = [np.histogram(pixels[:, c], bins=self.bins, range=(0, 256))[0] for c in range(3)]
        vector = np.sqrt(np.concatenate(counts).astype(np.float32))
        norm = float(np.linalg.norm(vector))
        return (vector / norm).astype(np.float32)


def custom_backends() -> None:
    embedder = ColorHistogramEmbedder(bins=8)
    store = NumpyVectorStore(embedder.dim)
    with MultimodalRAG.create("custom-kb", embedder=embedder, vector_store=store, exist_ok=True) as rag:
        result = rag.add_directory("examples/stamps/images", descriptions="examples/stamps/description.jsonl")
        print(f"indexed {len(result.added)} images")
    rag = MultimodalRAG.open("custom-kb", allow_modules=["my_backends"], read_only=True)
    for hit in rag.search(image="examples/stamps/images/frog.png", k=2):
        print(f"{hit.score:.3f}  {hit.description}")
    print(rag.search(text="green", k=1)[0].description, len(rag), "frog" in rag, __version__)
    vectors: Vectors = embedder.embed_texts(["green"])
    neighbours: list[list[Neighbor]] = store.search(vectors, 1)
    print(neighbours[0][0].id, neighbours[0][0].score)


# -- docs/scale-out.md -----------------------------------------------------------------------


class EmbedAndStore:
    def __init__(self) -> None:
        self.embedder = CLIPEmbedder("ViT-B/32", device="cuda")
        self.vectors = MilvusVectorStore(self.embedder.dim, collection="products", create=False)
        self.records = PostgresDescriptionStore(table="products", create=False)

    def __call__(self, paths: list[str], data: list[bytes]) -> list[str]:
        ids = [content_id(item) for item in data]
        stored: list[str] = []
        for embedded in self.embedder.iter_embed_images(paths, batch_size=64):
            self.vectors.add([ids[i] for i in embedded.indices], embedded.vectors)
            self.records.put(Record(id=ids[i], image_path=paths[i]) for i in embedded.indices)
            stored.extend(ids[i] for i in embedded.indices)
            for position, error in embedded.failures:
                print(paths[position], error.source)
        vectors: Vectors = self.embedder.embed_images([bytes(item) for item in data])
        self.vectors.add(ids, vectors)
        print(self.embedder.embed_texts(["a bird"]).shape)
        return stored


# -- what the annotations promise: exact types, no Any -----------------------------------------


def return_types(embedder: CLIPEmbedder, store: FaissFlatStore, rag: MultimodalRAG) -> None:
    assert_type(embedder.embed_texts(["a bird"]), NDArray[np.float32])
    assert_type(embedder.embed_images(["photo.jpg"]), NDArray[np.float32])
    for batch in embedder.iter_embed_images(["photo.jpg"], batch_size=8):
        assert_type(batch.vectors, NDArray[np.float32])
    assert_type(store.get_vectors(["a"]), NDArray[np.float32])
    assert_type(store.search(embedder.embed_texts(["a bird"]), 3), list[list[Neighbor]])
    assert_type(rag.search(text="a bird"), list[Hit])
    query = rag.embed_query(image="photo.jpg", text="a bird", text_weight=0.3)
    assert_type(query, NDArray[np.float32])
    assert_type(rag.search_by_vector(query, k=3), list[Hit])
    assert_type(rag.raw_vectors(rag.ids()[:2]), NDArray[np.float32])
    one: Vector = embedder.embed_texts(["a bird"])[0]
    print(one.shape)


def choices_held_in_variables(rag: MultimodalRAG, want_exact: bool) -> None:
    # A choice made at run time keeps its type when annotated with the library's alias.
    mode: SearchMode = "lexical" if want_exact else "hybrid"
    fusion: Fusion = "weighted"
    print(rag.search(text="a bird", mode=mode, fusion=fusion))
    engine: Engine = "openvino"
    precision: Precision = "int8"
    CLIPEmbedder(engine=engine, precision=precision)
    kind: VectorStoreKind = "hnswlib"
    descriptions: DescriptionStoreKind = "jsonl"
    MultimodalRAG.create("kb", embedder=CLIPEmbedder(), vector_store=kind, description_store=descriptions)


def id_filter(store: FaissFlatStore, vectors: Vectors) -> None:
    keep: IdFilter = lambda id_: id_.startswith("a")  # noqa: E731
    print(store.search(vectors, 3, filter=keep))


def reading_text(photo: Image.Image) -> None:
    engine: OCREngine = "onnxruntime"
    reader: TextReader = RapidOCRReader(engine=engine, det_limit=640, min_confidence=0.6)
    (read,) = reader.read([photo])
    lines: tuple[TextLine, ...] = read.lines
    print(read.text, read.dropped, [line.box[0] for line in lines], reader.config())
