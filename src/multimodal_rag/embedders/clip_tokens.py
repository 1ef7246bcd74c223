"""CLIP's tokens without importing torch: openai/CLIP's own BPE tokenizer, loaded on its own.

``clip.tokenize`` returns a torch tensor, and ``import clip`` imports torch (with a CUDA
build, about 500 MB resident and a second or two). The tokenizer itself
(``clip/simple_tokenizer.py`` and its vocabulary file) needs only ``ftfy`` and ``regex``,
so it is loaded from the installed package as a module of its own, and the rows are built
exactly as ``clip.tokenize(texts, context_length, truncate=True)`` builds them. An
embedder on the OpenVINO engine then runs text queries with no torch in the process.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from multimodal_rag._extras import check_installed

__all__ = ["clip_tokens"]


@functools.cache
def _tokenizer() -> Any:
    check_installed("clip", user="CLIPEmbedder", package="clip-anytorch")
    package = importlib.util.find_spec("clip")
    assert package is not None and package.submodule_search_locations is not None
    path = Path(next(iter(package.submodule_search_locations))) / "simple_tokenizer.py"
    spec = importlib.util.spec_from_file_location("multimodal_rag._clip_simple_tokenizer", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer()


def clip_tokens(texts: Sequence[str], context_length: int) -> np.ndarray:
    """``clip.tokenize(texts, context_length, truncate=True)`` as an int64 numpy array."""
    tokenizer = _tokenizer()
    start = tokenizer.encoder["<|startoftext|>"]
    end = tokenizer.encoder["<|endoftext|>"]
    rows = np.zeros((len(texts), context_length), dtype=np.int64)
    for i, text in enumerate(texts):
        tokens = [start, *tokenizer.encode(text), end]
        if len(tokens) > context_length:
            # Truncated, the last position keeps the end token (the text tower reads it).
            tokens = [*tokens[: context_length - 1], end]
        rows[i, : len(tokens)] = tokens
    return rows
