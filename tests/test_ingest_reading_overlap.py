"""An ingest that reads text (OCR) reads each batch while the next one is embedded.

What it stores must be what reading the same images one batch after the other stores; each
image the reader fails on is still reported on its own; batches are committed in order, and a
failing embedder leaves the batches before it stored, with their text.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from helpers import ColorEmbedder, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag.errors import ImageError
from multimodal_rag.ocr import ReadText
from ocr_helpers import FAILING, TEXTS, ColourTextReader

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


class CountingEmbedder(ColorEmbedder):
    """`ColorEmbedder` that signals each batch it has embedded, and can fail on one of them."""

    def __init__(self, *, fail_on_batch: int | None = None) -> None:
        super().__init__()
        self.fail_on_batch = fail_on_batch
        self.embedded = 0  # batches embedded (a call that raised ImageError is retried)
        self.second_batch = threading.Event()

    def embed_images(self, images: Sequence[Any]) -> Any:
        if self.embedded + 1 == self.fail_on_batch:
            raise RuntimeError("the embedder's device was lost")
        vectors = super().embed_images(images)
        self.embedded += 1
        if self.embedded >= 2:
            self.second_batch.set()
        return vectors


class WaitingReader(ColourTextReader):
    """Reads as `ColourTextReader` does; its first read waits (up to 10 s) for the embedder
    to embed a second batch, which happens only if reading and embedding overlap."""

    def __init__(self, embedder: CountingEmbedder) -> None:
        super().__init__()
        self.embedder = embedder
        self.overlapped: bool | None = None
        self.threads: set[str] = set()

    def read(self, images: Sequence[Image.Image]) -> list[ReadText]:
        self.threads.add(threading.current_thread().name)
        if self.overlapped is None:
            self.overlapped = self.embedder.second_batch.wait(timeout=10)
        return super().read(images)


def photo_folder(tmp_path: Path) -> Path:
    """Ten photos: text, no text, and two the reader fails on, spread over batches of three."""
    folder = tmp_path / "photos"
    folder.mkdir()
    colours = [RED, GREEN, BLUE, FAILING, RED, GREEN, GREEN, BLUE, FAILING, RED]
    for i, colour in enumerate(colours):
        solid(colour, size=(32 + i, 24)).save(
            folder / f"{i:02d}.png"
        )  # distinct files, distinct ids
    (folder / "05-broken.png").write_bytes(b"not an image")  # skipped by the embedder
    return folder


def read_texts(rag: MultimodalRAG) -> dict[str, ReadText | None]:
    return {Path(rag.get(id_).image_path or "").name: rag.get(id_).ocr for id_ in rag.ids()}


def test_text_is_read_while_the_next_batch_is_embedded_and_stores_what_reading_in_turn_stores(
    tmp_path: Path,
) -> None:
    folder = photo_folder(tmp_path)
    embedder = CountingEmbedder()
    reader = WaitingReader(embedder)
    overlapped = MultimodalRAG(embedder)
    result = overlapped.add_directory(folder, ocr=reader, batch_size=3, progress=False)

    assert reader.overlapped is True
    assert threading.current_thread().name not in reader.threads
    assert len(result.added) == 10
    assert [Path(s.source).name for s in result.skipped] == ["05-broken.png"]
    # The two photos the reader fails on, each reported alone, in the order of the folder.
    assert [Path(u.source).name for u in result.unread] == ["03.png", "08.png"]
    assert all("the model crashed" in u.reason for u in result.unread)

    # The same photos embedded without text, then read batch by batch in this thread.
    in_turn = MultimodalRAG(ColorEmbedder())
    in_turn.add_directory(folder, ocr=False, batch_size=3, progress=False)
    later = in_turn.read_text(ocr=ColourTextReader(), batch_size=3, progress=False)
    assert len(later.skipped) == 2
    assert read_texts(overlapped) == read_texts(in_turn)
    assert read_texts(overlapped)["00.png"].text == TEXTS[RED]  # type: ignore[union-attr]
    assert read_texts(overlapped)["01.png"] == ReadText()
    assert read_texts(overlapped)["03.png"] is None
    # The same vectors, under the same ids, as an ingest that reads no text.
    assert sorted(overlapped.ids()) == sorted(in_turn.ids())


def test_a_failing_embedder_leaves_the_batches_before_it_stored_with_their_text(
    tmp_path: Path,
) -> None:
    folder = photo_folder(tmp_path)
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=CountingEmbedder(fail_on_batch=3))
    with pytest.raises(RuntimeError, match="device was lost"):
        rag.add_directory(folder, ocr=ColourTextReader(), batch_size=3, progress=False)
    # Batches one and two (the second being read when the third failed; its third photo is
    # the broken one) are stored, in full.
    stored = read_texts(rag)
    assert sorted(stored) == ["00.png", "01.png", "02.png", "03.png", "04.png"]
    assert stored["00.png"].text == TEXTS[RED]  # type: ignore[union-attr]
    assert stored["04.png"].text == TEXTS[RED]  # type: ignore[union-attr]
    assert stored["03.png"] is None  # the reader failed on it: stored without text
    rag.close()
    reopened = MultimodalRAG.open(tmp_path / "kb", embedder=ColorEmbedder(), read_only=True)
    assert read_texts(reopened) == stored  # the journal holds both batches, text included
    reopened.close()


def test_an_add_that_must_store_all_or_nothing_stores_nothing_when_a_later_image_fails(
    tmp_path: Path,
) -> None:
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder())
    images: list[Any] = [solid(RED), solid(BLUE, size=(40, 20)), b"not an image", solid(GREEN)]
    with pytest.raises(ImageError):
        rag.add(images, ocr=ColourTextReader(), batch_size=1, on_error="raise", progress=False)
    assert len(rag) == 0 and rag.ids() == []
    rag.close()


def test_a_batch_is_read_a_few_images_at_a_time_and_a_failure_costs_only_its_image(
    tmp_path: Path,
) -> None:
    from multimodal_rag._ingest.text_reading import READ_GROUP

    folder = photo_folder(tmp_path)
    ColourTextReader.calls.clear()
    rag = MultimodalRAG(ColorEmbedder())
    result = rag.add_directory(folder, ocr=ColourTextReader(), batch_size=32, progress=False)
    # One batch of ten photos: groups of READ_GROUP; the groups holding a photo the reader
    # fails on are read again one photo at a time.
    assert READ_GROUP == 4 and len(result.added) == 10
    groups = [[RED, GREEN, BLUE, FAILING], [RED, GREEN, GREEN, BLUE], [FAILING, RED]]
    expected: list[int] = []
    for group in groups:
        expected.append(len(group))
        if FAILING in group:
            expected += [1] * len(group)
    assert ColourTextReader.calls == expected
    assert [Path(u.source).name for u in result.unread] == ["03.png", "08.png"]
    assert read_texts(rag)["09.png"].text == TEXTS[RED]  # type: ignore[union-attr]
