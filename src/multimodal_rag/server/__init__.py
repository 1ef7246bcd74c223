"""Serving a knowledge base over HTTP (``multimodal-rag serve``; the ``server`` extra).

Modules: `app` holds the Starlette application and its
settings; `reloading` the read-only knowledge base that follows
another process's saves; `errors` the mapping of the library's
exceptions to HTTP statuses; `openapi` the schema; ``page.html``
the web page served at ``/``.

Nothing here is imported by ``import multimodal_rag``: Starlette loads only when serving.
"""
