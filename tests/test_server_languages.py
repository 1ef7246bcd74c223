"""The web page's languages: every label in every language, the language chosen from
``Accept-Language`` or fixed by ``serve --lang``, and a Persian page with no English label left."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx")

from starlette.testclient import TestClient  # noqa: E402

from helpers import ColorEmbedder  # noqa: E402
from multimodal_rag import ExtractiveAnswerer, MultimodalRAG  # noqa: E402
from multimodal_rag.cli.serve import PAGE_LANGUAGES  # noqa: E402
from multimodal_rag.errors import InvalidInputError  # noqa: E402
from multimodal_rag.server.app import ServerSettings, create_app  # noqa: E402
from multimodal_rag.server.languages import LANGUAGES, labels, negotiate, render_page  # noqa: E402
from multimodal_rag.server.reloading import ReloadingKnowledgeBase  # noqa: E402

SERVER = resources.files("multimodal_rag.server")
TEMPLATE = SERVER.joinpath("page.html").read_text(encoding="utf-8")
FIELD = re.compile(r"\{(\w+)\}")


def test_every_language_has_a_table_and_serve_offers_each() -> None:
    tables = sorted(path.name.removesuffix(".json") for path in SERVER.joinpath("labels").iterdir())
    assert tables == sorted(LANGUAGES) == sorted(PAGE_LANGUAGES)


@pytest.mark.parametrize("language", [lang for lang in LANGUAGES if lang != "en"])
def test_every_english_label_is_translated_with_the_same_fields(language: str) -> None:
    english, other = labels("en"), labels(language)  # type: ignore[arg-type]
    assert set(english) == set(other), (
        f"missing: {set(english) - set(other)}, extra: {set(other) - set(english)}"
    )
    for key, text in english.items():
        assert other[key].strip(), key
        assert sorted(FIELD.findall(other[key])) == sorted(FIELD.findall(text)), key


def test_the_page_uses_every_label_and_names_no_other() -> None:
    in_markup = set(re.findall(r"\{\{(\w+)\}\}", TEMPLATE)) - {"lang", "dir", "labels"}
    in_script = set(re.findall(r'\bt\("(\w+)"', TEMPLATE)) | set(
        re.findall(r'\bfill\([^\n]*?, "(\w+)"', TEMPLATE)
    )
    assert in_markup | in_script == set(labels("en"))


class _VisibleText(HTMLParser):
    """What a reader sees or hears: text outside scripts and styles, and the attributes shown
    or read aloud."""

    SHOWN = ("alt", "title", "placeholder", "aria-label")

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._hidden += 1
        shown = (
            (*self.SHOWN, "value") if tag == "input" else self.SHOWN
        )  # an option's value is not shown
        self.parts.extend(value for name, value in attrs if name in shown and value)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def visible_text(page: str) -> str:
    parser = _VisibleText()
    parser.feed(page)
    return " ".join(" ".join(parser.parts).split())


def script_labels(page: str) -> dict[str, str]:
    match = re.search(r"const LABELS = (\{.*?\});\n", page)
    assert match is not None
    table: dict[str, str] = json.loads(match.group(1))
    return table


def test_the_persian_page_has_no_english_label_left() -> None:
    page = render_page(TEMPLATE, "fa")
    assert '<html lang="fa" dir="rtl">' in page
    shown = visible_text(page)
    persian = labels("fa")
    # Each label as a reader would find it: the text around its {fields}, which the script fills.
    english = {
        piece.strip()
        for key, text in labels("en").items()
        if text != persian[key]  # the project's name is the same in both
        for piece in FIELD.split(text)[::2]
        if len(piece.strip()) > 3
    }
    left = sorted(piece for piece in english if piece in shown)
    assert not left, f"English labels on the Persian page: {left}"
    assert script_labels(page) == persian  # what the script shows later is Persian too
    assert "پرسش" in shown and "تطابق‌ها" in shown
    # The English page shows the English labels.
    english_page = render_page(TEMPLATE, "en")
    assert '<html lang="en" dir="ltr">' in english_page
    assert "Number of matches" in visible_text(english_page) and script_labels(
        english_page
    ) == labels("en")


def test_text_of_users_and_models_takes_its_own_direction() -> None:
    """Inputs, the answer, the status line and the file name: dir="auto", whatever the page's
    language (the browser test checks the matches' descriptions, which the script makes)."""
    page = render_page(TEMPLATE, "en")
    for element in ("question", "token", "answer", "status", "drop-text"):
        tag = re.search(rf'<[^>]*\bid="{element}"[^>]*>', page)
        assert tag is not None and 'dir="auto"' in tag.group(0), element
    assert 'text.dir = "auto"' in page and 'meta.dir = "auto"' in page


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "en"),
        ("", "en"),
        ("fa", "fa"),
        ("fa-IR,fa;q=0.9,en-US;q=0.8,en;q=0.7", "fa"),
        ("en-US,en;q=0.9,fa;q=0.8", "en"),
        ("en;q=0.5, fa", "fa"),  # by quality, not by order
        ("de, fa;q=0.3, en;q=0.2", "fa"),  # the best the page has
        ("FA-ir", "fa"),
        ("fa;q=0, *", "en"),  # refused
        ("*", "en"),
        ("de, ja", "en"),
        ("fa;q=2, en;q=0.1", "en"),  # a malformed quality value: the range is skipped
        ("fa;q=abc", "en"),
        ("en;q=0.500, fa;q=0.501", "fa"),
        (",;,fa;;q=1", "fa"),
        ("x" * 10_000 + ",fa", "en"),  # only the header's start is read
    ],
)
def test_accept_language_is_read_by_quality(header: str | None, expected: str) -> None:
    assert negotiate(header) == expected


@pytest.fixture
def kb_path(tmp_path: Path, image_dir: Path) -> Path:
    path = tmp_path / "kb"
    with MultimodalRAG.create(path, embedder=ColorEmbedder()) as rag:
        rag.add_directory(image_dir, descriptions=image_dir / "description.json", progress=False)
    return path


def client(kb_path: Path, **settings: object) -> TestClient:
    knowledge_base = ReloadingKnowledgeBase(
        kb_path, embedder=ColorEmbedder(), answerer=ExtractiveAnswerer()
    )
    return TestClient(
        create_app(
            knowledge_base,
            ServerSettings(reload_interval=0, allowed_hosts=["testserver"], **settings),
        )  # type: ignore[arg-type]
    )


def test_the_server_chooses_by_accept_language_unless_a_language_is_fixed(kb_path: Path) -> None:
    with client(kb_path) as negotiating:
        persian = negotiating.get("/", headers={"Accept-Language": "fa-IR,fa;q=0.9,en;q=0.8"})
        assert persian.status_code == 200 and '<html lang="fa" dir="rtl">' in persian.text
        assert (
            persian.headers["content-language"] == "fa"
            and persian.headers["vary"] == "Accept-Language"
        )
        english = negotiating.get("/", headers={"Accept-Language": "en-GB"})
        assert (
            '<html lang="en" dir="ltr">' in english.text
            and english.headers["content-language"] == "en"
        )
        assert "default-src 'self'" in persian.headers["content-security-policy"]
    # --lang wins over the browser's wish, and then the answer no longer varies with it.
    with client(kb_path, language="fa") as fixed:
        page = fixed.get("/", headers={"Accept-Language": "en"})
        assert '<html lang="fa" dir="rtl">' in page.text and "vary" not in page.headers
    with client(kb_path, language="en") as fixed:
        assert (
            '<html lang="en" dir="ltr">' in fixed.get("/", headers={"Accept-Language": "fa"}).text
        )


def test_an_unknown_language_is_refused_by_name() -> None:
    with pytest.raises(InvalidInputError, match="'de'"):
        ServerSettings(language="de")  # type: ignore[arg-type]
