"""The web page's languages: its labels, one JSON table per language in ``labels/``, the
choice of a language from a request's ``Accept-Language``, and the page rendered in one.

``page.html`` writes ``{{key}}`` where a label goes (``{{lang}}``, ``{{dir}}`` and
``{{labels}}``, the whole table for the page's script, are filled in too). A label may hold
``{name}`` fields, which the script fills; the text put into them (a file name, a model's
name) is isolated from the label's direction, so a Latin name reads right in a Persian
sentence.
"""

from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType
from typing import Final, Literal, get_args

from multimodal_rag.errors import InvalidInputError

__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "Language",
    "direction",
    "labels",
    "negotiate",
    "parse_language",
    "render_page",
]

#: The languages the page can be shown in.
Language = Literal["en", "fa"]
LANGUAGES: Final[tuple[Language, ...]] = get_args(Language)
#: The language of a request that asks for none the page has.
DEFAULT_LANGUAGE: Final[Language] = "en"
_RIGHT_TO_LEFT: Final = frozenset({"fa"})

# A quality value as RFC 9110 writes it: 0 to 1, at most three decimals.
_QUALITY = re.compile(r"(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# Accept-Language headers are short; a longer one is read only this far.
_MAX_HEADER = 4096


def parse_language(value: str) -> Language:
    """``value`` as one of [`LANGUAGES`][multimodal_rag.server.languages.LANGUAGES].

    Raises:
        InvalidInputError: ``value`` is no language the page has.
    """
    for language in LANGUAGES:
        if value == language:
            return language
    raise InvalidInputError(f"the page has no language {value!r}; it has {', '.join(LANGUAGES)}")


def direction(language: Language) -> Literal["ltr", "rtl"]:
    """Which way the language's script runs."""
    return "rtl" if language in _RIGHT_TO_LEFT else "ltr"


@functools.cache
def labels(language: Language) -> Mapping[str, str]:
    """The page's labels in ``language``, by key (read once; not to be changed)."""
    text = (
        resources.files("multimodal_rag.server")
        .joinpath("labels", f"{language}.json")
        .read_text(encoding="utf-8")
    )
    table: dict[str, str] = json.loads(text)
    return MappingProxyType(table)


def negotiate(accept_language: str | None) -> Language:
    """The language to show a request that sent ``accept_language`` (``Accept-Language``).

    Its ranges are taken by quality value, highest first (a range without one counts as
    ``q=1``; ties keep the header's order); a range matches a language by its primary subtag
    (``fa-IR`` is Persian). ``q=0`` refuses a language, and a range with a malformed quality
    value is skipped. ``*``, or no range the page has, gives the default (English).
    """
    if not accept_language:
        return DEFAULT_LANGUAGE
    ranges: list[tuple[float, str]] = []
    for entry in accept_language[:_MAX_HEADER].split(","):
        name, *parameters = (part.strip() for part in entry.split(";"))
        quality = 1.0
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                value = value.strip()
                quality = float(value) if _QUALITY.fullmatch(value) else -1.0
        if name and quality >= 0:
            ranges.append((quality, name.lower()))
    refused = {name.split("-")[0] for quality, name in ranges if quality == 0}
    for quality, name in sorted(ranges, key=lambda item: -item[0]):
        if quality == 0:
            break
        primary = name.split("-")[0]
        wanted: tuple[Language, ...] = (
            LANGUAGES if name == "*" else tuple(lang for lang in LANGUAGES if lang == primary)
        )
        for language in wanted:
            if language not in refused:
                return language
    # Nothing the page has was asked for (or all of it was refused): it is still shown.
    return DEFAULT_LANGUAGE


def render_page(template: str, language: Language) -> str:
    """``template`` (``page.html``) with its ``{{key}}`` placeholders filled in ``language``.

    Raises:
        KeyError: The template names a label the language's table lacks.
    """
    table = labels(language)
    # The script's copy: JSON is JavaScript, and "<" escaped keeps "</script>" out of it.
    script_table = json.dumps(dict(table), ensure_ascii=False, sort_keys=True).replace(
        "<", "\\u003c"
    )
    command = '<code dir="ltr">multimodal-rag random-checkpoint</code>'
    fixed = {"lang": language, "dir": direction(language), "labels": script_table}

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in fixed:
            return fixed[key]
        return html.escape(table[key]).replace("{command}", command)

    return _PLACEHOLDER.sub(fill, template)
