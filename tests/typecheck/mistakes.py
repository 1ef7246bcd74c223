# pyright: strict
"""Mistakes a type checker must catch: every line marked below is an error.

tests/test_typing.py runs ``mypy --strict --warn-unused-ignores`` and ``pyright --strict``
(with ``reportUnnecessaryTypeIgnoreComment`` on, and mypy's ``# type: ignore`` comments left to
mypy) on this file and expects no errors. Each mistake carries the one error it must cause,
once per checker: ``# type: ignore[<mypy code>]`` then ``# pyright: ignore[<pyright rule>]``.
So a mistake that stops being an error (a parameter widened to ``str``, a return type gone
back to ``Any``) leaves an unused ignore, which both checkers then report; and an error of
another kind is not silenced. Like ``public_api_usage.py``, it is never imported or run.
"""

from __future__ import annotations

import numpy as np

from multimodal_rag import (
    CLIPEmbedder,
    FaissFlatStore,
    HNSWLibStore,
    MultimodalRAG,
    OpenCLIPEmbedder,
)
from multimodal_rag.adapter import Adapter
from multimodal_rag.embedders.precision import check_engine_and_precision
from multimodal_rag.embedders.preprocess import CLIP_MEAN, CLIP_STD, ImagePreprocess
from multimodal_rag.ocr import RapidOCRReader
from multimodal_rag.tools import migrate

# -- closed sets of choices: a misspelling is an error -------------------------------------


def misspelled_choices(rag: MultimodalRAG) -> None:
    CLIPEmbedder(engine="openvno")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    CLIPEmbedder(precision="fp61")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    OpenCLIPEmbedder("ViT-B-32", engine="onnx")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    OpenCLIPEmbedder("ViT-B-32", precision="int4")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    rag.search(text="a bird", mode="hybird")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    rag.search(text="a bird", mode="hybrid", fusion="rff")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    rag.fit_adapter(kind="lowrank")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    RapidOCRReader(engine="tensorrt")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    rag.add("photo.jpg", on_error="ignore")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    Adapter.identity(512, kind="full")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    ImagePreprocess(size=224, mean=CLIP_MEAN, std=CLIP_STD, resize_mode="crop")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


def misspelled_kinds(embedder: CLIPEmbedder) -> None:
    MultimodalRAG.create("kb", embedder=embedder, vector_store="faiss-hnws")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    MultimodalRAG.create("kb", embedder=embedder, description_store="sqllite")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    # The command line's --index name, not the store's kind:
    migrate("kb", "kb-hnsw", vector_store="hnsw")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    # A store of another class is passed as an instance, never by a name only it knows.
    MultimodalRAG.create("kb", embedder=embedder, vector_store="my_backends:NumpyVectorStore")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]


def run_time_checks_take_any_string(engine: str, precision: str) -> None:
    # Values read at run time (a command line, a config file) go through the run-time
    # check, which names a bad one in an InvalidInputError: it takes any string.
    check_engine_and_precision(engine, precision, on_gpu=None)


# -- ask and aask check each keyword, whichever overload ``stream`` picks ------------------


async def question_mistakes(rag: MultimodalRAG) -> None:
    rag.ask("What is this?", mode="hybird")  # type: ignore[call-overload]  # pyright: ignore[reportArgumentType]
    # fusion is search's; ask has none
    rag.ask("What is this?", stream=True, fusion="rrf")  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue]
    await rag.aask("What is this?", rerank="cross-encoder")  # type: ignore[call-overload]  # pyright: ignore[reportArgumentType]


# -- vectors are float32 arrays --------------------------------------------------------------


def vectors_not_lists(store: FaissFlatStore, other: HNSWLibStore, rag: MultimodalRAG) -> None:
    rag.search_by_vector([0.6, 0.8])  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    store.add(["a"], [[0.6, 0.8]])  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    store.search([0.6, 0.8], 1)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    other.search(np.zeros((1, 2), dtype=np.float32), 1, filter="a")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    text: str = store.get_vectors(["a"])  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    print(text)
