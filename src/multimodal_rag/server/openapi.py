"""The server's OpenAPI 3.1 description, served at ``/openapi.json``: generated, not written.

FastAPI generates the document from the routes and their [`models`][multimodal_rag.server.models]
(the answers' models, the form models that validate the fields, the thumbnail's parameters),
so it says what the handlers accept and return. This module adds what FastAPI cannot see: the
statuses the guard and the connection cap answer with ([`error_responses`][multimodal_rag.server.openapi.error_responses]),
the form bodies the endpoints read themselves ([`form_body`][multimodal_rag.server.openapi.form_body]),
and the bearer token ([`document`][multimodal_rag.server.openapi.document]).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from multimodal_rag.server.models import EVENTS, ErrorBody

__all__ = ["document", "error_responses", "event_stream", "form_body"]

# What each error status means on this server; an operation lists those it can answer with.
_WHY = {
    400: "Bad input: a field, the filter, k, the mode, the size or the id (the message says which).",
    401: "Missing or wrong bearer token.",
    403: "No token is set and a page of another origin sent the request.",
    404: "No image with that id, or its file is gone or outside the knowledge base and every image root.",
    408: "The request body did not arrive in time; the connection is closed.",
    413: "The request body is larger than the server accepts.",
    415: "Not a form (multipart/form-data or URL-encoded), or an image content type the server refuses.",
    421: "The Host header names a host this server does not answer to.",
    422: "The upload cannot be read as an image, is in a format the library does not read, or has too many pixels.",
    502: "The answering model failed.",
    503: (
        "Too many connections (answered before the request is read), or the knowledge base "
        "cannot be read; on /v1/ask also no answerer or the model's rate limit."
    ),
    504: "The answering model did not answer in time.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of an operation that can answer with ``statuses``: each one an [`ErrorBody`][multimodal_rag.server.models.ErrorBody]."""
    return {status: {"model": ErrorBody, "description": _WHY[status]} for status in sorted(set(statuses))}


def form_body(model: type[BaseModel], image_types: Iterable[str]) -> dict[str, Any]:
    """The request body of an endpoint that reads its form itself, from the model that validates it.

    Multipart, with the image part's accepted types; URL-encoded, without the image (a file
    needs multipart).
    """
    schema = model.model_json_schema()
    if "$defs" in schema:  # kept flat so that it can be inlined; a nested model needs components
        raise TypeError(f"{model.__name__} must be flat")
    required = set(schema.get("required", ()))
    for name, field in list(schema["properties"].items()):
        if name not in required and name != "image":
            schema["properties"][name] = _or_empty(field)
    urlencoded = {**schema, "properties": {name: value for name, value in schema["properties"].items() if name != "image"}}
    if "anyOf" in schema:  # "an image or a text" is "a text" without the image
        choices = [choice for choice in schema["anyOf"] if "image" not in choice.get("required", ())]
        urlencoded.pop("anyOf")
        urlencoded["required"] = sorted({*schema.get("required", ()), *(name for choice in choices for name in choice["required"])})
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": schema,
                    "encoding": {"image": {"contentType": ", ".join(sorted(image_types))}},
                },
                "application/x-www-form-urlencoded": {"schema": urlencoded},
            },
        }
    }


def _or_empty(field: dict[str, Any]) -> dict[str, Any]:
    """A field that may also be empty: an empty form field counts as not given, as the empty
    inputs of an HTML form are sent."""
    outer: dict[str, Any] = {key: field[key] for key in ("title", "description", "default") if key in field}
    inner = {key: value for key, value in field.items() if key not in outer}
    return {**outer, "anyOf": [inner, {"const": "", "description": "Empty: not given."}]}


def event_stream() -> dict[str, Any]:
    """The ``text/event-stream`` content of a streamed answer: what each event is (by its name),
    its data a line of JSON of the event's model ([`EVENTS`][multimodal_rag.server.models.EVENTS])."""
    events = [
        {
            "type": "object",
            "properties": {
                "event": {"const": name},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"$ref": f"#/components/schemas/{model.__name__}"},
                },
            },
            "required": ["event", "data"],
        }
        for name, model in EVENTS.items()
    ]
    return {"text/event-stream": {"schema": {"oneOf": events}}}


def document(generated: dict[str, Any], *, token: bool) -> dict[str, Any]:
    """FastAPI's document, finished: errors as JSON, no 422 of FastAPI's own, and the bearer
    token if one is set."""
    for operations in generated.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            for status, response in responses.items():
                content = response.get("content", {})
                if int(status) >= 400 and "application/json" not in content:
                    # FastAPI files an error's model under the route's own media type (a
                    # thumbnail's image/jpeg); every error is JSON.
                    response["content"] = {"application/json": next(iter(content.values()))}
            refused = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if refused.get("$ref", "").endswith("/HTTPValidationError"):
                # Fields a model refuses are answered 400 with the error body, never this.
                del responses["422"]
    schemas = generated.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for model in EVENTS.values():  # the events' data, which no route returns as JSON
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas.setdefault(model.__name__, schema)
    if token:
        generated.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        generated["security"] = [{"bearer": []}]
        for path, operations in generated.get("paths", {}).items():
            if not path.startswith("/v1/"):
                for operation in operations.values():
                    operation["security"] = []  # the page and the health check hold no data
    return generated
