"""The HTTP server (multimodal_rag.server) through Starlette's TestClient: every endpoint, the
token, the upload limits, the streamed answer's events, and following another process's saves."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed")
pytest.importorskip("multipart", reason="the server extra is not installed")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx")

from PIL import Image  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from chat_server import error, stream  # noqa: E402
from helpers import ColorEmbedder, encoded, solid  # noqa: E402
from multimodal_rag import ExtractiveAnswerer, MultimodalRAG, OpenAIAnswerer  # noqa: E402
from multimodal_rag.server.app import ServerSettings, create_app  # noqa: E402
from multimodal_rag.server.reloading import ReloadingKnowledgeBase  # noqa: E402

TESTS = Path(__file__).resolve().parent
TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def kb_path(tmp_path: Path, image_dir: Path) -> Path:
    path = tmp_path / "kb"
    with MultimodalRAG.create(path, embedder=ColorEmbedder()) as rag:
        rag.add_directory(image_dir, descriptions=image_dir / "description.json", progress=False)
    return path


def make_client(kb_path: Path, answerer=None, **settings) -> TestClient:
    knowledge_base = ReloadingKnowledgeBase(
        kb_path, embedder=ColorEmbedder(), answerer=answerer or ExtractiveAnswerer()
    )
    # The test client's host, and the folder the fixture's images were added from.
    options = {
        "reload_interval": 0,
        "allowed_hosts": ["testserver"],
        "image_roots": [kb_path.parent / "image_database"],
        **settings,
    }
    return TestClient(create_app(knowledge_base, ServerSettings(**options)))


@pytest.fixture
def client(kb_path: Path):
    with make_client(kb_path) as test_client:
        yield test_client


def png(color: str, size: tuple[int, int] = (40, 30)) -> bytes:
    return encoded(solid(color, size))


def image_part(color: str = "red") -> dict:
    return {"image": ("photo.png", png(color), "image/png")}


def test_health_info_page_and_openapi(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert health == {"status": "ok", "generation": 2, "images": 8}  # created, then saved
    info = client.get("/v1/info").json()
    assert info["images"] == 8 and info["knowledge_base"] == "kb" and info["auth"] is False
    assert info["answerer"] == {"kind": "extractive", "model": "extractive"}
    assert info["embedder"]["kind"].endswith("ColorEmbedder") and info["limits"]["max_k"] == 50
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert '<label class="field" for="question">' in page.text and "/v1/ask" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    schema = client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.") and {"/v1/search", "/v1/ask", "/v1/images/{id}"} <= set(schema["paths"])


def test_search_by_image_gives_relative_paths_and_thumbnail_urls(client: TestClient) -> None:
    body = client.post("/v1/search", files=image_part("red"), data={"k": "3"}).json()
    assert body["count"] == 3 and body["generation"] == 2
    best = body["hits"][0]
    assert best["description"] == "A red square." and best["metadata"] == {"shade": "red"}
    # Relative to the knowledge base, never the machine's absolute path.
    assert best["image_path"] == "../image_database/warm/red.png"
    assert best["image_url"] == f"/v1/images/{best['id']}"
    assert best["signals"]["vector"]["rank"] == 1 and best["similarity"] == pytest.approx(best["score"])


def test_search_passes_text_filter_and_mode(client: TestClient) -> None:
    hits = client.post("/v1/search", data={"text": "blue", "mode": "vector", "k": "8"}).json()["hits"]
    assert hits[0]["description"] == "A blue square." and set(hits[0]["signals"]) == {"vector"}
    lexical = client.post("/v1/search", data={"text": "green", "mode": "lexical"}).json()["hits"]
    assert [hit["description"] for hit in lexical] == ["A green square."] and set(lexical[0]["signals"]) == {"lexical"}
    assert lexical[0]["matched"] == ["green"] and hits[0]["matched"] == []  # why the words found it
    shades = {"$in": ["green", "cyan"]}
    filtered = client.post(
        "/v1/search", files=image_part("red"), data={"k": "8", "filter": json.dumps({"shade": shades})}
    ).json()["hits"]
    assert sorted(hit["metadata"]["shade"] for hit in filtered) == ["cyan", "green"]


@pytest.mark.parametrize(
    ("data", "status", "says"),
    [
        ({}, 400, "an image file, a text"),
        ({"text": "red", "k": "0"}, 400, "k must be at least 1"),
        ({"text": "red", "k": "51"}, 400, "k must be at most 50"),
        ({"text": "red", "k": "many"}, 400, "k must be an integer"),
        ({"text": "red", "filter": "{not json"}, 400, "filter is not JSON"),
        ({"text": "red", "filter": "[1]"}, 400, "filter must be a JSON object"),
        ({"text": "red", "filter": '{"shade": {"$near": 1}}'}, 400, "$near"),
        ({"text": "red", "filter": "[" * 100_000}, 400, "filter is nested more than 128 levels deep"),
        ({"text": "red", "filter": '{"a":' * 5000}, 400, "filter is nested more than 128 levels deep"),
        ({"text": "red", "filter": '{"a": ' + "1" * 4401 + "}"}, 400, "more than 4,300 digits"),
        ({"text": "red", "mode": "fuzzy"}, 400, "mode must be one of"),
        ({"text": "red", "text_weight": "nan"}, 400, "text_weight must be a number"),
    ],
)
def test_bad_search_fields_are_clear_400s(client: TestClient, data: dict, status: int, says: str) -> None:
    response = client.post("/v1/search", data=data, files={"unused": ("x.txt", b"", "text/plain")})
    assert response.status_code == status, response.text
    problem = response.json()["error"]
    assert says in problem["message"] and problem["status"] == status and problem["type"]


def test_upload_limits_and_content_types(kb_path: Path) -> None:
    with make_client(kb_path, max_upload_bytes=20_000) as client:
        big = encoded(Image.effect_noise((200, 200), 64).convert("RGB"))
        assert len(big) > 20_000
        response = client.post("/v1/search", files={"image": ("big.png", big, "image/png")})
        assert response.status_code == 413 and response.json()["error"]["type"] == "PayloadTooLarge"

        # A body sent without Content-Length is counted as it arrives.
        def chunks():
            yield b"--b\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\n"
            for _ in range(30):
                yield b"x" * 1000
            yield b"\r\n--b--\r\n"

        chunked = client.post("/v1/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert chunked.status_code == 413

        wrong_type = client.post("/v1/search", files={"image": ("notes.txt", b"hello", "text/plain")})
        assert wrong_type.status_code == 415 and "image/png" in wrong_type.json()["error"]["message"]
        not_a_form = client.post("/v1/search", json={"text": "red"})
        assert not_a_form.status_code == 415 and "multipart/form-data" in not_a_form.json()["error"]["message"]
        lying = client.post("/v1/search", files={"image": ("fake.png", b"not an image at all", "image/png")})
        assert lying.status_code == 422 and lying.json()["error"]["type"] == "ImageError"
        two_files = client.post(
            "/v1/search",
            files=[("image", ("a.png", png("red"), "image/png")), ("image", ("b.png", png("blue"), "image/png"))],
        )
        assert two_files.status_code == 400


def test_the_token_guards_the_api_but_not_health_or_the_page(kb_path: Path) -> None:
    with make_client(kb_path, token=TOKEN) as client:
        missing = client.get("/v1/info")
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert "needs a bearer token" in missing.json()["error"]["message"]
        wrong = client.post("/v1/search", data={"text": "red"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "wrong" in wrong.json()["error"]["message"]
        basic = client.get("/v1/info", headers={"Authorization": f"Basic {TOKEN}"})
        assert basic.status_code == 401
        right = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/v1/info", headers=right).json()["auth"] is True
        hit = client.post("/v1/search", data={"text": "red"}, headers=right).json()["hits"][0]
        assert client.get(hit["image_url"]).status_code == 401
        assert client.get(hit["image_url"], headers=right).status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200
        assert client.get("/openapi.json").json()["security"] == [{"bearer": []}]


def test_thumbnails(client: TestClient, tmp_path: Path) -> None:
    hit = client.post("/v1/search", files=image_part("yellow"), data={"k": "1"}).json()["hits"][0]
    response = client.get(hit["image_url"], params={"size": "20"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumbnail = Image.open(io.BytesIO(response.content))
    assert thumbnail.format == "JPEG" and max(thumbnail.size) == 20
    assert max(Image.open(io.BytesIO(client.get(hit["image_url"]).content)).size) <= 256
    assert client.get("/v1/images/no-such-id").status_code == 404
    assert client.get(hit["image_url"], params={"size": "5000"}).status_code == 400
    assert client.get(hit["image_url"], params={"size": "big"}).status_code == 400


def test_ask_answers_as_json_with_matches_and_sources(client: TestClient) -> None:
    response = client.post("/v1/ask", files=image_part("red"), data={"question": "What is this?", "k": "2"})
    body = response.json()
    assert response.status_code == 200
    assert body["answer"]["text"].startswith("Best match: A red square.")
    assert body["answer"]["model"] == "extractive" and len(body["matches"]) == 2
    source = body["answer"]["sources"][0]
    assert source["image_path"] == "../image_database/warm/red.png" and source["image_url"].startswith("/v1/images/")
    # Without an image the question is the search.
    assert client.post("/v1/ask", data={"question": "green"}).json()["matches"][0]["description"] == "A green square."
    assert client.post("/v1/ask", data={"question": "  "}).status_code == 400
    assert client.post("/v1/ask", data={"question": "Q", "stream": "perhaps"}).status_code == 400


def read_events(text: str) -> list[tuple[str, dict]]:
    """Parse server-sent events, checking each block is exactly ``event:`` then one ``data:`` line."""
    assert text.endswith("\n\n")
    events = []
    for block in text[:-2].split("\n\n"):
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        events.append((event_line[7:], json.loads(data_line[6:])))
    return events


def test_ask_streams_server_sent_events_from_the_model(kb_path: Path, chat_server) -> None:
    answerer = OpenAIAnswerer(model="m", api_key="k", base_url=chat_server.url, max_retries=0, timeout=5.0)
    chat_server.reply(stream(["It is ", "red.\nQuite."]), error(500, "model fell over"))
    with make_client(kb_path, answerer=answerer) as client:
        response = client.post("/v1/ask", files=image_part("red"), data={"question": "What?", "stream": "true"})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = read_events(response.text)
        assert [name for name, _ in events] == ["matches", "chunk", "chunk", "answer", "done"]
        assert events[0][1]["matches"][0]["description"] == "A red square."
        assert [data["text"] for name, data in events if name == "chunk"] == ["It is ", "red.\nQuite."]
        answer = events[3][1]
        assert answer["text"] == "It is red.\nQuite." and answer["model"] == "served-model"
        assert answer["usage"]["total_tokens"] == 18 and answer["sources"][0]["image_url"]
        # A provider that fails before the stream starts gets a JSON error, not an event stream.
        failed = client.post("/v1/ask", data={"question": "red?", "stream": "true"})
        assert failed.status_code == 502 and failed.json()["error"]["type"].startswith("Answerer")
        assert "model fell over" in failed.json()["error"]["message"]


def test_offline_answer_streams_as_one_chunk(client: TestClient) -> None:
    response = client.post("/v1/ask", data={"question": "blue", "stream": "1"})
    names = [name for name, _ in read_events(response.text)]
    assert names == ["matches", "chunk", "answer", "done"]


_WRITER = """
import sys
from helpers import ColorEmbedder, solid
from multimodal_rag import MultimodalRAG

with MultimodalRAG.open(sys.argv[1], embedder=ColorEmbedder()) as rag:
    rag.add([solid((250, 128, 10), (30, 30))], descriptions=["An orange square."], metadata=[{"shade": "orange"}])
"""


def test_a_save_by_another_process_is_served(kb_path: Path) -> None:
    with make_client(kb_path, reload_interval=0.05) as client:
        before = client.get("/healthz").json()
        subprocess.run(
            [sys.executable, "-c", _WRITER, str(kb_path)],
            check=True,
            cwd=TESTS,
            env={**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{TESTS.parent / 'src'}"},
            timeout=120,
        )
        deadline = time.monotonic() + 15
        while client.get("/healthz").json()["generation"] == before["generation"]:
            assert time.monotonic() < deadline, "the new generation was not picked up"
            time.sleep(0.05)
        after = client.get("/healthz").json()
        assert after["images"] == before["images"] + 1 and after["generation"] > before["generation"]
        hits = client.post("/v1/search", data={"text": "orange", "mode": "lexical"}).json()["hits"]
        assert hits[0]["description"] == "An orange square."
        assert client.get("/v1/info").json()["reloads"] == 1
        # Its thumbnail (kept inside the knowledge base) is reachable, by a path relative to it.
        assert hits[0]["image_path"].startswith("images/")
        assert client.get(hits[0]["image_url"]).status_code == 200


def test_a_touched_manifest_is_not_a_reload(kb_path: Path) -> None:
    knowledge_base = ReloadingKnowledgeBase(kb_path, embedder=ColorEmbedder(), answerer=ExtractiveAnswerer())
    knowledge_base.open()
    manifest = kb_path / "manifest.json"
    manifest.write_bytes(manifest.read_bytes())  # same generation, new modification time
    assert knowledge_base.reload_if_saved() is False and knowledge_base.reloads == 0


def test_the_server_is_imported_only_when_serving() -> None:
    code = (
        "import sys, multimodal_rag, multimodal_rag.cli; "
        "print(sorted(m for m in ('starlette', 'fastapi', 'pydantic', 'uvicorn', 'multipart', 'multimodal_rag.server') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]"


def test_serve_fails_plainly_on_a_missing_knowledge_base(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from multimodal_rag.cli import cli

    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "nowhere"), "--port", "0"])
    assert result.exit_code == 1 and "error:" in result.output and "nowhere" in result.output
    assert "--token" in CliRunner().invoke(cli, ["serve", "--help"]).output


def test_serve_exits_with_1_when_the_port_is_taken(kb_path: Path) -> None:
    import socket

    from click.testing import CliRunner

    from multimodal_rag.cli import cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--allow-module", "helpers", "serve", str(kb_path), "--port", str(port), "--answerer", "extractive"]
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert "Serving" in result.output and "could not start on 127.0.0.1" in result.output


# -- hostile clients ---------------------------------------------------------------


def test_only_the_allowed_hosts_are_served_and_other_origins_may_not_post(kb_path: Path) -> None:
    with make_client(kb_path) as client:
        # A page whose name was rebound to this address sends its own name as the Host.
        rebound = client.get("/v1/info", headers={"Host": "attacker.example:8000"})
        assert rebound.status_code == 421 and "attacker.example" in rebound.json()["error"]["message"]
        assert client.get("/healthz", headers={"Host": "attacker.example"}).status_code == 421
        assert client.get("/v1/info", headers={"Host": "testserver:8000"}).status_code == 200
        foreign = client.post("/v1/ask", data={"question": "What is red?"}, headers={"Origin": "https://attacker.example"})
        assert foreign.status_code == 403 and foreign.json()["error"]["type"] == "CrossOriginRequest"
        sandboxed = client.post("/v1/search", data={"text": "red"}, headers={"Origin": "null"})
        assert sandboxed.status_code == 403
        cross_site = client.post("/v1/search", data={"text": "red"}, headers={"Sec-Fetch-Site": "cross-site"})
        assert cross_site.status_code == 403
        own_page = client.post("/v1/search", data={"text": "red"}, headers={"Origin": "http://testserver"})
        assert own_page.status_code == 200
        long_question = client.post("/v1/ask", data={"question": "x" * 4001})
        assert long_question.status_code == 400 and "at most 4,000" in long_question.json()["error"]["message"]
    with make_client(kb_path, token=TOKEN) as client:  # a page of another site cannot add the token
        right = {"Authorization": f"Bearer {TOKEN}", "Origin": "https://tool.example"}
        assert client.post("/v1/search", data={"text": "red"}, headers=right).status_code == 200
    with TestClient(create_app(ReloadingKnowledgeBase(kb_path, embedder=ColorEmbedder()), ServerSettings(reload_interval=0))) as default:
        assert default.get("/v1/info").status_code == 421  # only loopback names unless told otherwise
        assert default.get("/v1/info", headers={"Host": "127.0.0.1:8000"}).status_code == 200
        assert default.get("/v1/info", headers={"Host": "[::1]:8000"}).status_code == 200


def test_serve_refuses_to_listen_beyond_loopback_without_a_token(kb_path: Path) -> None:
    from click.testing import CliRunner

    from multimodal_rag.cli import cli

    args = ["--allow-module", "helpers", "serve", str(kb_path), "--host", "0.0.0.0", "--port", "0"]
    result = CliRunner().invoke(cli, args, env={"MULTIMODAL_RAG_TOKEN": None})
    assert result.exit_code == 2 and "--allow-unauthenticated" in result.output and "Serving" not in result.output


def test_thumbnails_show_only_files_inside_the_knowledge_base_or_an_image_root(kb_path: Path, tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir()
    solid("red", (40, 30)).save(private / "secret.png")
    with MultimodalRAG.open(kb_path, embedder=ColorEmbedder()) as rag:
        record = rag.get(rag.ids()[0])
        # What a crafted description store can hold: a path leading out of the knowledge base.
        forged = os.path.relpath(private / "secret.png", kb_path)
        assert forged.startswith("..")
        rag.description_store.put([attrs.evolve(record, image_path=forged)])
        rag.save()
        assert rag.verify().of_kind("image-outside")[0].id == record.id
    with make_client(kb_path) as client:
        refused = client.get(f"/v1/images/{record.id}", params={"size": "1024"})
        assert refused.status_code == 404 and "secret" not in refused.text
        others = [i for i in client.post("/v1/search", data={"text": "red", "k": "8"}).json()["hits"] if i["id"] != record.id]
        assert client.get(others[0]["image_url"]).status_code == 200  # inside the image root
    with make_client(kb_path, image_roots=[private]) as client:
        assert client.get(f"/v1/images/{record.id}").status_code == 200  # the operator allowed that folder
    with make_client(kb_path, image_roots=[]) as client:
        assert client.get(others[0]["image_url"]).status_code == 404  # nothing outside without a root


def progressive_bomb() -> bytes:
    """A JPEG of a few hundred bytes claiming 13376x13376 pixels, progressive: 1 GB to decode."""
    import struct

    data = bytearray(encoded(solid("red", (64, 64)), "JPEG", progressive=True))
    struct.pack_into(">HH", data, data.index(b"\xff\xc2") + 5, 13376, 13376)
    return bytes(data)


def test_an_upload_is_checked_from_its_header_before_it_is_decoded(kb_path: Path) -> None:
    with make_client(kb_path) as client:
        bomb = client.post("/v1/search", files={"image": ("photo.jpg", progressive_bomb(), "image/jpeg")})
        assert bomb.status_code == 422 and "more than the limit of 16,000,000" in bomb.json()["error"]["message"]
        ppm = client.post("/v1/search", files={"image": ("photo.png", encoded(solid("red"), "PPM"), "image/png")})
        assert ppm.status_code == 422 and "not a known image format" in ppm.json()["error"]["message"]
        assert client.get("/v1/info").json()["limits"]["max_upload_pixels"] == 16_000_000


def _serve(kb_path: Path, *options: str) -> tuple[subprocess.Popen[str], int]:
    """``multimodal-rag serve`` on a free loopback port, once it answers /healthz."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "src"), str(TESTS)])}
    env.pop("MULTIMODAL_RAG_TOKEN", None)
    args = ["--allow-module", "helpers", "serve", str(kb_path), "--port", str(port), "--answerer", "extractive"]
    server = subprocess.Popen(
        [sys.executable, "-m", "multimodal_rag", *args, *options],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
            return server, port
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.1)
    server.kill()
    raise AssertionError(f"the server did not start: {server.communicate()[1]}")


def _until_closed(port: int, sent: bytes) -> tuple[float, bytes]:
    """Send ``sent`` and wait for the server to end the connection: seconds taken, status line."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=20) as connection:
        connection.sendall(sent)
        start = time.monotonic()
        answer = b""
        while chunk := connection.recv(4096):
            answer += chunk
    return time.monotonic() - start, answer.split(b"\r\n")[0]


def test_slow_clients_are_cut_off_in_time_and_counted_not_traced(kb_path: Path) -> None:
    import socket
    import urllib.error
    import urllib.request

    server, port = _serve(kb_path, "--header-timeout", "0.5", "--body-timeout", "1", "--max-connections", "8")
    search = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/search", data=b"text=red", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    partial_headers = b"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n"
    partial_body = partial_headers + b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
    try:
        took, status = _until_closed(port, partial_headers)
        assert status == b"" and 0.4 < took < 5, (took, status)
        took, status = _until_closed(port, partial_body)
        assert status == b"HTTP/1.1 408 Request Timeout" and 0.9 < took < 5, (took, status)

        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        try:
            for connection in held:
                connection.sendall(partial_headers)
            start = time.monotonic()
            with pytest.raises(urllib.error.HTTPError) as busy:
                urllib.request.urlopen(search, timeout=10)
            assert busy.value.code == 503 and time.monotonic() - start < 5  # told at once, not left waiting
            busy.value.close()
            time.sleep(1.5)  # the held connections' header deadline passes
            with urllib.request.urlopen(search, timeout=10) as served:
                assert served.status == 200
        finally:
            for connection in held:
                connection.close()
        with socket.create_connection(("127.0.0.1", port)) as leaving:
            leaving.sendall(partial_body)  # and goes away mid-body
        time.sleep(0.3)
    finally:
        server.terminate()
        log = server.communicate(timeout=30)[1]
    assert "Traceback" not in log and "ERROR" not in log, log
    assert log.count("closed a connection that sent no complete request headers") == 1, log
    assert log.count("refused a connection over the connection limit") == 1, log
    assert log.count("answered 408") == 1, log


# -- the error shape and the schema ------------------------------------------------


def assert_error(response, status: int, says: str) -> dict:
    """``response`` is the JSON error body with ``status``, its message holding ``says``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    problem = response.json()["error"]
    assert problem["status"] == status and problem["type"] and says in problem["message"], problem
    return problem


def test_every_error_is_json_unknown_routes_and_methods_included(client: TestClient) -> None:
    assert_error(client.get("/no/such/page"), 404, "/no/such/page")
    not_allowed = assert_error(client.get("/v1/search"), 405, "POST")
    assert not_allowed["type"] == "MethodNotAllowed"
    assert client.get("/v1/search").headers["allow"] == "POST"
    assert_error(client.delete("/v1/info"), 405, "GET")
    assert_error(client.get("/healthz", headers={"Host": "elsewhere.example"}), 421, "elsewhere.example")


def test_an_invalid_id_is_a_400_and_an_unknown_one_a_404(client: TestClient) -> None:
    assert_error(client.get("/v1/images/"), 400, "id must not be empty")
    assert_error(client.get("/v1/images/bad%01id"), 400, "control character")
    assert_error(client.get("/v1/images/" + "x" * 1000), 400, "bytes of UTF-8")
    assert_error(client.get("/v1/images/no-such-id"), 404, "no-such-id")
    # Records of version 0.1.0 may hold a slash: their percent-encoded address is looked up.
    assert assert_error(client.get("/v1/images/old%2Fid"), 404, "'old/id'")["type"] == "NotFoundError"


def test_a_connection_over_the_cap_gets_the_json_error() -> None:
    from multimodal_rag.server.connections import _BUSY

    head, _, body = _BUSY.partition(b"\r\n\r\n")
    assert f"content-length: {len(body)}".encode() in head.lower()
    assert json.loads(body) == {
        "error": {"type": "ServiceUnavailable", "message": "too many connections; retry", "status": 503}
    }


def test_the_schema_is_generated_from_what_the_handlers_accept_and_return(kb_path: Path) -> None:
    with make_client(kb_path, max_k=7, max_thumbnail_size=300) as client:
        schema = client.get("/openapi.json").json()
        components = schema["components"]["schemas"]
        # The answer's sources are Sources (no similarity, no signals), not Hits.
        sources = components["Answer"]["properties"]["sources"]["items"]
        assert sources == {"$ref": "#/components/schemas/Source"}
        answer = client.post("/v1/ask", data={"question": "red", "k": "2"}).json()["answer"]
        assert set(answer["sources"][0]) == set(components["Source"]["properties"])
        # The limits the server enforces are the schema's.
        for path in ("/v1/search", "/v1/ask"):
            form = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
            # An optional field may also be empty (not given), as an HTML form sends it.
            k, empty = form["properties"]["k"]["anyOf"]
            assert (k["minimum"], k["maximum"], empty) == (1, 7, {"const": "", "description": "Empty: not given."})
            assert form["properties"]["text"]["anyOf"][0]["maxLength"] == 4000
        assert_error(client.post("/v1/search", data={"text": "red", "k": "8"}), 400, "k must be at most 7")
        assert client.post("/v1/search", data={"text": "red", "k": "7"}).json()["count"] == 7
        size = next(p for p in schema["paths"]["/v1/images/{id}"]["get"]["parameters"] if p["name"] == "size")
        assert size["schema"]["maximum"] == 300
        # Every operation documents the 503 of the connection cap; every error is the error body.
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                responses = operation["responses"]
                assert {"421", "503"} <= set(responses), (path, method)
                for status, response in responses.items():
                    if int(status) >= 400:
                        assert response["content"] == {
                            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                        }, (path, method, status)
        assert "HTTPValidationError" not in components  # a refused field is a 400 with the error body
        ask = schema["paths"]["/v1/ask"]["post"]
        assert {"502", "504"} <= set(ask["responses"]) and "text/event-stream" in ask["responses"]["200"]["content"]


def test_serve_lang_shows_the_page_in_that_language_whatever_the_browser_asks(kb_path: Path) -> None:
    import urllib.request

    server, port = _serve(kb_path, "--lang", "fa")
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Accept-Language": "en-US,en;q=0.9"})
        with urllib.request.urlopen(request, timeout=10) as response:
            page = response.read().decode("utf-8")
            assert response.headers["Content-Language"] == "fa" and response.headers["Vary"] is None
        assert '<html lang="fa" dir="rtl">' in page and ">پرسش" in page and "Number of matches" not in page
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_the_start_line_gives_command_line_advice(kb_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without OPENAI_API_KEY, serve says how to answer with a model in the terms of its own
    options and environment, never with a Python argument."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server, _ = _serve(kb_path, "--answerer", "auto")
    server.terminate()
    log = server.communicate(timeout=30)[1]
    start = next(line for line in log.splitlines() if line.startswith("Serving "))
    assert "OPENAI_API_KEY" in start and "answerer=" not in start, start
