"""A child process for the sync kill test: ``python sync_worker.py KB FOLDER``.

Syncs the knowledge base KB with FOLDER in small batches, printing ``ready`` once the
knowledge base is open and ``done`` when the sync returns, so the parent can kill it midway.
"""

from __future__ import annotations

import sys

from helpers import ColorEmbedder
from multimodal_rag import MultimodalRAG


def main() -> None:
    with MultimodalRAG.open(sys.argv[1], embedder=ColorEmbedder()) as rag:
        print("ready", flush=True)
        result = rag.sync(sys.argv[2], batch_size=8, progress=False)
        print(f"done {len(result.new)} {len(result.changed)} {len(result.removed)}", flush=True)


if __name__ == "__main__":
    main()
