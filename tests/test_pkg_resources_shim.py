"""CLIP loads where setuptools no longer ships pkg_resources (setuptools 81 and later)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from doc_examples import REPO

# A finder first in line that answers for pkg_resources as if setuptools had none.
_WITHOUT_PKG_RESOURCES = """
import sys

class NoPkgResources:
    def find_spec(self, name, path=None, target=None):
        if name == "pkg_resources" or name.startswith("pkg_resources."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoPkgResources())
"""


def run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_PKG_RESOURCES + textwrap.dedent(code)],
        cwd=cwd,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_clip_embedder_loads_without_pkg_resources(tmp_path: Path) -> None:
    result = run(
        """
        import importlib, sys
        try:
            importlib.import_module("pkg_resources")
        except ImportError:
            pass
        else:
            raise SystemExit("the simulation failed: pkg_resources imported")
        from multimodal_rag import CLIPEmbedder
        from multimodal_rag._random_checkpoint import make_random_clip_checkpoint

        path = make_random_clip_checkpoint("tiny.pt", image_resolution=32, patch_size=16, layers=1)
        embedder = CLIPEmbedder(checkpoint=path, device="cpu", precision="fp32")
        print(embedder.embed_texts(["a frog"]).shape)
        # The stand-in served clip's import and is gone: nothing else mistakes it for the real one.
        print("pkg_resources" in sys.modules)
        import clip.clip
        print(clip.clip.packaging.version.parse("2.6") > clip.clip.packaging.version.parse("2.10"))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["(1, 64)", "False", "False"]


def test_the_real_pkg_resources_is_left_alone_and_the_stand_in_leaves() -> None:
    from multimodal_rag._pkg_resources import pkg_resources_for_clip

    before = sys.modules.get("pkg_resources")
    with pkg_resources_for_clip():
        from pkg_resources import packaging  # what clip does: the real module or the stand-in

        assert packaging.version.parse("2.10") > packaging.version.parse("2.6")
    after = sys.modules.get("pkg_resources")
    # The real module, when there is one, stays as it was imported; a stand-in never stays.
    assert after is before or getattr(after, "__file__", None) is not None
