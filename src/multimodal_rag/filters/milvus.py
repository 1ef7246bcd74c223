"""The Milvus dialect: a filter as a Milvus filter expression over the copy of each record's
metadata that `milvus_document` lays out, and that copy.

(The expressions a Milvus vector store writes over its own id field are in
`multimodal_rag.vectors.milvus_filters`.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from multimodal_rag.errors import InvalidInputError
from multimodal_rag.filters._values import INT64, NEGATED, ORDERED, Scalar, kind_of

if TYPE_CHECKING:
    from multimodal_rag.filters._nodes import ConditionNode, FilterNode, GroupNode

__all__ = ["MAX_MILVUS_TERMS", "NotExpressible", "milvus_document", "to_milvus"]

#: The most comparisons one Milvus expression may hold; a longer filter (a long ``$in``) is
#: answered from the description store's ids instead, so the server's parser is never the limit.
MAX_MILVUS_TERMS = 1_000

# Where milvus_document() keeps each kind of value: numbers, strings, booleans and nulls each
# under their own object, so a comparison in Milvus never meets a value of another kind (Milvus
# itself finds 1 equal to true, and a missing key "is null").
_BUCKETS = {"number": "n", "string": "s", "true": "b", "false": "b", "null": "z"}
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters a key keeps in Milvus as it is; any other is percent-encoded (UTF-8), which makes
# keys safe inside a string literal whatever the user wrote, and keeps distinct keys distinct.
_KEY_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")
# In a Milvus string literal: these take an escape; other control characters are not read the
# same by every Milvus version, so a filter holding one is not sent.
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNSENDABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class NotExpressible(Exception):
    """A filter that [`MetadataFilter.to_milvus`][multimodal_rag.filters.MetadataFilter.to_milvus] cannot write as an exact Milvus expression.

    Not an error for the caller: the search falls back to the ids the description store finds.
    """


def to_milvus(filter: FilterNode, field: str = "metadata") -> str:
    """See [`MetadataFilter.to_milvus`][multimodal_rag.filters.MetadataFilter.to_milvus]."""
    if not isinstance(field, str) or not _FIELD.fullmatch(field):
        raise InvalidInputError(f"field must be a Milvus field name, got {field!r:.80}")
    if filter.accept(_Terms()) > MAX_MILVUS_TERMS:
        raise NotExpressible(f"more than {MAX_MILVUS_TERMS} comparisons")
    return filter.accept(_Milvus(field))


def milvus_document(metadata: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The copy of a record's metadata that [`MetadataFilter.to_milvus`][multimodal_rag.filters.MetadataFilter.to_milvus] expressions read.

    Each scalar value goes under the object for its kind: ``"n"`` numbers, ``"s"`` strings,
    ``"b"`` booleans, ``"z"`` nulls (as ``true``), by its percent-encoded key
    (``{"price": 10, "tag": "a"}`` becomes ``{"n": {"price": 10}, "s": {"tag": "a"}}``).
    Lists and objects are left out, since no filter matches them; so are keys that start
    with ``$``, which no filter names. Integers beyond 64 bits become floats.
    """
    document: dict[str, dict[str, Any]] = {}
    for key, value in metadata.items():
        kind = kind_of(value)
        if kind == "other" or key.startswith("$"):
            continue
        if kind == "null":
            value = True
        elif isinstance(value, int) and not isinstance(value, bool) and value not in INT64:
            value = float(value)
        document.setdefault(_BUCKETS[kind], {})[_key(key)] = value
    return document


class _Terms:
    """How many comparisons `_Milvus` writes."""

    def all_of(self, node: GroupNode) -> int:
        return sum(f.accept(self) for f in node.filters)

    def any_of(self, node: GroupNode) -> int:
        return sum(f.accept(self) for f in node.filters)

    def condition(self, node: ConditionNode) -> int:
        return len(node.value) if isinstance(node.value, tuple) else 1


class _Milvus:
    def __init__(self, field: str) -> None:
        self.field = field

    def all_of(self, node: GroupNode) -> str:
        return _join([f.accept(self) for f in node.filters], "and", "true")

    def any_of(self, node: GroupNode) -> str:
        return _join([f.accept(self) for f in node.filters], "or", "false")

    def condition(self, node: ConditionNode) -> str:
        op = NEGATED.get(node.op, node.op)
        values = node.value if isinstance(node.value, tuple) else (node.value,)
        # One group per kind of value, each reading only its own object of the field.
        groups: dict[str, list[str]] = {}
        # Deduplicated by kind and value: a set would take True for 1.
        for kind, value in dict.fromkeys((kind_of(value), value) for value in values):
            path = _path(self.field, _BUCKETS[kind], node.key)
            if kind == "null":
                term = f"exists {path}"
            else:
                sign = "==" if op in ("$eq", "$in") else ORDERED[op]
                term = f"{path} {sign} {_literal(value)}"
            groups.setdefault(path, []).append(term)
        if node.op not in NEGATED:
            return _join([term for terms in groups.values() for term in terms], "or", "false")
        # Milvus finds "not (x == 1)" false where x is missing: the exists guard makes the
        # inner test plainly false there, so its negation holds as matches() says.
        guarded = [
            terms[0]
            if terms[0].startswith("exists ")  # a null needs no guard
            else f"exists {path} and {_parenthesised(_join(terms, 'or', 'false'))}"
            for path, terms in groups.items()
        ]
        return f"not {_parenthesised(_join(guarded, 'or', 'false'))}"


def _join(terms: Sequence[str], word: str, empty: str) -> str:
    """``terms`` joined by ``and`` or ``or``, nested in halves so the parser's depth grows as log(n)."""
    if not terms:
        return empty
    if len(terms) == 1:
        return terms[0]
    middle = len(terms) // 2
    left = _join(terms[:middle], word, empty)
    right = _join(terms[middle:], word, empty)
    return f"{_parenthesised(left)} {word} {_parenthesised(right)}"


def _parenthesised(term: str) -> str:
    # A single comparison or test needs no brackets; anything joined or negated gets them.
    simple = term in ("true", "false") or (" and " not in term and " or " not in term and not term.startswith("not "))
    return term if simple else f"({term})"


def _key(key: str) -> str:
    if _KEY_SAFE.fullmatch(key):
        return key
    return "".join(
        char if _KEY_SAFE.fullmatch(char) else "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))
        for char in key
    )


def _path(field: str, bucket: str, key: str) -> str:
    return f'{field}["{bucket}"]["{_key(key)}"]'


def _literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return repr(float(value)) if value not in INT64 else str(value)
    if isinstance(value, float):
        return repr(value)
    assert isinstance(value, str)
    if _UNSENDABLE.search(value):
        raise NotExpressible("a string holds a control character")
    return '"' + "".join(_ESCAPES.get(char, char) for char in value) + '"'
