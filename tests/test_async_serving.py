"""asearch and aask keep the event loop free: embedding, searching and lock waits run in worker
threads, and OpenAIAnswerer keeps one async client per event loop."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import openai  # noqa: F401 - imported as the server imports it, before any event loop runs
import pytest

from chat_server import completion
from helpers import COLORS, encoded, solid, two_tone
from multimodal_rag import CLIPEmbedder, ExtractiveAnswerer, Hit, MultimodalRAG, OpenAIAnswerer
from tiny_clip import make_tiny_clip_checkpoint

CONCURRENT = 8
MAX_STALL_S = 0.050


@pytest.fixture(scope="module")
def tiny_kb(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tiny-kb")
    embedder = CLIPEmbedder(checkpoint=make_tiny_clip_checkpoint(root / "tiny.pt"), precision="fp32", device="cpu")
    rag = MultimodalRAG.create(root / "kb", embedder=embedder, answerer=ExtractiveAnswerer())
    rag.add(
        [solid(name, (64, 48)) for name in COLORS],
        descriptions=[f"A {name} square." for name in COLORS],
        progress=False,
    )
    rag.save()
    rag.search(image=solid("red"), k=1)  # loads the model before anything is timed
    yield rag
    rag.close()


async def longest_stall(work: Awaitable[Any], tick: float = 0.005) -> float:
    """How much later than asked the loop woke a ticker up, at worst, while ``work`` ran."""
    # A full garbage collection of the test process's heap (torch, the model) pauses every
    # thread for a few hundred milliseconds; it is not work this code puts on the loop, so
    # it is done before the clock starts.
    gc.collect()
    worst = 0.0

    async def ticker() -> None:
        nonlocal worst
        while True:
            before = time.perf_counter()
            await asyncio.sleep(tick)
            worst = max(worst, time.perf_counter() - before - tick)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # let it start before the work does
    try:
        await work
        # The ticker's last wake-up is due by now: let it count (work that blocked the loop
        # to the end would otherwise go unseen).
        await asyncio.sleep(4 * tick)
    finally:
        task.cancel()
    return worst


def best_of(attempts: int, run: Callable[[], float]) -> list[float]:
    """Run a measurement until one passes (at most ``attempts`` times): a loop that blocks
    stalls every time, while a machine busy with other work delays a ticker only now and then."""
    stalls = []
    for _ in range(attempts):
        stalls.append(run())
        if stalls[-1] < MAX_STALL_S:
            break
    return stalls


def photos() -> list[bytes]:
    # Photo-sized, so that decoding one on the loop (8 at once) would stall it well past the limit.
    names = list(COLORS)
    return [encoded(two_tone(names[i], names[-1 - i], (1280, 960)), "JPEG") for i in range(CONCURRENT)]


def test_concurrent_aask_never_stalls_the_loop_offline(tiny_kb: MultimodalRAG) -> None:
    uploads = photos()
    answers: list[Any] = []

    def run() -> float:
        async def measured() -> float:
            asks = asyncio.gather(*(tiny_kb.aask("What is this?", image=photo, k=3) for photo in uploads))
            stall = await longest_stall(asks)
            answers[:] = asks.result()
            return stall

        return asyncio.run(measured())

    stalls = best_of(3, run)
    assert len(answers) == CONCURRENT and all(answer.text.startswith("Best match:") for answer in answers)
    assert min(stalls) < MAX_STALL_S, f"the event loop stalled for {[round(s * 1000, 1) for s in stalls]} ms"


def test_concurrent_asearch_and_aask_share_one_client_of_the_chat_server(tiny_kb: MultimodalRAG, chat_server) -> None:
    # Correctness under concurrency only: the in-process chat server's handler threads share
    # the interpreter with the loop, so the ticker would time them too (the offline test above
    # times the library alone).
    answerer = OpenAIAnswerer(model="m", api_key="k", base_url=chat_server.url, max_retries=0, timeout=10.0)
    tiny_kb.answerer = answerer
    chat_server.reply(*(completion(f"answer {i}") for i in range(CONCURRENT)))

    async def run() -> tuple[list[Any], list[Any], int]:
        asks = asyncio.gather(*(tiny_kb.aask("What?", image=photo) for photo in photos()))
        searches = asyncio.gather(*(tiny_kb.asearch(text="a red square", k=2) for _ in range(CONCURRENT)))
        await asyncio.gather(asks, searches)
        clients = len(answerer._loop_clients)
        await answerer.aclose()
        return asks.result(), searches.result(), clients

    try:
        answers, searches, clients = asyncio.run(run())
    finally:
        tiny_kb.answerer = ExtractiveAnswerer()
    assert sorted(answer.text for answer in answers) == sorted(f"answer {i}" for i in range(CONCURRENT))
    assert all(len(hits) == 2 for hits in searches)
    assert clients == 1  # eight concurrent first calls made one client, not eight


def test_one_async_client_per_event_loop_reused_and_closed(chat_server, tmp_path: Path) -> None:
    answerer = OpenAIAnswerer(model="m", api_key="k", base_url=chat_server.url, max_retries=0, timeout=5.0)
    matches = [Hit(id="a", score=0.9, description="A red square.")]
    clients = []

    async def three_calls() -> None:
        for _ in range(3):
            await answerer.aanswer("Q?", image=None, matches=matches)
            clients.append(await answerer._loop_client())
        assert len({id(client) for client in clients[-3:]}) == 1 and not clients[-1].is_closed()

    asyncio.run(three_calls())
    # asyncio.run closed the loop's client on its way out.
    assert clients[-1].is_closed()
    asyncio.run(three_calls())
    assert clients[-1] is not clients[0] and clients[-1].is_closed()

    async def with_block() -> None:
        async with answerer:
            await answerer.aanswer("Q?", image=None, matches=matches)
            clients.append(await answerer._loop_client())
        assert clients[-1].is_closed()

    asyncio.run(with_block())
    assert len(chat_server.requests) == 7


def test_records_and_reports_serialise_to_json(tiny_kb: MultimodalRAG) -> None:
    hits = tiny_kb.search(image=solid("green"), k=2)
    answer = tiny_kb.ask("What?", image=solid("green"), k=2)
    root = tiny_kb.path
    assert root is not None
    hit = hits[0].to_dict(root=root)
    assert hit["image_path"].startswith("images/") and Path(hits[0].image_path or "").is_absolute()
    assert hits[0].to_dict()["image_path"] == hits[0].image_path
    body = answer.to_dict(root=root)
    assert body["sources"][0]["id"] == answer.sources[0].id and body["sources"][0]["image_path"].startswith("images/")
    for value in (hit, body, tiny_kb.verify().to_dict(), tiny_kb.add([solid("red", (64, 48))], progress=False).to_dict()):
        json.dumps(value)
    assert tiny_kb.verify().to_dict()["ok"] is True
