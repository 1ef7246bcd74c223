"""The server's OpenAPI 3.1 description, served at ``/openapi.json``.

Written out rather than generated: the endpoints read multipart forms by hand, and this is
the contract clients are built against, so a change to it should be a deliberate edit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multimodal_rag._version import __version__

if TYPE_CHECKING:
    from multimodal_rag.server.app import ServerSettings

__all__ = ["schema"]


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


_ERRORS = {
    "400": _error("Bad input: a field, the filter, k or the mode (the message says which)."),
    "401": _error("Missing or wrong bearer token."),
    "413": _error("The request body is larger than the server accepts."),
    "415": _error("Not multipart/form-data, or an image content type the server refuses."),
    "422": _error("The image cannot be read."),
}

_SEARCH_FIELDS: dict[str, Any] = {
    "image": {"type": "string", "format": "binary", "description": "The query image."},
    "text": {"type": "string", "description": "The query text."},
    "k": {"type": "integer", "minimum": 1, "description": "How many results."},
    "filter": {"type": "string", "description": 'Metadata conditions as JSON, e.g. {"price": {"$lt": 100}}.'},
    "mode": {"type": "string", "enum": ["vector", "lexical", "hybrid"]},
}


def schema(settings: ServerSettings) -> dict[str, Any]:
    """The OpenAPI document, with this server's limits and authentication."""
    hit = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "score": {"type": "number"},
            "similarity": {"type": ["number", "null"]},
            "description": {"type": ["string", "null"]},
            "metadata": {"type": "object"},
            "image_path": {"type": ["string", "null"], "description": "Relative to the knowledge base."},
            "image_url": {"type": ["string", "null"], "description": "The thumbnail's address."},
            "signals": {"type": "object"},
        },
        "required": ["id", "score"],
    }
    answer = {
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "sources": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}},
            "model": {"type": ["string", "null"]},
            "usage": {"type": "object"},
            "latency_s": {"type": "number"},
        },
        "required": ["text", "sources"],
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "multimodal-rag", "version": __version__},
        "paths": {
            "/v1/search": {
                "post": {
                    "summary": "Find the knowledge-base images that best match an image, a text, or both.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        **_SEARCH_FIELDS,
                                        "fusion": {"type": "string", "enum": ["rrf", "weighted"]},
                                        "text_weight": {"type": "number"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "The hits, best first.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "generation": {"type": "integer"},
                                            "count": {"type": "integer"},
                                            "hits": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}},
                                        },
                                    }
                                }
                            },
                        },
                        **_ERRORS,
                    },
                }
            },
            "/v1/ask": {
                "post": {
                    "summary": "Answer a question about an image from the descriptions of its best matches.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        **_SEARCH_FIELDS,
                                        "question": {"type": "string"},
                                        "stream": {
                                            "type": "boolean",
                                            "description": "Answer as server-sent events: matches, chunk..., answer (or error), done.",
                                        },
                                    },
                                    "required": ["question"],
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "The matches and the answer (JSON), or their events.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "generation": {"type": "integer"},
                                            "matches": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}},
                                            "answer": {"$ref": "#/components/schemas/Answer"},
                                        },
                                    }
                                },
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        **_ERRORS,
                        "502": _error("The answering model failed."),
                        "504": _error("The answering model did not answer in time."),
                    },
                }
            },
            "/v1/images/{id}": {
                "get": {
                    "summary": "A JPEG thumbnail of a knowledge-base image.",
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                        {
                            "name": "size",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 16, "maximum": settings.max_thumbnail_size},
                            "description": f"Long side in pixels (default {settings.thumbnail_size}).",
                        },
                    ],
                    "responses": {
                        "200": {"description": "The thumbnail.", "content": {"image/jpeg": {}}},
                        "400": _ERRORS["400"],
                        "401": _ERRORS["401"],
                        "404": _error("No image with that id, or its file is gone."),
                    },
                }
            },
            "/v1/info": {
                "get": {
                    "summary": "What the knowledge base is made of, and the server's limits.",
                    "responses": {"200": {"description": "Counts, components, limits."}, "401": _ERRORS["401"]},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness: the generation served and how many images it holds.",
                    "security": [],
                    "responses": {"200": {"description": "Serving."}, "503": {"description": "Still opening."}},
                }
            },
        },
        "components": {
            "schemas": {
                "Hit": hit,
                "Answer": answer,
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "type": {"type": "string"},
                                "message": {"type": "string"},
                                "status": {"type": "integer"},
                            },
                        }
                    },
                },
            }
        },
    }
    if settings.token is not None:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    return document
