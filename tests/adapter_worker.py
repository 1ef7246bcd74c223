"""A child process for the adapter kill test: fits an adapter (or removes one) and is killed
at a chosen point of the save that applies it.

Run as ``python adapter_worker.py KB fit|remove WHERE``. WHERE is ``before-manifest`` (the new
snapshot is written, the manifest not yet swapped), ``after-manifest`` (swapped, the journal
not yet reset) or ``never`` (the process exits normally).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from adapter_helpers import DistortedEmbedder
from multimodal_rag import MultimodalRAG
from multimodal_rag._kb import manifest as manifest_module


def main() -> None:
    kb, action, where = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    rag = MultimodalRAG.open(kb, embedder=DistortedEmbedder())
    write = manifest_module.Manifest.write

    def killing_write(self: manifest_module.Manifest, directory: Path) -> None:
        # Only the save that switches the adapter: the fit first saves pending changes.
        switching = (self.adapter is not None) == (action == "fit")
        if switching and where == "before-manifest":
            os.kill(os.getpid(), signal.SIGKILL)
        write(self, directory)
        if switching and where == "after-manifest":
            os.kill(os.getpid(), signal.SIGKILL)

    manifest_module.Manifest.write = killing_write  # type: ignore[method-assign]
    if action == "fit":
        report = rag.fit_adapter(kind="linear", progress=False)
        print("kept" if report.kept else "not kept", flush=True)
    else:
        rag.remove_adapter()
    rag.close()


if __name__ == "__main__":
    main()
