"""The API's request fields and answers as typed models: what the endpoints accept and return,
and so what ``/openapi.json`` says they do.

The schema is generated from these classes (see [`openapi`][multimodal_rag.server.openapi]),
the request fields are validated by them, and every JSON answer is built from them, so the
document cannot say one thing while the server does another. The form models are made per
application by [`form_models`][multimodal_rag.server.models.form_models], because their
limits (``k``, the length of a text) are the server's settings.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

__all__ = [
    "Answer",
    "AnswererInfo",
    "AskFields",
    "AskResponse",
    "ChunkEvent",
    "DoneEvent",
    "EVENTS",
    "EmbedderInfo",
    "ErrorBody",
    "ErrorDetail",
    "Health",
    "Hit",
    "Info",
    "Limits",
    "MatchesEvent",
    "SearchFields",
    "SearchResponse",
    "Signal",
    "Source",
    "form_models",
]

#: Search modes a request may name.
Mode = Literal["vector", "lexical", "hybrid"]


class _Model(BaseModel):
    # A field added to an answer without its model would otherwise be dropped silently.
    model_config = ConfigDict(extra="forbid")


# -- answers -------------------------------------------------------------------------


class Signal(_Model):
    """How one retrieval channel placed a hit."""

    rank: int = Field(ge=1, description="1-based rank in that channel's results.")
    score: float = Field(description="Cosine similarity (vector), BM25 relevance (lexical) or the identifier score (identifier).")


class Hit(_Model):
    """One search result, best first (``Hit.to_dict()`` plus the thumbnail's address)."""

    id: str
    score: float = Field(description="What the results are ordered by (higher is better).")
    similarity: float | None = Field(description="Cosine similarity to the query vector, where one was computed.")
    description: str | None
    metadata: dict[str, Any]
    image_path: str | None = Field(description="Relative to the knowledge base.")
    image_url: str | None = Field(description="The thumbnail's address; null when the image was not kept.")
    signals: dict[str, Signal] = Field(description="Which channels found it (vector, lexical, identifier).")
    ocr_text: str | None = Field(default=None, description="The text read in the image (OCR), where it was read.")
    matched: list[str] = Field(
        default_factory=list,
        description="Why the words found it: the query's words and identifiers (model numbers) that its "
        "description or read text holds, as written there.",
    )


class Source(_Model):
    """A match an answer was based on (``Source.to_dict()`` plus the thumbnail's address)."""

    id: str
    score: float
    description: str | None
    image_path: str | None = Field(description="Relative to the knowledge base.")
    image_url: str | None = Field(description="The thumbnail's address; null when the image was not kept.")


class Answer(_Model):
    """An answer and what it was based on (``Answer.to_dict()``)."""

    text: str
    sources: list[Source] = Field(description="The matches given to the model, best first.")
    model: str | None = Field(description="Which model answered; null when none was asked.")
    usage: dict[str, int] = Field(description="Token counts reported by the provider, if any.")
    latency_s: float = Field(ge=0)


class SearchResponse(_Model):
    """The hits of ``POST /v1/search``."""

    generation: int = Field(description="The knowledge base's generation that answered.")
    count: int = Field(ge=0)
    hits: list[Hit]


class AskResponse(_Model):
    """The matches and the answer of ``POST /v1/ask`` without ``stream``."""

    generation: int
    matches: list[Hit]
    answer: Answer


class ErrorDetail(_Model):
    type: str = Field(description="The library's exception class, or the refusal's name.")
    message: str = Field(description="What was wrong, naming the bad input.")
    status: int = Field(description="The HTTP status, again.")


class ErrorBody(_Model):
    """Every error answer, whatever refused the request."""

    error: ErrorDetail


class MatchesEvent(_Model):
    """The first event of a streamed answer: the matches it is based on."""

    generation: int
    matches: list[Hit]


class ChunkEvent(_Model):
    """A piece of the answer's text, as the model writes it."""

    text: str


class DoneEvent(_Model):
    """The last event of a streamed answer: nothing more comes."""


#: A streamed answer's events by name, in their order: ``matches``, ``chunk``..., ``answer`` (or
#: ``error``, when the model fails once the stream has started), ``done``.
EVENTS: dict[str, type[BaseModel]] = {
    "matches": MatchesEvent,
    "chunk": ChunkEvent,
    "answer": Answer,
    "error": ErrorBody,
    "done": DoneEvent,
}


class Health(_Model):
    """``GET /healthz``: ``ok`` with the generation served, or ``starting`` (503)."""

    status: Literal["ok", "starting"]
    generation: int | SkipJsonSchema[None] = None
    images: int | SkipJsonSchema[None] = None


class EmbedderInfo(_Model):
    kind: str
    dim: int
    fingerprint: str
    random_weights: bool = Field(
        description="Whether the model's weights are random (a checkpoint made by `multimodal-rag "
        "random-checkpoint`): its matches and answers then mean nothing, and the page says so."
    )


class AnswererInfo(_Model):
    kind: str | None
    model: str | None


class Limits(_Model):
    """The limits a client may need to know (``ServerSettings.limits()``)."""

    max_upload_bytes: int
    image_types: list[str]
    max_k: int
    max_thumbnail_size: int
    max_text_chars: int
    max_upload_pixels: int


class Info(_Model):
    """``GET /v1/info``: what the knowledge base is made of, and the server's limits."""

    version: str
    knowledge_base: str
    generation: int
    reloads: int
    images: int
    embedder: EmbedderInfo
    vector_store: str
    description_store: str
    full_text: bool
    answerer: AnswererInfo
    auth: bool = Field(description="Whether /v1/ needs a bearer token.")
    limits: Limits


# -- request fields ------------------------------------------------------------------

# A form field left empty counts as not given, as in an HTML form; one of only white space is refused.
_Image = Annotated[bytes, Field(description="The query image (a file part of one of the accepted image types).")]
_Filter = Annotated[str, Field(description='Metadata conditions as a JSON object, e.g. {"price": {"$lt": 100}}.')]


class SearchFields(BaseModel):
    """The fields of ``POST /v1/search``; at least an image or a text."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"anyOf": [{"required": ["image"]}, {"required": ["text"]}]})

    image: _Image | SkipJsonSchema[None] = None
    text: str | SkipJsonSchema[None] = None
    k: int = 5
    filter: _Filter | SkipJsonSchema[None] = None
    mode: Mode | SkipJsonSchema[None] = Field(default=None, description="Default: vector, or hybrid with a text on a full-text store.")
    fusion: Literal["rrf", "weighted"] | SkipJsonSchema[None] = Field(
        default=None, description="Default: rrf, or weighted when the text in the image was read."
    )
    text_weight: float = Field(default=0.5, ge=0.0, le=1.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _something_to_search_for(self) -> SearchFields:
        if self.image is None and self.text is None:
            raise ValueError("give an image file, a text, or both")
        return self


class AskFields(BaseModel):
    """The fields of ``POST /v1/ask``; without an image or a text the question is the search."""

    model_config = ConfigDict(extra="ignore")

    question: str
    image: _Image | SkipJsonSchema[None] = None
    text: str | SkipJsonSchema[None] = None
    k: int = 3
    filter: _Filter | SkipJsonSchema[None] = None
    mode: Mode | SkipJsonSchema[None] = None
    stream: bool = Field(default=False, description="Answer as server-sent events: matches, chunk..., answer (or error), done.")


def form_models(*, max_text_chars: int, max_k: int) -> tuple[type[SearchFields], type[AskFields]]:
    """The form models of one server, with its limits on ``k`` and on the length of a text."""
    chars = max_text_chars

    class BoundSearchFields(SearchFields):
        text: Annotated[str, Field(max_length=chars, pattern=r"\S")] | SkipJsonSchema[None] = None
        k: int = Field(default=5, ge=1, le=max_k)

    class BoundAskFields(AskFields):
        question: str = Field(max_length=chars, pattern=r"\S")
        text: Annotated[str, Field(max_length=chars, pattern=r"\S")] | SkipJsonSchema[None] = None
        k: int = Field(default=3, ge=1, le=max_k)

    BoundSearchFields.__name__ = BoundSearchFields.__qualname__ = "SearchFields"
    BoundAskFields.__name__ = BoundAskFields.__qualname__ = "AskFields"
    return BoundSearchFields, BoundAskFields
