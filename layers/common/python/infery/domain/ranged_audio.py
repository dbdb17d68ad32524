"""A stored file too large to hold, as the probes read it: a read-only view that knows the file's true size and holds
only some of its ranges (its head and its tail), reading any other range on demand within a small budget.

A container says what it is and how long it plays at its ends: the sniffed magic, a WAV's fmt chunk, FLAC's
STREAMINFO, a WebM's Info, an MP4's moov written first sit in the head; an Ogg stream's last granule, an MP4's moov
written last, an ID3v1 or APE tag in the tail; a Xing-less MP3's length is estimated from the size. A probe that
reaches elsewhere (an MP4 cut into many fragments) is read by ranges until the budget is spent, then refused with
``AbsentRange`` (a ``ValueError``, which the probes take as "does not say"), never answered with made-up bytes.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Callable
from typing import Any, overload

from pydantic_core import CoreSchema, core_schema

# what a read of a range outside the view fetches at least: a probe reads a few bytes at a time
_BLOCK_BYTES = 64 * 1024


class AbsentRange(ValueError):
    """A read of bytes the view does not hold, and may not fetch."""


class RangedAudio:
    """``size`` bytes of which ``pieces`` ((offset, bytes), not overlapping) are here. ``read_range(start, stop)``
    fetches bytes [start, stop) of the very same file (the version that was sized), at most ``max_extra_bytes`` of
    them in all; without it, a read outside the pieces raises ``AbsentRange``."""

    def __init__(
        self,
        size: int,
        pieces: list[tuple[int, bytes]],
        *,
        read_range: Callable[[int, int], bytes] | None = None,
        max_extra_bytes: int = 0,
    ) -> None:
        self.size = size
        self._pieces: list[tuple[int, bytes]] = sorted((offset, data) for offset, data in pieces if data)
        for (offset, data), (next_offset, _) in zip(self._pieces, self._pieces[1:], strict=False):
            if offset + len(data) > next_offset:
                raise ValueError("the pieces of a ranged view overlap")
        if self._pieces and self._pieces[-1][0] + len(self._pieces[-1][1]) > size:
            raise ValueError("a piece of a ranged view ends past the file")
        self._read_range = read_range
        self._extra_left = max_extra_bytes
        self.extra_bytes_read = 0

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> CoreSchema:
        # a request's audio (LoadedAudio, inside pydantic models) may be a view: taken as it is, never validated
        return core_schema.is_instance_schema(cls)

    @property
    def bytes_held(self) -> int:
        return sum(len(data) for _, data in self._pieces)

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> bytes: ...

    def __getitem__(self, index: int | slice) -> int | bytes:
        if isinstance(index, slice):
            start, stop, step = index.indices(self.size)
            if step != 1:
                raise ValueError("a ranged view is read in steps of one byte")
            return self.read(start, stop)
        position = index + self.size if index < 0 else index
        if not 0 <= position < self.size:
            raise IndexError("index out of the file")
        return self.read(position, position + 1)[0]

    def read(self, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of the file, clipped to its size."""
        start, stop = max(0, start), min(stop, self.size)
        parts: list[bytes] = []
        position = start
        while position < stop:
            index = bisect.bisect_right(self._pieces, position, key=lambda piece: piece[0]) - 1
            if index >= 0:
                offset, data = self._pieces[index]
                if position < offset + len(data):
                    parts.append(data[position - offset : stop - offset])
                    position += len(parts[-1])
                    continue
            following = self._pieces[index + 1][0] if index + 1 < len(self._pieces) else self.size
            self._fetch(position, min(following, max(stop, position + _BLOCK_BYTES)))
        return b"".join(parts)

    def _fetch(self, start: int, stop: int) -> None:
        """Hold bytes [start, stop) from now on, read by range within the budget."""
        if self._read_range is None or stop - start > self._extra_left:
            raise AbsentRange(f"bytes {start:,} to {stop:,} of the file are not held")
        data = self._read_range(start, stop)
        if len(data) != stop - start:
            raise AbsentRange(f"bytes {start:,} to {stop:,} of the file could not be read")
        self._extra_left -= len(data)
        self.extra_bytes_read += len(data)
        bisect.insort(self._pieces, (start, data), key=lambda piece: piece[0])

    def open(self) -> io.RawIOBase:
        """A read-only, seekable file object over the view (what mutagen reads). Unbuffered: a buffer would read
        past what a probe asks for, into ranges it never needs."""
        return _ViewReader(self)


class _ViewReader(io.RawIOBase):
    def __init__(self, view: RangedAudio) -> None:
        self._view = view
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._view.size}[whence]
        if base + offset < 0:
            raise OSError("seek before the start of the file")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._view.read(self._position, self._position + len(buffer))
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


AudioBytes = bytes | RangedAudio


def open_audio(audio: AudioBytes) -> io.IOBase:
    """A seekable file object over audio held whole or as a ranged view."""
    return audio.open() if isinstance(audio, RangedAudio) else io.BytesIO(audio)
