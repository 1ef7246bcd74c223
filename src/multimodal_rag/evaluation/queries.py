"""The queries an evaluation asks: labelled ones from a file, and ones made from the knowledge base itself.

A labelled file is JSON Lines, one query per line:

```json
{"query": "a red battery generator", "expected": ["4f1c...", "images/gen-red.jpg"]}
{"image": "photos/IMG_0412.jpg", "expected": ["images/gen-red.jpg"]}
```

``expected`` names right answers by id or by image path: as the knowledge base recorded it,
relative to the file's folder, or by its last folders and name as a descriptions file writes
it (``images/gen-red.jpg`` matches one recorded path that ends so). An optional ``"set"``
names the query set (``{"query": ..., "set": "paraphrase", ...}`` reports as
``text:paraphrase``), so kinds of question are measured apart. Without labels, the knowledge
base's own descriptions are text queries, each expecting its own image (and any other image
with the same description).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from attrs import field, frozen

from multimodal_rag.errors import InvalidInputError
from multimodal_rag.types import Record, str_tuple

__all__ = ["LabelledQuery", "description_queries", "read_labelled_queries"]


@frozen(kw_only=True)
class LabelledQuery:
    """A query with its right answers: a text or an image."""

    text: str | None = None
    image: str | None = None
    expected: tuple[str, ...] = field(converter=str_tuple)
    #: The set named by the line's ``"set"`` (``"keyword"``, ``"paraphrase"``...), else ``"labelled"``.
    label: str = "labelled"

    @property
    def query_set(self) -> str:
        return f"{'text' if self.text is not None else 'image'}:{self.label}"


def read_labelled_queries(path: str | os.PathLike[str], records: Mapping[str, Record]) -> list[LabelledQuery]:
    """Read a labelled queries file, resolving each expected answer to an id of ``records``.

    Raises:
        InvalidInputError: The file cannot be read, or a line is not a query of this shape,
            or names an answer the knowledge base does not hold; the message names the line.
    """
    path = Path(path)
    by_path = _ids_by_path(records)
    suffixes: dict[str, str | None] | None = None

    def by_suffix(answer: str) -> str | None:
        """The one record whose path ends with ``answer``'s components (None if none or several)."""
        nonlocal suffixes
        if suffixes is None:
            suffixes = {}
            for record in records.values():
                if record.image_path is None:
                    continue
                parts = Path(record.image_path).parts
                for n in range(1, min(len(parts), 6) + 1):
                    key = "/".join(parts[-n:])
                    suffixes[key] = None if key in suffixes and suffixes[key] != record.id else record.id
        return suffixes.get("/".join(Path(answer).parts))
    base = path.resolve().parent
    queries = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read the queries file {str(path)!r}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{str(path)!r} line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{where} is not JSON: {exc}") from exc
        if not isinstance(obj, dict) or ("query" in obj) == ("image" in obj):
            raise InvalidInputError(f'{where} must be an object with either "query" (a text) or "image" (a path)')
        expected = obj.get("expected")
        if not isinstance(expected, list) or not expected or not all(isinstance(e, str) for e in expected):
            raise InvalidInputError(f'{where}: "expected" must be a non-empty list of ids or image paths')
        label = obj.get("set", "labelled")
        if not isinstance(label, str) or not label.strip() or ":" in label:
            raise InvalidInputError(f'{where}: "set" must be a name without ":"')
        resolved = []
        for answer in expected:
            id_ = (
                answer
                if answer in records
                else by_path.get(_normal(answer)) or by_path.get(_normal(str(base / answer))) or by_suffix(answer)
            )
            if id_ is None:
                raise InvalidInputError(f"{where}: {answer!r} is neither an id nor an image path of the knowledge base")
            resolved.append(id_)
        if "query" in obj:
            if not isinstance(obj["query"], str) or not obj["query"].strip():
                raise InvalidInputError(f'{where}: "query" must be a non-empty text')
            queries.append(LabelledQuery(text=obj["query"], expected=resolved, label=label))
        else:
            image = obj["image"]
            if not isinstance(image, str):
                raise InvalidInputError(f'{where}: "image" must be a path')
            queries.append(LabelledQuery(image=str(base / image), expected=resolved, label=label))
    return queries


def description_queries(records: Sequence[Record], everything: Mapping[str, Record]) -> list[LabelledQuery]:
    """Each record's description as a text query expecting its own image.

    Every image with the very same description is a right answer too: the query cannot
    tell them apart.
    """
    by_text: dict[str, list[str]] = {}
    for record in everything.values():
        if record.description and record.description.strip():
            by_text.setdefault(record.description.strip(), []).append(record.id)
    queries = []
    for record in records:
        text = (record.description or "").strip()
        if text:
            queries.append(LabelledQuery(text=text, expected=sorted(by_text[text])))
    return queries


def _ids_by_path(records: Mapping[str, Record]) -> dict[str, str]:
    return {_normal(r.image_path): r.id for r in records.values() if r.image_path is not None}


def _normal(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))
