"""Serving a knowledge base over HTTP (``multimodal-rag serve``; the ``server`` extra).

Modules: :mod:`~multimodal_rag.server.app` holds the Starlette application and its
settings; :mod:`~multimodal_rag.server.reloading` the read-only knowledge base that follows
another process's saves; :mod:`~multimodal_rag.server.errors` the mapping of the library's
exceptions to HTTP statuses; :mod:`~multimodal_rag.server.openapi` the schema; ``page.html``
the web page served at ``/``.

Nothing here is imported by ``import multimodal_rag``: Starlette loads only when serving.
"""
