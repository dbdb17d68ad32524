"""The model server's memory: a few long decodes at once, and what a decode freed handed back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from audio_input import DecodingCancelled


class DecodeGate:
    """At most ``slots`` long decodes at once. Decoding hours of audio holds a core for seconds and its samples'
    memory for the whole request: unbounded, a burst of long files (paid for or not) takes the server's memory."""

    def __init__(self, slots: int, long_seconds: float) -> None:
        self.long_seconds = long_seconds
        self._slots = threading.BoundedSemaphore(max(1, slots))

    @contextmanager
    def admit(self, max_seconds: float, cancelled: Callable[[], bool], poll_seconds: float = 0.25) -> Iterator[None]:
        if max_seconds <= self.long_seconds:
            yield
            return
        while not self._slots.acquire(timeout=poll_seconds):
            if cancelled():
                raise DecodingCancelled("the caller stopped waiting for a decoding slot")
        try:
            yield
        finally:
            self._slots.release()


@lru_cache(maxsize=1)
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


# glibc's mallopt parameter, and the size from which an allocation gets pages of its own
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 64 * 1024


def keep_large_buffers_out_of_the_heap() -> None:
    """Allocations of 64 KiB and more (decoded blocks, frames, windows' features) get pages of their own, given back
    to the system when freed. glibc's default raises this threshold to the largest block freed so far (up to 32 MB),
    after which a long file's buffers land in the heap among small objects and pin its pages: measured with
    benchmarks.model_memory, resident memory after two bursts of long media 1.45x what it was before, 1.01x with
    this."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's malloc_trim). A decode frees thousands of small
    frames and a few large arrays; glibc keeps freed heap pages for reuse, so without this a burst of long
    files leaves the server's resident memory at its peak long after they ended."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
