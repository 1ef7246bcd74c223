"""The HTTP server's application: a FastAPI app over one knowledge base, opened read-only.

Routes (see ``docs/serving.md``; the schema is generated from the routes and
[`models`][multimodal_rag.server.models]):

- ``GET /``: the web page (in the language of ``ServerSettings.language``, else of the
  request's ``Accept-Language``; see [`languages`][multimodal_rag.server.languages]);
  ``GET /openapi.json``: the schema; ``GET /healthz``.
- ``POST /v1/search``, ``POST /v1/ask`` (``stream=true``: server-sent events),
  ``GET /v1/images/{id}`` (a JPEG thumbnail), ``GET /v1/info``.

Every error, whatever refuses the request (an endpoint, a field's model, the guard, an
unknown path or method), is answered ``{"error": {"type", "message", "status"}}``.

Everything under ``/v1/`` needs the bearer token when one is set. Every request must name one
of the allowed hosts (a page on another site that rebinds its name to this address is
refused), and without a token a ``POST`` from a page of another origin is refused. A request
body must arrive within ``body_timeout`` seconds; an uploaded image is checked from its header
before anything decodes it, and at most ``max_concurrent_decodes`` images are decoded at once,
which bounds the server's memory. The event loop only waits: embedding, searching, lock waits,
thumbnails and answerers without an async client all run in worker threads, so one slow
request does not hold up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from http import HTTPStatus
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from attrs import field, frozen
from fastapi import FastAPI, Path, Query
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from multimodal_rag._version import __version__
from multimodal_rag.errors import ImageError, InvalidInputError
from multimodal_rag.server import models
from multimodal_rag.server.errors import HTTPProblem, error_body, invalid_fields
from multimodal_rag.server.languages import Language, negotiate, parse_language, render_page
from multimodal_rag.server.models import (
    EVENTS,
    AnswererInfo,
    AskFields,
    AskResponse,
    ChunkEvent,
    DoneEvent,
    EmbedderInfo,
    ErrorBody,
    Health,
    Info,
    Limits,
    MatchesEvent,
    SearchFields,
    SearchResponse,
    form_models,
)
from multimodal_rag.server.openapi import document, error_responses, event_stream, form_body
from multimodal_rag.server.refusals import SLOW_BODIES
from multimodal_rag.server.reloading import ReloadingKnowledgeBase
from multimodal_rag.types import Answer, Hit

__all__ = ["DEFAULT_IMAGE_TYPES", "LOOPBACK_HOSTS", "ServerSettings", "create_app", "servable_path"]

logger = logging.getLogger(__name__)

#: Upload content types accepted for ``image`` (the library checks the bytes themselves too).
DEFAULT_IMAGE_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/gif",
        "image/bmp",
        "image/tiff",
        "image/heic",
        "image/heif",
        "image/avif",
    }
)

#: Host names a server bound to the loopback interface answers to (with any port).
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

_Fields = TypeVar("_Fields", SearchFields, AskFields)


def _frozenset(value: Any) -> frozenset[str]:
    return frozenset(str(item).lower() for item in value)


def _hosts(value: Any) -> frozenset[str]:
    return frozenset(str(item).lower().strip("[]") for item in value)


def _paths(value: Any) -> tuple[str, ...]:
    return tuple(os.path.realpath(item) for item in value)


def _language(value: Any) -> Language | None:
    return None if value is None else parse_language(value)


@frozen(kw_only=True)
class ServerSettings:
    """How the server behaves; every limit protects it from a client.

    Attributes:
        token: Bearer token required for ``/v1/`` (``None``: no authentication).
        max_upload_bytes: Largest request body; larger ones get 413 before they are read.
        image_types: Content types an uploaded image may declare.
        max_k: Most results one request may ask for.
        max_fields: Most form fields in one request.
        thumbnail_size: Long side of a thumbnail when ``size`` is not given.
        max_thumbnail_size: Largest ``size`` a client may ask for.
        reload_interval: Seconds between checks for a new generation saved by another
            process (``0`` turns following saves off).
        allowed_hosts: Names the ``Host`` header may give (any port); ``"*"`` allows any.
            The loopback names by default, so a page that rebinds its own name to this
            address cannot read a server without a token.
        max_text_chars: Longest ``question`` or ``text``, in characters.
        max_upload_pixels: Most pixels an uploaded image may have, counted at full size from
            its header before it is decoded: at up to about 12 bytes per pixel while it is
            decoded (an RGBA PNG), the default of 16 million bounds one upload to about 200 MB.
        max_concurrent_decodes: Most uploads and thumbnails decoded at once; others wait.
        body_timeout: Seconds a client has to send a whole request body; a slower one gets
            408 and the connection is closed.
        image_roots: Folders besides the knowledge base whose images thumbnails may show
            (resolved: a symbolic link counts where it leads). A record naming a file
            anywhere else gets 404.
        language: The web page's language (``"en"`` or ``"fa"``) for every request;
            ``None`` (the default): each request's ``Accept-Language`` chooses, English when
            it names neither.
    """

    token: str | None = None
    max_upload_bytes: int = 10 * 1024 * 1024
    image_types: frozenset[str] = field(default=DEFAULT_IMAGE_TYPES, converter=_frozenset)
    max_k: int = 50
    max_fields: int = 16
    thumbnail_size: int = 256
    max_thumbnail_size: int = 1024
    reload_interval: float = 2.0
    allowed_hosts: frozenset[str] = field(default=LOOPBACK_HOSTS, converter=_hosts)
    max_text_chars: int = 4000
    max_upload_pixels: int = 16_000_000
    max_concurrent_decodes: int = 2
    body_timeout: float = 30.0
    image_roots: tuple[str, ...] = field(default=(), converter=_paths)
    language: Language | None = field(default=None, converter=_language)

    def limits(self) -> dict[str, Any]:
        """The limits a client may need to know, as ``/v1/info`` shows them."""
        return {
            "max_upload_bytes": self.max_upload_bytes,
            "image_types": sorted(self.image_types),
            "max_k": self.max_k,
            "max_thumbnail_size": self.max_thumbnail_size,
            "max_text_chars": self.max_text_chars,
            "max_upload_pixels": self.max_upload_pixels,
        }


def create_app(
    knowledge_base: ReloadingKnowledgeBase,
    settings: ServerSettings | None = None,
) -> FastAPI:
    """The ASGI application serving ``knowledge_base``.

    The knowledge base is opened (in a worker thread) when the application starts, unless
    it is open already, and from then on followed: a save by another process is served
    within ``settings.reload_interval`` seconds.
    """
    settings = settings or ServerSettings()
    api = _Api(knowledge_base, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if knowledge_base._rag is None:
            await asyncio.to_thread(knowledge_base.open)
        prepare = getattr(knowledge_base.rag.answerer, "aprepare", None)
        if callable(prepare):
            await prepare()  # the model's client, before the first question rather than during it
        watcher = (
            asyncio.create_task(knowledge_base.watch(settings.reload_interval))
            if settings.reload_interval > 0
            else None
        )
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            aclose = getattr(knowledge_base.rag.answerer, "aclose", None)
            if callable(aclose):
                await aclose()  # the answerer's client of this event loop

    # FastAPI's own pages (/docs, /redoc) load their scripts from another site: not served.
    app = _App(
        settings=settings,
        lifespan=lifespan,
        title="multimodal-rag",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.router.route_class = _ErrorsAsJSON
    app.add_exception_handler(StarletteHTTPException, _no_such_route)
    # What the guard and the connection cap answer, which no endpoint sees: 421, 413 and 503
    # anywhere; 401 under /v1/ with a token; where a body is read, 403 (a page of another
    # origin, without a token) and 408 (a body too slow).
    anywhere = (421, 413, 503)
    api_route = (*anywhere, 401) if settings.token is not None else anywhere
    posted = (*api_route, 408) if settings.token is not None else (*api_route, 403, 408)

    async def thumbnail(
        id: str = Path(description="The image's id (percent-encoded; it may hold a slash)."),
        size: int = Query(
            default=settings.thumbnail_size,
            ge=16,
            le=settings.max_thumbnail_size,
            description="Long side of the thumbnail, in pixels.",
        ),
    ) -> Response:
        return await api.image(id, size)

    app.add_api_route(
        "/", api.page, operation_id="page", methods=["GET"], response_class=HTMLResponse,
        summary="The web page.",
        description="In the language the server was started with (`serve --lang`), else in the first "
        "of the request's `Accept-Language` the page has (English, Persian), else in English.",
        responses=error_responses(*anywhere),
    )
    app.add_api_route(
        "/healthz", api.healthz, operation_id="health", methods=["GET"], response_model=Health,
        summary="Liveness: the generation served and how many images it holds.",
        responses=error_responses(*anywhere),
    )
    app.add_api_route(
        "/v1/info", api.info, operation_id="info", methods=["GET"], response_model=Info,
        summary="What the knowledge base is made of, and the server's limits.",
        responses=error_responses(*api_route),
    )
    app.add_api_route(
        "/v1/search", api.search, operation_id="search", methods=["POST"], response_model=SearchResponse,
        summary="Find the knowledge-base images that best match an image, a text, or both.",
        responses=error_responses(*posted, 400, 415, 422),
        openapi_extra=form_body(api.search_fields, settings.image_types),
    )
    app.add_api_route(
        "/v1/ask", api.ask, operation_id="ask", methods=["POST"], response_model=AskResponse,
        summary="Answer a question about an image from the descriptions of its best matches.",
        responses=_merged(
            error_responses(*posted, 400, 415, 422, 502, 504),
            {200: {"description": "The matches and the answer as JSON, or (stream=true) as server-sent events.", "content": event_stream()}},
        ),
        openapi_extra=form_body(api.ask_fields, settings.image_types),
    )
    app.add_api_route(
        "/v1/images/{id:path}", thumbnail, operation_id="thumbnail", methods=["GET"], response_class=_JPEGResponse,
        summary="A JPEG thumbnail of a knowledge-base image.",
        responses=_merged(error_responses(*api_route, 400, 404), {200: {"description": "The thumbnail."}}),
    )
    app.add_middleware(_Guard, settings=settings)
    app.state.knowledge_base = knowledge_base
    app.state.settings = settings
    return app


class _App(FastAPI):
    """The application; its OpenAPI document is FastAPI's, finished by [`openapi.document`][multimodal_rag.server.openapi.document]."""

    def __init__(self, *, settings: ServerSettings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._settings = settings

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = document(super().openapi(), token=self._settings.token is not None)
        return self.openapi_schema


class _JPEGResponse(Response):
    media_type = "image/jpeg"


def _merged(*tables: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    merged: dict[int | str, dict[str, Any]] = {}
    for table in tables:
        for status, entry in table.items():
            merged[status] = {**merged.get(status, {}), **entry}
    return merged


def _problem_response(exc: BaseException) -> JSONResponse:
    status, body = error_body(exc)
    headers = exc.headers if isinstance(exc, HTTPProblem) else None
    if status >= 500 and not isinstance(exc, HTTPProblem):
        logger.error("request failed", exc_info=exc)
    return JSONResponse(body, status_code=status, headers=headers)


async def _no_such_route(request: Request, exc: Exception) -> Response:
    """An unknown path (404) or method (405), answered as every other error is."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        problem = HTTPProblem(404, "NotFound", f"there is nothing at {request.url.path[:200]!r}")
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        problem = HTTPProblem(
            405, "MethodNotAllowed", f"{request.url.path[:200]!r} answers {allowed}, not {request.method}", headers=dict(exc.headers or {})
        )
    else:
        phrase = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else "Error"
        problem = HTTPProblem(exc.status_code, phrase.replace(" ", ""), str(exc.detail), headers=dict(exc.headers or {}))
    return _problem_response(problem)


class _ErrorsAsJSON(APIRoute):
    """A route whose every exception becomes the JSON error answer, fields refused by their
    model included (400, in the library's words, rather than FastAPI's 422)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ClientDisconnect:
                # The client went away mid-request: nothing is wrong here, and nobody reads an answer.
                logger.debug("the client of %s %s disconnected", request.method, request.url.path)
                return Response(status_code=499)
            except RequestValidationError as exc:
                return _problem_response(invalid_fields(exc.errors()))
            except Exception as exc:  # an answer that breaks its own model is a 500 here too
                return _problem_response(exc)

        return handle


class _Api:
    """The endpoints, sharing the knowledge base and the settings."""

    def __init__(self, knowledge_base: ReloadingKnowledgeBase, settings: ServerSettings) -> None:
        self.kb = knowledge_base
        self.settings = settings
        self.search_fields, self.ask_fields = form_models(max_text_chars=settings.max_text_chars, max_k=settings.max_k)
        self._template: str | None = None
        self._pages: dict[Language, str] = {}
        # Decoding is what costs memory (up to about 10 bytes per pixel), so it is what is bounded.
        self._decodes = asyncio.Semaphore(settings.max_concurrent_decodes)

    # -- pages and metadata ------------------------------------------------------

    async def page(self, request: Request) -> Response:
        fixed = self.settings.language
        language = fixed or negotiate(request.headers.get("accept-language"))
        page = self._pages.get(language)
        if page is None:
            if self._template is None:
                self._template = resources.files("multimodal_rag.server").joinpath("page.html").read_text(encoding="utf-8")
            page = self._pages[language] = render_page(self._template, language)
        headers = {**_PAGE_HEADERS, "Content-Language": language}
        if fixed is None:
            headers["Vary"] = "Accept-Language"  # a cache must not give one reader's language to another
        return HTMLResponse(page, headers=headers)

    async def healthz(self) -> Health:
        rag = self.kb._rag
        if rag is None:
            raise HTTPProblem(503, "Starting", "the knowledge base is still opening", headers={"Retry-After": "1"})
        return Health(status="ok", generation=rag.generation, images=len(rag))

    async def info(self) -> Info:
        from multimodal_rag._registry import kind_of

        rag = self.kb.rag
        answerer = rag.answerer
        return Info(
            version=__version__,
            knowledge_base=self.kb.path.name,
            generation=rag.generation,
            reloads=self.kb.reloads,
            images=len(rag),
            embedder=EmbedderInfo(
                kind=kind_of(rag.embedder),
                dim=rag.embedder.dim,
                fingerprint=rag.embedder.fingerprint,
                random_weights=getattr(rag.embedder, "random_weights", False) is True,
            ),
            vector_store=kind_of(rag.vector_store),
            description_store=kind_of(rag.description_store),
            full_text=bool(getattr(rag.description_store, "full_text", False)),
            answerer=AnswererInfo(
                kind=kind_of(answerer) if answerer is not None else None,
                model=getattr(answerer, "model", None) or getattr(answerer, "model_name", None),
            ),
            auth=self.settings.token is not None,
            limits=Limits(**self.settings.limits()),
        )

    # -- search and ask ----------------------------------------------------------

    async def search(self, request: Request) -> SearchResponse:
        fields = await self._fields(request, self.search_fields)
        rag = self.kb.rag
        search = rag.asearch(
            image=fields.image,
            text=fields.text,
            k=fields.k,
            filter=_filter(fields.filter),
            mode=fields.mode,
            fusion=fields.fusion,
            text_weight=fields.text_weight,
        )
        hits = await self._decoding(search, fields.image)
        return SearchResponse(generation=rag.generation, count=len(hits), hits=[self._hit(hit) for hit in hits])

    async def ask(self, request: Request) -> AskResponse | Response:
        fields = await self._fields(request, self.ask_fields)
        question, image = fields.question, fields.image
        rag = self.kb.rag
        answerer = rag.answerer
        if answerer is None:
            raise HTTPProblem(503, "NoAnswerer", "this server has no answerer")
        text = fields.text
        if image is None and text is None:
            text = question  # a question with no picture is its own search, as in MultimodalRAG.ask
        search = rag.asearch(image=image, text=text, k=fields.k, filter=_filter(fields.filter), mode=fields.mode)
        hits = await self._decoding(search, image)
        if not fields.stream:
            answer = await _aanswer(answerer, question, image, hits)
            return AskResponse(generation=rag.generation, matches=[self._hit(hit) for hit in hits], answer=self._answer(answer))
        # The request to the model is made (and its errors answered as JSON) before the
        # response starts; what fails later arrives as an "error" event.
        astream = getattr(answerer, "astream", None)
        if callable(astream):
            chunks = await astream(question, image=image, matches=hits)
        else:  # a duck-typed answerer that cannot stream: its answer is one chunk
            from multimodal_rag._streaming import AsyncAnswerStream

            chunks = AsyncAnswerStream.from_answer(await _aanswer(answerer, question, image, hits))
        return StreamingResponse(
            self._events(rag.generation, hits, chunks),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _events(self, generation: int, hits: list[Hit], chunks: Any) -> AsyncIterator[str]:
        """The answer as server-sent events: ``matches``, ``chunk``..., ``answer`` (or ``error``), ``done``."""
        try:
            yield _event("matches", MatchesEvent(generation=generation, matches=[self._hit(hit) for hit in hits]))
            try:
                async for chunk in chunks:
                    yield _event("chunk", ChunkEvent(text=chunk))
                answer = await chunks.get_answer()
                yield _event("answer", self._answer(answer))
            except Exception as exc:
                status, body = error_body(exc)
                if status >= 500:
                    logger.error("a streamed answer failed", exc_info=exc)
                yield _event("error", ErrorBody.model_validate(body))
            yield _event("done", DoneEvent())
        finally:
            await chunks.aclose()

    # -- thumbnails --------------------------------------------------------------

    async def image(self, id_: str, side: int) -> Response:
        rag = self.kb.rag
        record = await asyncio.to_thread(rag.get, id_)
        if record.image_path is None:
            raise HTTPProblem(404, "NotFoundError", f"the image of id {id_!r} was not kept")
        path = self._servable(record.image_path)
        if path is None:
            logger.warning(
                "the image of %s lies outside the knowledge base and every image root; it is not served", id_
            )
            raise HTTPProblem(404, "ImageUnavailable", f"the image file of id {id_!r} cannot be read")
        try:
            async with self._decodes:
                data = await asyncio.to_thread(_thumbnail, path, side)
        except ImageError:
            # The message would name the file; the client only needs to know it is gone.
            logger.warning("thumbnail of %s failed", id_, exc_info=True)
            raise HTTPProblem(404, "ImageUnavailable", f"the image file of id {id_!r} cannot be read") from None
        return _JPEGResponse(data, headers={"Cache-Control": "private, max-age=300"})

    def _servable(self, image_path: str) -> str | None:
        return servable_path(self.kb.path, image_path, self.settings.image_roots)

    async def _decoding(self, search: Awaitable[list[Hit]], image: bytes | None) -> list[Hit]:
        """Run a search, holding a decode slot while it decodes an uploaded image."""
        if image is None:
            return await search
        async with self._decodes:
            return await search

    # -- reading requests --------------------------------------------------------

    async def _fields(self, request: Request, model: type[_Fields]) -> _Fields:
        """The form's fields, validated by ``model``; an uploaded image is checked (its type,
        not empty, its size from its header) before anything decodes it."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
            raise HTTPProblem(
                415, "UnsupportedMediaType", f"send the fields as multipart/form-data, not {content_type or 'nothing'}"
            )
        try:
            form = await request.form(max_files=1, max_fields=self.settings.max_fields)
        except MultiPartException as exc:
            raise HTTPProblem(400, "InvalidInputError", f"unreadable form: {exc.message}") from exc
        except StarletteHTTPException as exc:  # how Starlette reports a MultiPartException inside an app
            raise HTTPProblem(exc.status_code, "InvalidInputError", f"unreadable form: {exc.detail}") from exc
        try:
            given: dict[str, Any] = {}
            for name, value in form.multi_items():
                if name not in model.model_fields:
                    continue
                if name == "image":
                    given["image"] = await self._upload(value)
                elif not isinstance(value, str):
                    raise HTTPProblem(400, "InvalidInputError", f"{name} must be a text field, not a file")
                else:
                    given[name] = value or None
        finally:
            await form.close()  # the uploaded file's spool; its bytes are read by now
        try:
            fields = model.model_validate({name: value for name, value in given.items() if value is not None})
        except ValidationError as exc:
            raise invalid_fields(exc.errors()) from None
        if fields.image is not None:
            from multimodal_rag._images import check_image

            # From the header only, before anything decodes it: what it would cost to decode.
            await asyncio.to_thread(check_image, fields.image, max_pixels=self.settings.max_upload_pixels)
        return fields

    async def _upload(self, upload: str | UploadFile) -> bytes | None:
        if isinstance(upload, str):
            if upload == "":
                return None
            raise HTTPProblem(400, "InvalidInputError", "image must be a file part (multipart/form-data)")
        content_type = (upload.content_type or "").split(";")[0].strip().lower()
        if not upload.filename and not upload.size:
            return None  # a form's empty file input
        if content_type not in self.settings.image_types:
            raise HTTPProblem(
                415,
                "UnsupportedMediaType",
                f"image must be one of {', '.join(sorted(self.settings.image_types))}; got {content_type or 'no type'}",
            )
        data = await upload.read()
        if not data:
            raise HTTPProblem(400, "InvalidInputError", "the image file is empty")
        return data

    # -- writing answers ---------------------------------------------------------

    def _hit(self, hit: Hit) -> models.Hit:
        return models.Hit(**hit.to_dict(root=self.kb.path), image_url=_image_url(hit.id) if hit.image_path else None)

    def _answer(self, answer: Answer) -> models.Answer:
        body = answer.to_dict(root=self.kb.path)
        body["sources"] = [
            models.Source(**source, image_url=_image_url(original.id) if original.image_path else None)
            for source, original in zip(body["sources"], answer.sources)
        ]
        return models.Answer(**body)


# The page runs only its own script and styles, and talks only to this server.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def _aanswer(answerer: Any, question: str, image: bytes | None, hits: list[Hit]) -> Answer:
    aanswer = getattr(answerer, "aanswer", None)
    if callable(aanswer):
        answer: Answer = await aanswer(question, image=image, matches=hits)
        return answer
    return await asyncio.to_thread(answerer.answer, question, image=image, matches=hits)


def _image_url(id_: str) -> str:
    return f"/v1/images/{quote(id_, safe='')}"


def _event(name: str, data: BaseModel) -> str:
    # JSON escapes newlines, so each event's data is one line.
    assert isinstance(data, EVENTS[name]), f"the {name} event is documented as {EVENTS[name].__name__}"
    return f"event: {name}\ndata: {data.model_dump_json()}\n\n"


def _filter(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    from multimodal_rag._validation import load_json

    value = load_json(raw, what="filter")
    if not isinstance(value, dict):
        raise InvalidInputError(f"filter must be a JSON object, got {type(value).__name__}")
    return value


def servable_path(kb: str | os.PathLike[str], image_path: str, roots: tuple[str, ...] = ()) -> str | None:
    """An image's resolved path, if it lies in the knowledge base ``kb`` or one of ``roots``.

    Resolved (symbolic links followed, ``..`` removed) against the knowledge base, so a path
    stored relative to it and an absolute one are judged alike.
    """
    from multimodal_rag._storage import is_url

    if is_url(image_path):  # an image in a bucket: served where an image root is a prefix of it
        return image_path if any(is_url(root) and image_path.startswith(root.rstrip("/") + "/") for root in roots) else None
    resolved = os.path.realpath(os.path.join(kb, image_path))
    inside = (os.path.realpath(kb), *(os.path.realpath(root) for root in roots))
    return resolved if any(_inside(resolved, root) for root in inside) else None


def _host_name(host: str) -> str:
    """The name in a ``Host`` header, without its port or an IPv6 address's brackets, in lower case."""
    if host.startswith("["):
        name, bracket, _ = host[1:].partition("]")
        return name.lower() if bracket else ""
    name, _, port = host.partition(":")
    return name.lower() if port.isdigit() or not port else ""


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _thumbnail(path: str, side: int) -> bytes:
    from multimodal_rag._images import open_image

    picture = open_image(path, draft_size=(side, side))
    picture.thumbnail((side, side))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


class _UploadTooLarge(HTTPProblem):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "PayloadTooLarge", f"the request body is larger than {limit} bytes")


class _BodyTooSlow(HTTPProblem):
    def __init__(self, timeout: float) -> None:
        super().__init__(
            408,
            "RequestTimeout",
            f"the request body did not arrive within {timeout:g} seconds",
            headers={"Connection": "close"},
        )


# Methods that change nothing; every other one may start work (a paid model call).
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class _Guard:
    """ASGI middleware: the ``Host``, the origin of a state-changing request, the bearer token for
    ``/v1/``, and the request body's size and deadline.

    The size is checked twice: a declared ``Content-Length`` is refused before anything is
    read, and a body sent without one (chunked) is counted as it arrives. The body as a whole
    must arrive within ``body_timeout`` seconds, however slowly its bytes trickle in.
    """

    def __init__(self, app: ASGIApp, *, settings: ServerSettings) -> None:
        self.app = app
        self.token = settings.token.encode("utf-8") if settings.token is not None else None
        self.limit = settings.max_upload_bytes
        self.hosts = settings.allowed_hosts
        self.body_timeout = settings.body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        problem = self._check_host(headers.get("host")) or self._check_origin(scope["method"], headers)
        if problem is None and self.token is not None and scope["path"].startswith("/v1/"):
            problem = self._check_token(headers.get("authorization"))
        length = headers.get("content-length")
        if problem is None and length is not None and (not length.isdigit() or int(length) > self.limit):
            problem = _UploadTooLarge(self.limit)
        if problem is not None:
            await _problem_response(problem)(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _check_host(self, host: str | None) -> HTTPProblem | None:
        if host is None or "*" in self.hosts:
            return None  # an HTTP/1.0 client without Host is no browser on another site
        if _host_name(host) in self.hosts:
            return None
        return HTTPProblem(
            421,
            "MisdirectedRequest",
            f"this server answers to {', '.join(sorted(self.hosts))}, not to the host {host[:100]!r} "
            "(its --allowed-host option adds names)",
        )

    def _check_origin(self, method: str, headers: Mapping[str, str]) -> HTTPProblem | None:
        """Without a token, refuse a state-changing request that a page of another site sent.

        With a token, such a page cannot send it: the browser would need this server's
        permission (CORS) to add the ``Authorization`` header, and it never gives it.
        """
        if self.token is not None or method in _SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None:
            same = origin != "null" and urlsplit(origin).netloc.lower() == headers.get("host", "").lower()
        else:
            same = headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
        if same:
            return None
        return HTTPProblem(
            403,
            "CrossOriginRequest",
            f"a page of another origin ({(origin or 'cross-site')[:100]}) may not send requests to this "
            "server without a token (--token)",
        )

    def _check_token(self, header: str | None) -> HTTPProblem | None:
        challenge = {"WWW-Authenticate": 'Bearer realm="multimodal-rag"'}
        if header is None:
            return HTTPProblem(401, "Unauthorized", "this server needs a bearer token (Authorization: Bearer ...)", headers=challenge)
        scheme, _, given = header.encode("latin-1").partition(b" ")
        # Compared in constant time, so the answer's timing does not tell how much was right.
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token or b""):
            return HTTPProblem(401, "Unauthorized", "the bearer token is wrong", headers=challenge)
        return None

    def _counting(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.limit
        timeout = self.body_timeout
        deadline: float | None = None

        async def counted() -> Message:
            nonlocal seen, deadline
            if deadline is None:  # from the first read: an endpoint that reads no body has no deadline
                deadline = time.monotonic() + timeout
            if deadline == math.inf:
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    SLOW_BODIES.note()
                    raise _BodyTooSlow(timeout) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _UploadTooLarge(limit)
                if not message.get("more_body", False):
                    deadline = math.inf  # the body is complete; a later read waits for a disconnect
            return message

        return counted
