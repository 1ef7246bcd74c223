"""Handing freed memory back to the operating system between the phases of long work.

Engine preparation holds a torch model, then converted and compiled models, one after another.
What Python and the native libraries free goes back to the C allocator, which keeps most of it
in its heaps: the process's resident memory stays at the sum of the phases rather than the
largest. ``malloc_trim`` returns the free pages of glibc's heaps; elsewhere this only collects.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import sys
from collections.abc import Callable

__all__ = ["release_memory"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
        return trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def release_memory() -> None:
    """Collect Python's garbage and give the allocator's free pages back to the system."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
