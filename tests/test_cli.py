"""The ``multimodal-rag`` command line, run as a user runs it: in a subprocess.

The knowledge base here uses the deterministic colour embedder from ``helpers``
(named by dotted path, so the CLI's ``--allow-module`` is exercised too): a red
image is near the text "red", which lets search results be checked exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from helpers import current_snapshot, solid

REPO = Path(__file__).resolve().parents[1]
COLOR = ("--allow-module", "helpers")
COLORS = ("red", "green", "blue", "yellow", "white")


def run_cli(
    *args: object, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m multimodal_rag ARGS`` against this checkout's code."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("MULTIMODAL_RAG_", "OPENAI_"))
    }
    environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "multimodal_rag", *map(str, args)],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=300,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five solid-colour images (white has no description) and one broken file."""
    root = tmp_path_factory.mktemp("photos")
    lines = []
    for i, name in enumerate(COLORS):
        solid(name, (40 + 8 * i, 30)).save(root / f"{name}.png")
        if name != "white":
            lines.append(
                json.dumps(
                    {"image_path": f"{name}.png", "description": f"A {name} card.", "tone": name}
                )
            )
    (root / "broken.jpg").write_bytes(b"this is not a JPEG")
    (root / "descriptions.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def built(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A knowledge base indexed from ``photos`` by the CLI, and the index command's JSON."""
    kb = tmp_path_factory.mktemp("kbs") / "kb"
    result = ok(
        run_cli(
            *COLOR,
            "index",
            photos,
            "--kb",
            kb,
            "--descriptions",
            photos / "descriptions.jsonl",
            "--embedder",
            "helpers:ColorEmbedder",
            "--json",
        )
    )
    return kb, json.loads(result.stdout)


@pytest.fixture
def kb(built: tuple[Path, dict], tmp_path: Path) -> Path:
    """A private copy of the built knowledge base, for tests that change it."""
    return Path(shutil.copytree(built[0], tmp_path / "kb"))


def search_json(kb: Path, *args: object) -> dict:
    return json.loads(ok(run_cli(*COLOR, "search", kb, *args, "--json")).stdout)


# -- index ---------------------------------------------------------------------


def test_index_reports_added_skipped_and_undescribed(
    built: tuple[Path, dict], photos: Path
) -> None:
    kb, report = built
    assert set(report) == {
        "schema_version",
        "kb",
        "created",
        "added",
        "duplicates",
        "skipped",
        "undescribed",
        "total",
    }
    assert report["created"] is True and report["kb"] == str(kb)
    assert len(report["added"]) == len(COLORS) == report["total"]
    assert report["duplicates"] == []
    assert [s["source"] for s in report["skipped"]] == [str(photos / "broken.jpg")]
    assert "not a known image format" in report["skipped"][0]["reason"]
    assert len(report["undescribed"]) == 1 and report["undescribed"][0] in report["added"]


def test_index_again_deduplicates_and_prints_a_summary(kb: Path, photos: Path) -> None:
    result = ok(run_cli(*COLOR, "index", photos, "--kb", kb))
    assert f"Updated knowledge base {kb}: 5 images in total." in result.stdout
    assert "added:       0" in result.stdout
    assert "duplicates:  5" in result.stdout
    assert "skipped:     1" in result.stdout and "broken.jpg: cannot read image" in result.stdout


@pytest.mark.parametrize(
    ("flag", "kind"), [("hnsw", "faiss-hnsw"), ("hnswlib", "hnswlib"), ("ivf", "faiss-ivf")]
)
def test_index_creates_the_chosen_vector_index(
    photos: Path, tmp_path: Path, flag: str, kind: str
) -> None:
    kb = tmp_path / "kb"
    ok(
        run_cli(
            *COLOR,
            "index",
            photos,
            "--kb",
            kb,
            "--embedder",
            "helpers:ColorEmbedder",
            "--index",
            flag,
        )
    )
    assert json.loads(ok(run_cli("info", kb, "--json")).stdout)["vector_store"]["kind"] == kind
    best = search_json(kb, "--image", photos / "yellow.png", "-k", "1")["hits"][0]
    assert Path(best["image_path"]).name == "yellow.png" and best["score"] == pytest.approx(
        1.0, abs=1e-5
    )


def test_index_refuses_another_index_kind_for_an_existing_knowledge_base(
    kb: Path, photos: Path
) -> None:
    result = run_cli(*COLOR, "index", photos, "--kb", kb, "--index", "hnsw")
    assert result.returncode == 2
    assert "applies only when creating" in result.stderr and "faiss-flat" in result.stderr


def test_clip_options_are_refused_for_another_embedder(photos: Path, tmp_path: Path) -> None:
    result = run_cli(
        *COLOR,
        "index",
        photos,
        "--kb",
        tmp_path / "kb",
        "--embedder",
        "helpers:ColorEmbedder",
        "--model",
        "RN50",
    )
    assert result.returncode == 2 and "--model apply only to the clip embedder" in result.stderr
    assert not (tmp_path / "kb").exists()


def test_a_custom_embedder_module_must_be_allowed(photos: Path, tmp_path: Path) -> None:
    result = run_cli(
        "index", photos, "--kb", tmp_path / "kb", "--embedder", "helpers:ColorEmbedder"
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "--allow-module" not in result.stdout
    assert "not allowed" in result.stderr
    # The advice names the command line's option, not the Python argument.
    assert "allow it with --allow-module helpers" in result.stderr
    assert "allow_modules" not in result.stderr


# -- search --------------------------------------------------------------------


def test_search_by_text_ranks_the_named_colour_first(built: tuple[Path, dict]) -> None:
    answer = search_json(built[0], "--text", "blue", "-k", "3")
    assert answer["query"] == {"image": None, "text": "blue"} and answer["k"] == 3
    hits = answer["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert set(hits[0]) == {"rank", "id", "score", "image_path", "description", "metadata", "similarity", "signals", "matched"}
    # A text searches the descriptions' words too (hybrid): each hit says which channel found it.
    assert "vector" in hits[0]["signals"] and hits[0]["signals"]["vector"]["score"] == pytest.approx(hits[0]["similarity"])
    assert hits[0]["description"] == "A blue card." and hits[0]["metadata"] == {"tone": "blue"}
    assert Path(hits[0]["image_path"]).name == "blue.png"
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]


def test_search_by_image_finds_itself_with_score_one(
    built: tuple[Path, dict], photos: Path
) -> None:
    result = ok(run_cli(*COLOR, "search", built[0], "--image", photos / "green.png", "-k", "2"))
    lines = result.stdout.splitlines()
    assert lines[0].startswith(" 1. 1.0000  A green card.")
    assert "green.png" in lines[1] and len(lines) == 4


def test_search_with_a_metadata_filter(built: tuple[Path, dict]) -> None:
    hits = search_json(built[0], "--text", "blue", "--where", "tone=red")["hits"]
    assert [h["description"] for h in hits] == ["A red card."]


def test_search_needs_a_query(built: tuple[Path, dict]) -> None:
    result = run_cli(*COLOR, "search", built[0])
    assert result.returncode == 2 and "give --image, --text, or both" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("search", "KB", "--text", "red", "-k", "0"),  # k below 1
        ("search", "KB", "--image", "no-such-file.png"),  # missing file
        ("search", "KB", "--text", "red", "--where", "tone"),  # not KEY=VALUE
        ("frobnicate",),  # unknown command
        ("show", "KB", "--image", "no-such-file.png"),  # missing --out
    ],
)
def test_bad_usage_exits_2(built: tuple[Path, dict], args: tuple[str, ...]) -> None:
    result = run_cli(*COLOR, *(str(built[0]) if a == "KB" else a for a in args))
    assert result.returncode == 2, result.stderr
    assert "Usage:" in result.stderr and "Traceback" not in result.stderr


def test_failures_exit_1_with_a_message_and_a_traceback_only_under_debug(tmp_path: Path) -> None:
    result = run_cli("search", tmp_path / "nowhere", "--text", "red")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: no knowledge base at {str(tmp_path / 'nowhere')!r}"
    assert result.stdout == ""
    debug = run_cli("--debug", "search", tmp_path / "nowhere", "--text", "red")
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "KnowledgeBaseNotFoundError" in debug.stderr


# -- ask -----------------------------------------------------------------------


def test_ask_answers_offline_without_an_api_key(built: tuple[Path, dict], photos: Path) -> None:
    result = ok(
        run_cli(*COLOR, "ask", built[0], "--image", photos / "blue.png", "What is this?", "-k", "2")
    )
    assert result.stdout.startswith("Best match: A blue card. (id ")
    assert "Sources:\n 1. 1.0000  A blue card.  [" in result.stdout
    assert "Answered by extractive in " in result.stdout
    assert "OPENAI_API_KEY is not set: answering offline with ExtractiveAnswerer" in result.stderr

    answer = json.loads(
        ok(
            run_cli(
                *COLOR, "ask", built[0], "--image", photos / "blue.png", "What is this?", "--json"
            )
        ).stdout
    )
    assert set(answer) == {"schema_version", "question", "image", "answer", "model", "sources", "usage", "latency_s"}
    assert answer["question"] == "What is this?" and answer["image"] == str(photos / "blue.png")
    assert answer["model"] == "extractive" and answer["answer"].startswith(
        "Best match: A blue card."
    )
    assert len(answer["sources"]) == 3
    assert set(answer["sources"][0]) == {"id", "score", "description", "image_path"}
    assert answer["sources"][0]["description"] == "A blue card."


def test_ask_streams_the_same_answer(built: tuple[Path, dict], photos: Path) -> None:
    whole = ok(
        run_cli(*COLOR, "ask", built[0], "--image", photos / "red.png", "Which card?")
    ).stdout
    streamed = ok(
        run_cli(*COLOR, "ask", built[0], "--image", photos / "red.png", "Which card?", "--stream")
    ).stdout
    strip = lambda text: text.rsplit("Answered by", 1)[0].strip()  # noqa: E731 - latency differs
    assert strip(streamed) == strip(whole)


def test_ask_without_an_image_searches_with_the_question(built: tuple[Path, dict]) -> None:
    answer = json.loads(ok(run_cli(*COLOR, "ask", built[0], "yellow", "--json", "-k", "1")).stdout)
    assert answer["image"] is None and answer["sources"][0]["description"] == "A yellow card."


def test_ask_through_an_openai_compatible_server(
    built: tuple[Path, dict], photos: Path, chat_server
) -> None:
    from chat_server import completion, stream

    env = {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": chat_server.url}
    chat_server.reply(completion("It is a green card."), stream(["It is ", "a green ", "card."]))
    answer = json.loads(
        ok(
            run_cli(
                *COLOR,
                "ask",
                built[0],
                "--image",
                photos / "green.png",
                "What is it?",
                "--answer-model",
                "vision-1",
                "--json",
                env=env,
            )
        ).stdout
    )
    assert answer["answer"] == "It is a green card." and answer["usage"]["prompt_tokens"] == 11
    assert answer["sources"][0]["description"] == "A green card."
    request = chat_server.requests[0]
    assert request.body["model"] == "vision-1"
    assert "A green card." in request.text() and "What is it?" in request.text()

    streamed = ok(
        run_cli(
            *COLOR,
            "ask",
            built[0],
            "--image",
            photos / "green.png",
            "What is it?",
            "--stream",
            env=env,
        )
    )
    assert streamed.stdout.startswith("It is a green card.\n")
    assert "OPENAI_API_KEY is set" in streamed.stderr
    assert chat_server.requests[1].body["stream"] is True


def test_ask_refuses_bad_combinations(built: tuple[Path, dict]) -> None:
    both = run_cli(*COLOR, "ask", built[0], "q", "--stream", "--json")
    assert both.returncode == 2 and "--stream and --json cannot be combined" in both.stderr
    no_key = run_cli(*COLOR, "ask", built[0], "q", "--answerer", "openai")
    assert no_key.returncode == 1 and no_key.stderr.startswith("error: no OpenAI API key")


# -- info ----------------------------------------------------------------------


def test_info_describes_the_knowledge_base(built: tuple[Path, dict]) -> None:
    kb = built[0]
    info = json.loads(ok(run_cli("info", kb, "--json")).stdout)
    assert info["kb"] == str(kb) and info["format"] == "multimodal-rag-knowledge-base"
    assert info["format_version"] == 1 and info["generation"] >= 1
    assert info["embedder"] == {
        "kind": "helpers:ColorEmbedder",
        "config": {"grid": 4},
        "fingerprint": "test-color:grid=4",
        "dim": 48,
    }
    assert info["vector_store"] == {"kind": "faiss-flat", "config": {}}
    assert info["description_store"]["kind"] == "sqlite"
    assert info["counts"] == {"vectors": 5, "descriptions": 5}
    on_disk = sum(p.stat().st_size for p in kb.rglob("*") if p.is_file())
    assert info["size_bytes"] == on_disk
    text = ok(run_cli("info", kb)).stdout
    assert "faiss-flat" in text and "5 vectors" in text and "48-d" in text


# -- remove and describe -------------------------------------------------------


def test_remove_by_id_and_by_prefix(kb: Path) -> None:
    ids = [h["id"] for h in search_json(kb, "--text", "red", "-k", "5")["hits"]]
    result = json.loads(ok(run_cli(*COLOR, "remove", kb, ids[0], ids[1][:8], "--json")).stdout)
    assert result == {"schema_version": 1, "removed": [ids[0], ids[1]], "missing": [], "total": 3}
    left = {h["id"] for h in search_json(kb, "--text", "red", "-k", "5")["hits"]}
    assert left == set(ids[2:])


def test_remove_of_an_unknown_id_changes_nothing_unless_missing_ok(kb: Path) -> None:
    some_id = search_json(kb, "--text", "red", "-k", "1")["hits"][0]["id"]
    refused = run_cli(*COLOR, "remove", kb, some_id, "feedbeef")
    assert (
        refused.returncode == 1
        and "'feedbeef'" in refused.stderr
        and "nothing was changed" in refused.stderr
    )
    assert len(search_json(kb, "--text", "red", "-k", "9")["hits"]) == 5
    done = ok(run_cli(*COLOR, "remove", kb, some_id, "feedbeef", "--missing-ok"))
    assert "Removed 1 image; 4 left." in done.stdout and "not found: feedbeef" in done.stdout


def test_describe_replaces_a_description_without_reembedding(kb: Path) -> None:
    white = search_json(kb, "--text", "white", "-k", "1")["hits"][0]
    assert white["description"] is None
    record = json.loads(
        ok(run_cli(*COLOR, "describe", kb, white["id"], "A plain white card.", "--json")).stdout
    )
    assert record["id"] == white["id"] and record["description"] == "A plain white card."
    again = search_json(kb, "--text", "white", "-k", "1")["hits"][0]
    # Not embedded again: the image's cosine to the query is what it was (the fused score
    # moves, since the words of the new description now match too).
    assert again["description"] == "A plain white card." and again["similarity"] == pytest.approx(
        white["similarity"]
    )
    unknown = run_cli(*COLOR, "describe", kb, "0000ffff", "text")
    assert unknown.returncode == 1 and "no image with id '0000ffff'" in unknown.stderr


def test_a_writer_lock_refuses_a_second_writer_but_not_readers(kb: Path) -> None:
    code = (
        "import sys, time; from multimodal_rag import MultimodalRAG; "
        f"rag = MultimodalRAG.open({str(kb)!r}, allow_modules=['helpers']); "
        "print('locked', flush=True); sys.stdin.read()"
    )
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]),
    }
    holder = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=environ,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        refused = run_cli(*COLOR, "describe", kb, "0000ffff", "text")
        assert refused.returncode == 1 and "open for writing in another process" in refused.stderr
        assert "read_only" not in refused.stderr and "search, ask, show" in refused.stderr
        assert (
            search_json(kb, "--text", "red", "-k", "1")["hits"][0]["description"] == "A red card."
        )
    finally:
        holder.communicate("", timeout=60)


# -- verify and repair ---------------------------------------------------------


@pytest.fixture
def own_kb(photos: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A knowledge base over a private copy of the photos, whose files a test may delete."""
    folder = Path(shutil.copytree(photos, tmp_path / "photos"))
    kb = tmp_path / "kb"
    ok(
        run_cli(
            *COLOR,
            "index",
            folder,
            "--kb",
            kb,
            "--descriptions",
            folder / "descriptions.jsonl",
            "--embedder",
            "helpers:ColorEmbedder",
        )
    )
    return kb, folder


def change_stores(kb: Path, change) -> None:
    """Open the knowledge base in this process, change its stores directly, and save."""
    from multimodal_rag import MultimodalRAG

    with MultimodalRAG.open(kb, allow_modules=["helpers"]) as rag:
        change(rag)


def test_verify_passes_on_a_sound_knowledge_base(built: tuple[Path, dict]) -> None:
    result = ok(run_cli(*COLOR, "verify", built[0]))
    assert result.stdout.strip() == f"{built[0]}: ok (5 vectors, 5 description records)."
    report = json.loads(ok(run_cli(*COLOR, "verify", built[0], "--json")).stdout)
    assert report == {"schema_version": 1, "ok": True, "vectors": 5, "records": 5, "problems": []}


def test_verify_finds_a_deleted_image_and_a_description_without_a_vector(
    own_kb: tuple[Path, Path],
) -> None:
    from multimodal_rag import Record

    kb, folder = own_kb
    blue_id = search_json(kb, "--image", folder / "blue.png", "-k", "1")["hits"][0]["id"]
    (folder / "blue.png").unlink()
    change_stores(
        kb,
        lambda rag: rag.description_store.put(
            [Record(id="orphan-record", description="A lost card.")]
        ),
    )

    result = run_cli(*COLOR, "verify", kb, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["vectors"] == 5 and report["records"] == 6
    found = {(p["kind"], p["id"]) for p in report["problems"]}
    assert found == {("missing-image", blue_id), ("record-without-vector", "orphan-record")}
    assert all(set(p) == {"kind", "id", "detail"} for p in report["problems"])

    text = run_cli(*COLOR, "verify", kb)
    assert text.returncode == 1
    assert f"{kb}: 2 problems" in text.stdout
    assert "missing-image: image file" in text.stdout and "blue.png" in text.stdout
    assert "record-without-vector: record 'orphan-record' has no vector" in text.stdout


def test_repair_gives_a_vector_without_a_description_an_empty_record(
    own_kb: tuple[Path, Path],
) -> None:
    kb, folder = own_kb
    red_id = search_json(kb, "--image", folder / "red.png", "-k", "1")["hits"][0]["id"]
    change_stores(kb, lambda rag: rag.description_store.delete([red_id]))
    broken = json.loads(run_cli(*COLOR, "verify", kb, "--json").stdout)
    assert [(p["kind"], p["id"]) for p in broken["problems"]] == [("vector-without-record", red_id)]

    report = json.loads(ok(run_cli(*COLOR, "repair", kb, "--json")).stdout)
    assert report["records_created"] == [red_id] and report["reembedded"] == []
    assert report["remaining"] == {"ok": True, "vectors": 5, "records": 5, "problems": []}
    ok(run_cli(*COLOR, "verify", kb))


def test_verify_names_a_corrupt_index_and_repair_rebuilds_it_from_the_images(
    own_kb: tuple[Path, Path],
) -> None:
    kb, _ = own_kb
    [index] = current_snapshot(kb).glob("vectors/index.faiss")
    data = bytearray(index.read_bytes())
    data[-5] ^= 0xFF
    index.write_bytes(bytes(data))
    broken = run_cli(*COLOR, "verify", kb, "--json")
    assert broken.returncode == 1
    problems = json.loads(broken.stdout)["problems"]
    [corrupt] = [p for p in problems if p["id"] is None]
    assert corrupt["kind"] == "corrupt-file" and "index.faiss" in corrupt["detail"]
    assert {p["kind"] for p in problems if p["id"] is not None} == {"record-without-vector"}
    report = json.loads(ok(run_cli(*COLOR, "repair", kb, "--json")).stdout)
    assert len(report["reembedded"]) == 5 and report["remaining"]["ok"] is True
    ok(run_cli(*COLOR, "verify", kb))


# -- show ----------------------------------------------------------------------


def test_show_writes_a_contact_sheet_of_the_expected_size(
    built: tuple[Path, dict], photos: Path, tmp_path: Path
) -> None:
    from multimodal_rag._contact_sheet import CAPTION_HEIGHT, MARGIN

    out = tmp_path / "sheets" / "results.png"
    result = json.loads(
        ok(
            run_cli(
                *COLOR,
                "show",
                built[0],
                "--image",
                photos / "red.png",
                "-k",
                "3",
                "--out",
                out,
                "--tile",
                "128",
                "--json",
            )
        ).stdout
    )
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not a private temp file
    with Image.open(out) as sheet:
        assert sheet.format == "PNG"
        assert sheet.size == (4 * 128 + 5 * MARGIN, 128 + CAPTION_HEIGHT + 2 * MARGIN)
        assert (result["width"], result["height"]) == sheet.size
        # The query tile and the best match (the same red image) are drawn red at their centres.
        assert sheet.getpixel((MARGIN + 64, MARGIN + 64)) == (255, 0, 0)
        assert sheet.getpixel((2 * MARGIN + 128 + 64, MARGIN + 64)) == (255, 0, 0)
    assert [h["rank"] for h in result["hits"]] == [1, 2, 3] and result["hits"][0][
        "description"
    ] == "A red card."


def test_show_draws_a_placeholder_for_a_missing_image_file(
    kb: Path, photos: Path, tmp_path: Path
) -> None:
    moved = tmp_path / "photos"
    shutil.copytree(photos, moved)
    ok(
        run_cli(
            *COLOR,
            "remove",
            kb,
            *[h["id"] for h in search_json(kb, "--text", "x", "-k", "9")["hits"]],
        )
    )
    ok(run_cli(*COLOR, "index", moved, "--kb", kb))
    (moved / "green.png").unlink()
    out = tmp_path / "sheet.png"
    text = ok(
        run_cli(*COLOR, "show", kb, "--image", photos / "green.png", "-k", "4", "--out", out)
    ).stdout
    assert text.startswith(f"Wrote {out} (") and "the query and 4 matches" in text
    with Image.open(out) as sheet:
        # The best match is green.png, now gone: its tile is the grey placeholder, not green.
        assert sheet.getpixel((2 * 16 + 256 + 4, 16 + 4)) == (225, 225, 225)


# -- with a real CLIP model (tiny, random weights) ------------------------------


@pytest.fixture(scope="module")
def clip_kb(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A knowledge base the CLI indexed with a tiny random CLIP checkpoint, and the checkpoint."""
    from tiny_clip import make_tiny_clip_checkpoint

    root = tmp_path_factory.mktemp("clip")
    checkpoint = make_tiny_clip_checkpoint(root / "tiny.pt")
    kb = root / "kb"
    ok(
        run_cli(
            "index",
            photos,
            "--kb",
            kb,
            "--descriptions",
            photos / "descriptions.jsonl",
            "--checkpoint",
            checkpoint,
        )
    )
    return kb, checkpoint


def test_clip_knowledge_base_records_its_checkpoint(clip_kb: tuple[Path, Path]) -> None:
    kb, checkpoint = clip_kb
    info = json.loads(ok(run_cli("info", kb, "--json")).stdout)
    assert info["embedder"]["kind"] == "clip" and info["embedder"]["dim"] == 64
    assert info["embedder"]["config"]["checkpoint"] == str(checkpoint.resolve())
    assert info["counts"] == {"vectors": 5, "descriptions": 5}
    ok(run_cli("verify", kb))


def test_clip_search_by_image_and_text(clip_kb: tuple[Path, Path], photos: Path) -> None:
    kb = clip_kb[0]
    by_image = json.loads(
        ok(run_cli("search", kb, "--image", photos / "yellow.png", "-k", "5", "--json")).stdout
    )
    assert by_image["hits"][0]["description"] == "A yellow card."
    assert by_image["hits"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    by_text = json.loads(
        ok(run_cli("search", kb, "--text", "a yellow card", "-k", "2", "--json")).stdout
    )
    assert len(by_text["hits"]) == 2 and all(-1.0 <= h["score"] <= 1.0 for h in by_text["hits"])
    both = json.loads(
        ok(
            run_cli(
                "search",
                kb,
                "--image",
                photos / "red.png",
                "--text",
                "red",
                "--text-weight",
                "0",
                "--json",
            )
        ).stdout
    )
    assert both["hits"][0]["description"] == "A red card."  # weight 0: the image alone decides


def test_clip_ask_stream_and_show(clip_kb: tuple[Path, Path], photos: Path, tmp_path: Path) -> None:
    kb = clip_kb[0]
    streamed = ok(run_cli("ask", kb, "--image", photos / "green.png", "What is it?", "--stream"))
    assert streamed.stdout.startswith("Best match: A green card.")
    out = tmp_path / "sheet.png"
    ok(
        run_cli(
            "show", kb, "--image", photos / "green.png", "-k", "2", "--out", out, "--tile", "96"
        )
    )
    with Image.open(out) as sheet:
        assert sheet.size == (3 * 96 + 4 * 16, 96 + 84 + 2 * 16)


def test_clip_knowledge_base_refuses_other_weights(
    clip_kb: tuple[Path, Path], photos: Path, tmp_path: Path
) -> None:
    from tiny_clip import make_tiny_clip_checkpoint

    kb = Path(shutil.copytree(clip_kb[0], tmp_path / "kb"))
    other = make_tiny_clip_checkpoint(tmp_path / "other.pt", seed=1)
    result = run_cli("index", photos, "--kb", kb, "--checkpoint", other)
    assert result.returncode == 1 and "was built with embedder" in result.stderr
    assert "Traceback" not in result.stderr
    assert (
        json.loads(ok(run_cli("info", kb, "--json")).stdout)["generation"]
        == json.loads(ok(run_cli("info", clip_kb[0], "--json")).stdout)["generation"]
    )


# -- offline checkpoint and entry points ---------------------------------------


def test_random_checkpoint_loads_through_clip_and_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "weights" / "random.pt"
    first = ok(run_cli("random-checkpoint", path))
    assert "random weights" in first.stdout and "meaningless" in first.stdout
    assert first.stderr == ""
    stamp = path.stat().st_mtime_ns
    again = ok(run_cli("random-checkpoint", path))
    assert "already exists; keeping it" in again.stdout and path.stat().st_mtime_ns == stamp

    import warnings

    import torch

    from multimodal_rag._pkg_resources import pkg_resources_for_clip

    with warnings.catch_warnings(), pkg_resources_for_clip():
        warnings.simplefilter("ignore")
        import clip

        model, _preprocess = clip.load(str(path), device="cpu", jit=False)
    with torch.no_grad():
        vectors = model.encode_text(clip.tokenize(["a frog"]))
    assert vectors.shape == (1, 64)


def test_help_and_version() -> None:
    result = ok(run_cli("--help"))
    for command in (
        "index",
        "search",
        "show",
        "info",
        "remove",
        "describe",
        "verify",
        "repair",
        "random-checkpoint",
    ):
        assert command in result.stdout
    from multimodal_rag import __version__

    assert ok(run_cli("--version")).stdout.strip() == f"multimodal-rag, version {__version__}"


def test_console_script_is_declared() -> None:
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"multimodal-rag": "multimodal_rag.cli:main"}


# -- a failed first index leaves nothing behind --------------------------------


@pytest.fixture
def one_photo(tmp_path: Path) -> Path:
    folder = tmp_path / "one"
    folder.mkdir()
    solid("red").save(folder / "red.png")
    return folder


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"image_path": "red.png", "description": "caf\xe9"}\n', "not valid UTF-8"),
        (b'{"image_path": "../outside.png", "description": "A secret."}\n', "outside the image directory"),
    ],
    ids=["not-utf8", "escaping-path"],
)
def test_a_first_index_refused_for_its_descriptions_file_creates_no_knowledge_base(
    one_photo: Path, tmp_path: Path, line: bytes, reason: str
) -> None:
    (tmp_path / "outside.png").write_bytes((one_photo / "red.png").read_bytes())
    descriptions = tmp_path / "descriptions.jsonl"
    descriptions.write_bytes(b'{"image_path": "red.png", "description": "A red card."}\n' + line)
    kb = tmp_path / "new" / "kb"
    result = run_cli(
        *COLOR, "index", one_photo, "--kb", kb, "--descriptions", descriptions,
        "--embedder", "helpers:ColorEmbedder",
    )
    assert result.returncode == 1 and reason in result.stderr and "line 2" in result.stderr
    assert not (tmp_path / "new").exists()


def test_a_first_index_refused_into_an_empty_folder_leaves_the_folder_empty(
    one_photo: Path, tmp_path: Path
) -> None:
    descriptions = tmp_path / "descriptions.jsonl"
    descriptions.write_bytes(b'{"image_path": "/etc/passwd", "description": "no"}\n')
    kb = tmp_path / "made-by-the-user"
    kb.mkdir()
    result = run_cli(
        *COLOR, "index", one_photo, "--kb", kb, "--descriptions", descriptions,
        "--embedder", "helpers:ColorEmbedder",
    )
    assert result.returncode == 1 and "outside the image directory" in result.stderr
    assert kb.is_dir() and list(kb.iterdir()) == []


def test_a_first_index_whose_model_fails_removes_the_knowledge_base_it_created(
    one_photo: Path, tmp_path: Path
) -> None:
    (tmp_path / "exploding.py").write_text(
        "from helpers import ColorEmbedder\n\n\n"
        "class Exploding(ColorEmbedder):\n"
        "    def embed_images(self, images):\n"
        "        raise RuntimeError('the model crashed')\n"
    )
    path = os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), str(tmp_path)])
    kb = tmp_path / "kb"
    result = run_cli(
        "--allow-module", "exploding", "index", one_photo, "--kb", kb, "--embedder", "exploding:Exploding",
        env={"PYTHONPATH": path},
    )
    assert result.returncode == 1 and "the model crashed" in result.stderr
    assert not kb.exists()


def test_a_failed_index_into_an_existing_knowledge_base_keeps_it(kb: Path, photos: Path, tmp_path: Path) -> None:
    before = sorted(p.relative_to(kb) for p in kb.rglob("*"))
    descriptions = tmp_path / "descriptions.jsonl"
    descriptions.write_bytes(b'{"image_path": "red.png", "description": "\xff"}\n')
    result = run_cli(*COLOR, "index", photos, "--kb", kb, "--descriptions", descriptions)
    assert result.returncode == 1 and "not valid UTF-8" in result.stderr
    assert sorted(p.relative_to(kb) for p in kb.rglob("*")) == before
    assert json.loads(ok(run_cli("info", kb, "--json")).stdout)["counts"]["vectors"] == 5

# -- a first hour's rough edges ----------------------------------------------------


def test_output_into_a_closed_pipe_exits_0_quietly(built: tuple[Path, dict]) -> None:
    """As in `multimodal-rag search ... | head -1`: the reader went away before the output."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before a byte is written, so every write meets a broken pipe
    try:
        environ = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MULTIMODAL_RAG_")},
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]),
        }
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "multimodal_rag",
                *COLOR,
                "search",
                str(built[0]),
                "--text",
                "red",
            ],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=environ,
            timeout=300,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 0 and result.stderr == ""


def test_usage_errors_read_like_the_other_errors(built: tuple[Path, dict]) -> None:
    result = run_cli(*COLOR, "search", built[0], "--text", "red", "-k", "0")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Usage: multimodal-rag search ")
    assert lines[-1].startswith("error: Invalid value for '-k'") and "Error:" not in result.stderr
    unknown = run_cli("frobnicate")
    assert (
        unknown.returncode == 2
        and unknown.stderr.splitlines()[-1] == "error: No such command 'frobnicate'."
    )


def test_help_points_at_documentation_that_exists() -> None:
    from multimodal_rag.cli.app import DOCS_PAGE

    # No published site is named: the footer names a page of the repository, and it is there.
    assert (REPO / DOCS_PAGE).is_file()
    for args in ([], ["search"], ["index"]):
        help_text = ok(run_cli(*args, "--help")).stdout
        # At the start of a line of its own, never split by click's wrapping.
        assert any(line.strip().startswith(DOCS_PAGE) for line in help_text.splitlines()), help_text
        assert "http" not in help_text, help_text


def test_ask_min_score_answers_without_asking_a_model(
    built: tuple[Path, dict], tmp_path: Path
) -> None:
    from helpers import two_tone

    query = tmp_path / "half.png"
    two_tone("red", "blue").save(query)
    gated = ok(
        run_cli(*COLOR, "ask", built[0], "--image", query, "What is it?", "--min-score", "0.999")
    )
    assert gated.stdout.startswith("No matching item was found in the knowledge base")
    assert "below the minimum similarity of 0.999" in gated.stdout
    passed = ok(
        run_cli(*COLOR, "ask", built[0], "--image", query, "What is it?", "--min-score", "-1")
    )
    assert passed.stdout.startswith("Best match: ")
    bad = run_cli(*COLOR, "ask", built[0], "What is it?", "--min-score", "2")
    assert bad.returncode == 2

    # The vision model is not asked, so the answer names none (nothing listens at this address).
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    for answerer in ("auto", "openai"):
        answer = json.loads(
            ok(
                run_cli(
                    *COLOR,
                    "ask",
                    built[0],
                    "--image",
                    query,
                    "What is it?",
                    "--json",
                    "--min-score",
                    "0.999",
                    "--answerer",
                    answerer,
                    env=env,
                )
            ).stdout
        )
        assert answer["model"] is None and answer["sources"] == []
        assert answer["answer"].startswith("No matching item")
    text = ok(
        run_cli(*COLOR, "ask", built[0], "--image", query, "Q?", "--min-score", "0.999", env=env)
    )
    assert "No model was asked" in text.stdout and "gpt-4o" not in text.stdout


def test_index_lists_a_few_duplicates_and_json_lists_them_all(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(8):
        solid((30 * i, 0, 255 - 30 * i), (20 + i, 20)).save(folder / f"card{i}.png")
    kb = tmp_path / "kb"
    embedder = ("--embedder", "helpers:ColorEmbedder")
    ok(run_cli(*COLOR, "index", folder, "--kb", kb, *embedder))
    again = ok(run_cli(*COLOR, "index", folder, "--kb", kb)).stdout
    assert "duplicates:  8 (already indexed" in again
    assert sum(" = " in line for line in again.splitlines()) == 5
    assert "... and 3 more (--json lists every one)" in again
    listed = json.loads(ok(run_cli(*COLOR, "index", folder, "--kb", kb, "--json")).stdout)
    assert len(listed["duplicates"]) == 8


def test_index_names_allow_outside_and_accepts_it(photos: Path, tmp_path: Path) -> None:
    folder = tmp_path / "inside"
    folder.mkdir()
    solid("red", (20, 20)).save(folder / "red.png")
    solid("blue", (21, 20)).save(tmp_path / "outside.png")
    descriptions = folder / "descriptions.jsonl"
    descriptions.write_text(
        json.dumps({"image_path": "red.png", "description": "Red."})
        + "\n"
        + json.dumps({"image_path": "../outside.png", "description": "Blue."})
        + "\n"
    )
    args = ("index", folder, "--kb", tmp_path / "kb", "--embedder", "helpers:ColorEmbedder")
    refused = run_cli(*COLOR, *args, "--descriptions", descriptions)
    assert refused.returncode == 1 and "give --allow-outside to accept it" in refused.stderr
    assert "allow_outside=True" not in refused.stderr and not (tmp_path / "kb").exists()
    ok(run_cli(*COLOR, *args, "--descriptions", descriptions, "--allow-outside"))


def test_python_advice_becomes_command_line_options() -> None:
    from multimodal_rag._remote import withheld_hint
    from multimodal_rag.cli.app import cli_message

    message = cli_message(
        "cannot reach the server" + withheld_hint("http://db:5432", "$PGPASSWORD")
    )
    assert message.endswith(
        "If you trust that server, allow it with --allow-endpoint http://db:5432"
    )
    assert (
        cli_message("pass allow_modules=['my_pkg'] to import it")
        == "allow it with --allow-module my_pkg"
    )


def test_every_json_output_carries_its_schema_version(built: tuple[Path, dict]) -> None:
    kb, indexed = built
    assert indexed["schema_version"] == 1
    for args in (("info", kb), (*COLOR, "search", kb, "--text", "red"), (*COLOR, "verify", kb)):
        shown = ok(run_cli(*args, "--json"))
        assert json.loads(shown.stdout)["schema_version"] == 1, args


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_complete_commands(shell: str, tmp_path: Path) -> None:
    script = ok(run_cli("completion", shell)).stdout
    assert "_MULTIMODAL_RAG_COMPLETE" in script
    # What the script asks the program for, as bash does when COMP_WORDS is "multimodal-rag se".
    answer = ok(run_cli(env={"_MULTIMODAL_RAG_COMPLETE": "bash_complete", "COMP_WORDS": "multimodal-rag se", "COMP_CWORD": "1"}))
    assert answer.stdout.split() == ["plain,search", "plain,serve"]


def test_search_says_when_the_score_is_not_a_cosine_similarity(built: tuple[Path, dict]) -> None:
    """In hybrid mode a score is the fused one (about 0.03 for a first place under RRF): the
    text output says so, and which mode made it; --json keeps each hit's similarity."""
    hybrid = ok(run_cli(*COLOR, "search", built[0], "--text", "blue", "-k", "2")).stdout
    assert hybrid.splitlines()[0] == (
        "(score: the fused score of the image-vector and word searches (hybrid search), "
        "not a cosine similarity; --json gives each hit's similarity)"
    )
    fused = float(hybrid.splitlines()[1].split()[1])
    assert fused == pytest.approx(search_json(built[0], "--text", "blue", "-k", "2")["hits"][0]["score"], abs=1e-4)
    lexical = ok(run_cli(*COLOR, "search", built[0], "--text", "blue", "--mode", "lexical")).stdout
    assert lexical.startswith("(score: the BM25 relevance of the description's words (lexical search)")
    vector = ok(run_cli(*COLOR, "search", built[0], "--text", "blue", "--mode", "vector")).stdout
    assert vector.startswith(" 1. ")  # the score is the cosine similarity: nothing to explain
