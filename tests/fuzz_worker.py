"""Opens knowledge bases named on standard input, one per line, and says how each went.

Used by ``test_loader_fuzz.py``, which runs it in a subprocess so that a crash
(a signal) or a hang is seen and pinned on the knowledge base that caused it.
For each line ``N PATH`` it prints ``BEGIN N`` before it starts and then one of
``OK N``, ``LIBRARY N <error type>`` or ``OTHER N <error type>: <message>``.
"""

from __future__ import annotations

import sys

import numpy as np

from helpers import ColorEmbedder
from multimodal_rag import MultimodalRAG
from multimodal_rag.errors import MultimodalRAGError


def exercise(path: str) -> None:
    embedder = ColorEmbedder()
    for read_only, salvage in ((True, False), (True, True)):
        try:
            rag = MultimodalRAG.open(path, embedder=embedder, read_only=read_only, salvage=salvage)
        except MultimodalRAGError:
            if salvage:
                raise
            continue
        query = np.ones(embedder.dim, dtype=np.float32) / np.sqrt(embedder.dim)
        for hit in rag.search_by_vector(query, k=5):
            assert hit.id in rag
        rag.verify()
        return


def main() -> None:
    for line in sys.stdin:
        number, path = line.rstrip("\n").split(" ", 1)
        print(f"BEGIN {number}", flush=True)
        try:
            exercise(path)
        except MultimodalRAGError as exc:
            print(f"LIBRARY {number} {type(exc).__name__}", flush=True)
        except Exception as exc:  # what the fuzz test is looking for
            message = str(exc).replace("\n", " ")[:300]
            print(f"OTHER {number} {type(exc).__name__}: {message}", flush=True)
        else:
            print(f"OK {number}", flush=True)


if __name__ == "__main__":
    main()
