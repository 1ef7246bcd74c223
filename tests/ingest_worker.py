"""A child process for the kill test: ingests a folder of images batch by batch, saving now and then.

Run as ``python ingest_worker.py KB IMAGES BATCH SAVE_EVERY``. It prints ``committed N`` after
batch N is committed, and ``saving`` / ``saved`` around each save, so the parent knows
what it may expect to survive a SIGKILL.
"""

from __future__ import annotations

import sys
from pathlib import Path

from helpers import ColorEmbedder
from multimodal_rag import MultimodalRAG


def main() -> None:
    kb, images, batch, save_every = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    files = sorted(images.glob("*.png"))
    rag = MultimodalRAG.create(kb, embedder=ColorEmbedder(), exist_ok=True)
    print("ready", flush=True)
    for number, start in enumerate(range(0, len(files), batch)):
        chunk = files[start : start + batch]
        # ids default to content hashes, so a re-run skips what an earlier run committed
        rag.add(chunk, descriptions=[f"image {f.stem}" for f in chunk], on_error="skip",
                batch_size=batch, progress=False)
        print(f"committed {number}", flush=True)
        if (number + 1) % save_every == 0:
            print("saving", flush=True)
            rag.save()
            print("saved", flush=True)
    rag.save()
    rag.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
