"""Serving a knowledge base over HTTP (``multimodal-rag serve``; the ``server`` extra).

Modules: `app` holds the FastAPI application and its settings; `models` the request fields
and answers as pydantic models, from which `openapi` finishes the generated schema;
`reloading` the read-only knowledge base that follows another process's saves; `errors` the
mapping of the library's exceptions to HTTP statuses; `connections` and `refusals` the
connection cap, the header deadline and the counted refusals; ``page.html`` the web page
served at ``/``, in the languages of `languages` (its labels in ``labels/``, one table per
language).

Nothing here is imported by ``import multimodal_rag``: FastAPI, pydantic and Starlette load
only when serving.
"""
