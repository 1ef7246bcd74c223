"""Hostile and broken input: each gets a clear library error or a reported skip, and nothing stored is damaged."""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from helpers import ColorEmbedder, encoded, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag._kb.journal import read_journal
from multimodal_rag.errors import (
    DimensionMismatchError,
    ImageError,
    InvalidInputError,
    UnknownBackendError,
)
from test_description_store_contract import DESCRIPTION_STORES
from test_vector_store_contract import VECTOR_STORES


@pytest.fixture
def kb(tmp_path: Path, embedder: ColorEmbedder):
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=embedder)
    rag.add([solid("white")], ids=["before"], descriptions=["stored before"], progress=False)
    yield rag
    rag.close()


def unchanged(rag: MultimodalRAG) -> None:
    """The knowledge base still holds exactly what the fixture put in, in memory and on disk."""
    assert rag.ids() == ["before"] and rag.get("before").description == "stored before"
    assert rag.verify().ok
    assert [e.ids for e in read_journal(rag.path / "journal.bin").entries] == [["before"]]


# -- JSON that would exhaust the parser -----------------------------------------

HOSTILE_JSON = {
    "deep-array": ("[" * 100_000, "nested more than 128 levels deep"),
    "deep-object": ('{"a":' * 5000, "nested more than 128 levels deep"),
    "long-integer": ('{"a": ' + "1" * 4401 + "}", "more than 4,300 digits"),
}


@pytest.mark.parametrize(("text", "says"), HOSTILE_JSON.values(), ids=HOSTILE_JSON.keys())
def test_json_too_deep_or_too_long_is_invalid_input_wherever_it_enters(kb, text: str, says: str) -> None:
    from click.testing import CliRunner

    from multimodal_rag._validation import load_json
    from multimodal_rag.cli.app import cli

    with pytest.raises(InvalidInputError, match=f"the filter .*{says}"):
        load_json(text, what="the filter")
    for option in (("--filter", text), ("--where", f"shade={text}")):
        result = CliRunner().invoke(cli, ["search", str(kb.path), "--text", "red", *option])
        assert result.exit_code == 2, result.output
        assert says in result.output and option[0] in result.output and result.exception is not None
    unchanged(kb)


def test_a_filter_integer_no_store_can_write_is_invalid_input(kb) -> None:
    for huge in (10**4300, -(10**4400)):
        with pytest.raises(InvalidInputError, match=r"filter\['n'\]\['\$in'\]\[1\]: expected a number of at most 4,300 digits"):
            kb.search(text="red", filter={"n": {"$in": [1, huge]}})
    assert kb.search(image=solid("white"), filter={"n": 10**4300 - 1}) == []


# -- paths that escape the image directory ------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    solid("red").save(root / "red.png")
    outside = tmp_path / "secret"
    outside.mkdir()
    solid("blue").save(outside / "private.png")
    return root


@pytest.mark.parametrize(
    "image_path",
    ["../secret/private.png", "sub/../../secret/private.png", "ABSOLUTE", "/etc/passwd"],
)
def test_descriptions_file_entries_leading_outside_are_refused(kb, folder: Path, image_path: str) -> None:
    if image_path == "ABSOLUTE":
        image_path = str(folder.parent / "secret" / "private.png")
    lines = [{"image_path": "red.png", "description": "red"}, {"image_path": image_path, "description": "x"}]
    catalog = folder / "description.json"
    catalog.write_text("\n".join(json.dumps(line) for line in lines))
    with pytest.raises(InvalidInputError, match=r"line 2.*points outside.*allow_outside=True"):
        kb.add_directory(folder, descriptions=catalog, progress=False)
    unchanged(kb)
    result = kb.add_directory(folder, descriptions=catalog, progress=False, allow_outside=True)
    assert len(result.added) == 1 and kb.get(result.added[0]).description == "red"


def test_descriptions_file_entries_inside_are_accepted_however_written(kb, folder: Path) -> None:
    (folder / "sub").mkdir()
    solid("green").save(folder / "sub" / "green.png")
    lines = [
        {"image_path": str(folder / "red.png"), "description": "absolute, inside"},
        {"image_path": "sub/./../sub/green.png", "description": "dots, inside"},
    ]
    (folder / "description.json").write_text("\n".join(json.dumps(line) for line in lines))
    result = kb.add_directory(folder, descriptions=folder / "description.json", progress=False)
    assert sorted(kb.get(i).description for i in result.added) == ["absolute, inside", "dots, inside"]


def test_symlinks_leading_outside_are_skipped_and_reported(kb, folder: Path) -> None:
    os.symlink(folder.parent / "secret" / "private.png", folder / "link.png")
    os.symlink(folder.parent / "secret", folder / "linked-folder")
    os.symlink(folder / "red.png", folder / "inner-link.png")  # stays inside: fine
    result = kb.add_directory(folder, progress=False)
    # A linked folder is either not descended into (pathlib's "**") or its files are skipped.
    assert sorted(Path(s.source).name for s in result.skipped) in (["link.png"], ["link.png", "private.png"])
    assert all("outside" in s.reason for s in result.skipped)
    assert len(result.added) == 1 and len(result.duplicates) == 1  # red.png and its inner link
    assert all(str(folder.parent / "secret") not in (kb.get(i).image_path or "") for i in kb.ids())
    opted_in = kb.add_directory(folder, progress=False, allow_outside=True)
    assert len(opted_in.added) == 1 and not opted_in.skipped


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="needs FIFOs and /dev/zero")
def test_names_in_a_folder_that_are_not_regular_files_are_skipped_with_reasons(kb, folder: Path) -> None:
    os.mkfifo(folder / "pipe.jpg")  # reading it would block forever
    os.symlink("/dev/zero", folder / "zero.png")  # reading it would never end
    os.symlink(folder / "loop.png", folder / "loop.png")
    os.symlink(folder / "gone.png", folder / "broken.png")
    (folder / "folder.png").mkdir()  # a folder named like an image is just a folder
    result = kb.add_directory(folder, progress=False, allow_outside=True)
    reasons = {Path(s.source).name: s.reason for s in result.skipped}
    assert sorted(reasons) == ["broken.png", "loop.png", "pipe.jpg", "zero.png"]
    assert "FIFO" in reasons["pipe.jpg"] and "character device" in reasons["zero.png"]
    assert "/dev/zero" in reasons["zero.png"] and "symlink loop" in reasons["loop.png"]
    assert "broken symlink" in reasons["broken.png"]
    assert len(result.added) == 1 and kb.get(result.added[0]).image_path == str(folder / "red.png")


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="needs FIFOs and /dev/zero")
def test_adding_a_fifo_or_a_device_is_an_image_error_not_a_hang(kb, tmp_path: Path) -> None:
    from test_images import read_in_a_thread

    os.mkfifo(tmp_path / "x.jpg")

    def add(path):
        return kb.add([path], progress=False)

    for path, kind in ((tmp_path / "x.jpg", "FIFO"), (Path("/dev/zero"), "character device")):
        error = read_in_a_thread(add, path)
        assert isinstance(error, ImageError) and kind in str(error) and path.name in str(error)
    unchanged(kb)


# -- images that are not what they claim ----------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's trick)."""
    data = bytearray(encoded(solid("red", (1, 1))))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


BAD_IMAGES = {
    "bomb.png": png_claiming(100_000, 100_000),
    "absurd.png": png_claiming(1, 2_000_000_000),
    "text.jpg": b"this is not an image, whatever its name says",
    "empty.webp": b"",
    "truncated.jpeg": encoded(solid("red", (64, 64)), "JPEG")[:120],
    "html.gif": b"<html><script>alert(1)</script></html>",
}


def test_bad_images_in_a_folder_are_skipped_with_reasons(kb, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name, data in BAD_IMAGES.items():
        (folder / name).write_bytes(data)
    solid("green").save(folder / "good.png")
    result = kb.add_directory(folder, batch_size=2, progress=False)
    assert sorted(Path(s.source).name for s in result.skipped) == sorted(BAD_IMAGES)
    reasons = {Path(s.source).name: s.reason for s in result.skipped}
    assert "pixels" in reasons["bomb.png"] or "too large" in reasons["bomb.png"]
    assert "empty" in reasons["empty.webp"] and "not a known image format" in reasons["text.jpg"]
    assert len(result.added) == 1 and len(kb) == 2 and kb.verify().ok


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_a_bad_image_given_directly_is_an_image_error_and_stores_nothing(kb, name: str) -> None:
    with pytest.raises(ImageError):
        kb.add([solid("green"), BAD_IMAGES[name]], progress=False)
    unchanged(kb)


# -- text -----------------------------------------------------------------------


def test_a_one_megabyte_description_is_stored_exactly(tmp_path: Path, embedder) -> None:
    text = ("پرنده‌ای سبز 🦜 \x00 " * 40_000)[:1_000_000]
    for kind in ("sqlite", "jsonl"):
        rag = MultimodalRAG.create(tmp_path / kind, embedder=embedder, description_store=kind)
        [image_id] = rag.add([solid("red")], descriptions=[text], progress=False)
        rag.close()  # journal only
        assert MultimodalRAG.open(tmp_path / kind, embedder=embedder, read_only=True).get(image_id).description == text
        rag = MultimodalRAG.open(tmp_path / kind, embedder=embedder)
        rag.describe(image_id, text[::-1])
        rag.save()
        rag.close()
        assert MultimodalRAG.open(tmp_path / kind, embedder=embedder).get(image_id).description == text[::-1]


def test_text_utf8_cannot_store_is_refused(kb) -> None:
    with pytest.raises(InvalidInputError, match="description.*UTF-8"):
        kb.add([solid("red")], descriptions=["lone \udc80 surrogate"], progress=False)
    with pytest.raises(InvalidInputError, match="UTF-8"):
        kb.add([solid("red")], ids=["bad \ud800 id"], progress=False)
    with pytest.raises(InvalidInputError, match="metadata"):
        kb.add([solid("red")], metadata=[{"k": "\udfff"}], progress=False)
    with pytest.raises(InvalidInputError, match="description.*UTF-8"):
        kb.describe("before", "\ud83d")
    unchanged(kb)


def test_a_descriptions_file_with_a_line_that_is_not_utf8_is_refused_naming_the_line(kb, folder: Path) -> None:
    catalog = folder / "description.json"
    catalog.write_bytes(b'{"image_path": "red.png", "description": "ok"}\n{"image_path": "x.png", "description": "\xff\xfe"}\n')
    with pytest.raises(InvalidInputError, match="line 2.*UTF-8"):
        kb.add_directory(folder, descriptions=catalog, progress=False)
    catalog.write_bytes(b'{"image_path": "red.png"}\n[1, 2]\n')
    with pytest.raises(InvalidInputError, match="line 2.*not a JSON object"):
        kb.add_directory(folder, descriptions=catalog, progress=False)
    catalog.write_text('{"image_path": "red\\u0000.png"}\n')
    with pytest.raises(InvalidInputError, match="line 1.*image_path"):
        kb.add_directory(folder, descriptions=catalog, progress=False)
    unchanged(kb)


def test_duplicate_ids_in_one_call_are_stored_once_and_reported(kb) -> None:
    result = kb.add([solid("red"), solid("green")], ids=["same", "same"], descriptions=["first", "second"],
                    progress=False)
    assert result.added == ("same",) and result.duplicates == (("<PIL image>", "same"),)
    assert kb.get("same").description == "first"
    content = kb.add([encoded(solid("blue")), encoded(solid("blue"))], progress=False)
    assert len(content.added) == 1 and len(content.duplicates) == 1 and len(kb) == 3


# -- vectors from a custom embedder ----------------------------------------------


def broken_output(kind: str, rows: np.ndarray) -> object:
    out = rows.copy()
    if kind == "nan":
        out[-1, 0] = np.nan
    elif kind == "inf":
        out[0, 3] = np.inf
    elif kind == "zero":
        out[-1] = 0.0
    elif kind == "huge":
        out[0] = 1e38  # finite, but it would outrank every stored vector
    elif kind == "not-normalised":
        out[-1] *= 1.5
    elif kind == "too-few-rows":
        return out[:-1]
    elif kind == "wrong-dimension":
        return out[:, :-1]
    elif kind == "three-dimensional":
        return out[:, None, :]
    elif kind == "strings":
        return out.astype(str)
    elif kind == "complex":
        return out.astype(np.complex64)
    elif kind == "nested-lists":
        return [[1.0, 2.0], [3.0]]
    return out


BROKEN = ["nan", "inf", "zero", "huge", "not-normalised", "too-few-rows", "wrong-dimension", "three-dimensional",
          "strings", "complex", "nested-lists"]


@pytest.mark.parametrize("kind", BROKEN)
def test_broken_vectors_from_an_embedder_are_refused_and_change_nothing(tmp_path: Path, kind: str) -> None:
    class BrokenEmbedder(ColorEmbedder):
        broken = False

        def embed_images(self, images):
            rows = super().embed_images(images)
            return broken_output(kind, rows) if self.broken else rows

        def embed_texts(self, texts):
            rows = super().embed_texts(texts)
            return broken_output(kind, rows) if self.broken else rows

    embedder = BrokenEmbedder()
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=embedder)
    rag.add([solid("white")], ids=["before"], descriptions=["stored before"], progress=False)
    embedder.broken = True
    with pytest.raises(InvalidInputError) as raised:
        rag.add([solid("red"), solid("blue")], ids=["r", "b"], progress=False)
    if kind == "wrong-dimension":
        assert isinstance(raised.value, DimensionMismatchError)
    with pytest.raises(InvalidInputError):
        rag.search(text="red", k=1)
    embedder.broken = False
    unchanged(rag)
    rag.close()
    assert MultimodalRAG.open(tmp_path / "kb", embedder=ColorEmbedder(), read_only=True).ids() == ["before"]


@pytest.mark.parametrize(("scale", "row"), [(1e38, 0), (1.5, 1), (0.5, 1)])
def test_a_vector_that_is_not_unit_length_is_refused_naming_its_row(kb, scale: float, row: int) -> None:
    vectors = kb.embedder.embed_texts(["red", "blue"])
    vectors[row] *= scale
    with pytest.raises(InvalidInputError, match=f"row {row} has norm .*not 1"):
        kb.vector_store.add(["a", "b"], vectors)
    # bf16 or fp16 outputs normalised in float32 are a little off 1, and accepted.
    half = kb.embedder.embed_texts(["red", "blue"]).astype(np.float16).astype(np.float32)
    kb.vector_store.add(["a", "b"], half * np.float32(1.004))
    assert kb.verify().of_kind("bad-vector") == []


def test_verify_reports_a_stored_vector_that_is_not_unit_length(kb) -> None:
    original = kb.vector_store.get_vectors

    def scaled(ids):
        return original(ids) * np.float32(1e30)

    kb.vector_store.get_vectors = scaled  # as a crafted index file would hold it
    [problem] = kb.verify().problems
    assert problem.kind == "bad-vector" and problem.id == "before" and "norm 1e+30" in problem.detail


def test_vectors_of_another_dtype_are_converted_not_refused(kb) -> None:
    vector = kb.embedder.embed_texts(["red"]).astype(np.float64)
    assert kb.search_by_vector(vector, k=1)[0].id == "before"
    with pytest.raises(InvalidInputError, match="numeric"):
        kb.search_by_vector(np.array(["a"] * kb.embedder.dim), k=1)


# -- files from someone else ----------------------------------------------------


def test_a_manifest_naming_a_module_that_is_not_allowed_imports_nothing(tmp_path: Path, kb, monkeypatch) -> None:
    marker = tmp_path / "imported"
    package = tmp_path / "evil_plugin"
    package.mkdir()
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nclass Store: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    kb.save()
    kb.close()
    manifest_path = kb.path / "manifest.json"
    original = json.loads(manifest_path.read_text())
    for role in ("vector_store", "description_store", "embedder"):
        manifest = json.loads(json.dumps(original))
        manifest[role]["kind"] = "evil_plugin:Store"
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(UnknownBackendError, match="evil_plugin.*not allowed"):
            MultimodalRAG.open(kb.path, read_only=True, allow_modules=["helpers"])
    assert not marker.exists() and "evil_plugin" not in sys.modules


STORE_PAIRS = [(v, "sqlite") for v in sorted(VECTOR_STORES)] + [
    ("faiss-flat", d) for d in sorted(DESCRIPTION_STORES) if d != "sqlite"
]


@pytest.mark.parametrize(("vector_kind", "description_kind"), STORE_PAIRS)
def test_opening_a_knowledge_base_never_unpickles(
    tmp_path: Path, embedder, monkeypatch, vector_kind: str, description_kind: str
) -> None:
    import pickle

    real_load = np.load

    def refuse(*args, **kwargs):
        raise AssertionError("a knowledge-base file was unpickled")

    def load_without_pickle(*args, **kwargs):
        assert kwargs.get("allow_pickle") is False, "np.load without allow_pickle=False"
        return real_load(*args, **kwargs)

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(np, "load", load_without_pickle)
    rag = MultimodalRAG.create(
        tmp_path / "kb",
        embedder=embedder,
        vector_store=VECTOR_STORES[vector_kind](embedder.dim),
        description_store=DESCRIPTION_STORES[description_kind](),
    )
    rag.add([solid(c) for c in ("red", "green", "blue")], descriptions=["r", "g", "b"], progress=False)
    rag.save()
    rag.add([solid("yellow")], descriptions=["y"], progress=False)  # journaled
    rag.close()
    # Stores of the tables that are not built in (a documentation example) must be allowed.
    modules = [type(rag.vector_store).__module__, type(rag.description_store).__module__]
    reopened = MultimodalRAG.open(tmp_path / "kb", embedder=embedder, read_only=True, allow_modules=modules)
    assert len(reopened) == 4 and reopened.search(text="green", k=1)[0].description == "g"


#: Where the package under test is imported from (a subprocess gets it first on its path).
SRC = str(Path(__import__("multimodal_rag").__file__).parents[1])

CRAFTED_OPEN = """
import sys
sys.path[:0] = sys.argv[2:]
from helpers import ColorEmbedder, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag.errors import CorruptFileError
try:
    rag = MultimodalRAG.open(sys.argv[1], embedder=ColorEmbedder())  # replays the journal's adds
    rag.add([solid((9 * i, 255 - 9 * i, 80)) for i in range(20)], progress=False)
    rag.search(text="red", k=5)
    print("opened")
except CorruptFileError as exc:
    print("refused:", exc)
"""


@pytest.mark.parametrize("how", ["neighbour past the end", "upper link to a level-0 node", "entry point past the end"])
def test_a_crafted_hnswlib_index_with_a_matching_checksum_is_refused_not_a_crash(
    tmp_path: Path, embedder, how: str
) -> None:
    import hashlib
    import subprocess

    from test_ann_stores import mutate_hnsw

    rag = MultimodalRAG.create(tmp_path / "kb", embedder=embedder, vector_store="hnswlib")
    colours = [(i * 5 % 256, i * 11 % 256, i * 17 % 256) for i in range(200)]
    rag.add([solid(c) for c in colours[:150]], progress=False)
    rag.save()
    rag.add([solid(c) for c in colours[150:]], progress=False)  # journaled, replayed on open
    rag.close()
    manifest_path = tmp_path / "kb" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    index = tmp_path / "kb" / "snapshots" / f"{manifest['generation']:08d}" / "vectors" / "index.hnsw"
    data = bytearray(index.read_bytes())
    mutate_hnsw(data, how)
    index.write_bytes(bytes(data))
    manifest["files"]["vectors/index.hnsw"] = hashlib.sha256(data).hexdigest()  # integrity is not safety
    manifest_path.write_text(json.dumps(manifest))
    tests = str(Path(__file__).parent)
    run = subprocess.run(
        [sys.executable, "-c", CRAFTED_OPEN, str(tmp_path / "kb"), tests, SRC],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, f"the process died ({run.returncode}): {run.stderr[-2000:]}"
    assert run.stdout.startswith("refused:") and "index.hnsw" in run.stdout
