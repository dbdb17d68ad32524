"""An S3 object read as a seekable file, a few megabytes at a time, so decoding a 1 GB file never holds it whole.

Every read is a ranged GET of the version that was checked and priced (``IfMatch`` and ``VersionId`` on each one),
so an object rewritten while it is being decoded fails the next read, not the transcript. PyAV reads through this
object (its own reads are small, 32 KiB); one block of at most ``buffer_bytes`` is kept, and a read outside it
fetches the block starting where the read starts. A seek's bisection (Ogg) jumps a dozen times and reads a page at
each place, so a block after a jump is small and each one read on from it twice the one before. The object's first
64 KiB at most (the header every open of it reads again, and probing reads past) are kept beside that block.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

DEFAULT_BUFFER_BYTES = 4 * 1024 * 1024
# The first block after a jump: measured on a 10-hour Opus file, one part edge's seek and decode asked 16.8 MB of S3
# in 4 MiB blocks, 1.1 MB with this.
FIRST_BLOCK_BYTES = 64 * 1024


class S3ReadFailed(Exception):
    """S3 refused or failed a read: ``cause`` is botocore's ClientError or BotoCoreError, mapped by the server."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class RangedObject(io.RawIOBase):
    """The pinned version of ``s3://bucket/key`` as a read-only, seekable file; ``requested`` counts the bytes asked
    of S3."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        *,
        etag: str | None = None,
        version_id: str | None = None,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    ) -> None:
        super().__init__()
        self._client = client
        self._where = {"Bucket": bucket, "Key": key}
        # only the version that was checked and priced: an upload slot written again is refused, not transcribed
        # an entity tag is quoted (RFC 9110); S3's GET takes one without, moto's HEAD does not
        quoted = etag if etag is None or etag.startswith('"') else f'"{etag}"'
        self._pinned = {**({"IfMatch": quoted} if quoted else {}), **({"VersionId": version_id} if version_id else {})}
        self._buffer_bytes = max(1, buffer_bytes)
        self._head_bytes = min(self._buffer_bytes, FIRST_BLOCK_BYTES)
        self._head = b""
        self._block = b""
        self._block_start = 0
        self._position = 0
        self.requested = 0
        self.size = int(self._call(lambda: client.head_object(**self._where, **self._pinned))["ContentLength"])

    @property
    def held_bytes(self) -> int:
        """The bytes of the object in memory: one block and the object's head (at most twice the buffer)."""
        return len(self._head) + len(self._block)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._position >= self.size or not len(view):
            return 0
        if self._position < self._head_bytes:
            if not self._head:
                self._head = self._get(0, min(self.size, self._head_bytes) - 1)
            if self._position < len(self._head):
                taken = min(len(view), len(self._head) - self._position)
                view[:taken] = self._head[self._position : self._position + taken]
                self._position += taken
                return taken
        inside = self._position - self._block_start
        if not 0 <= inside < len(self._block):
            self._fetch(self._position)
            inside = 0
        taken = min(len(view), len(self._block) - inside)
        view[:taken] = self._block[inside : inside + taken]
        self._position += taken
        return taken

    def _fetch(self, start: int) -> None:
        sequential = bool(self._block) and start == self._block_start + len(self._block)
        wanted = min(self._buffer_bytes, 2 * len(self._block) if sequential else FIRST_BLOCK_BYTES)
        end = min(self.size, start + wanted) - 1
        self._block = b""  # the old block is let go before the new one arrives: one block held, not two
        self._block = self._get(start, end)
        self._block_start = start

    def _get(self, start: int, end: int) -> bytes:
        response = self._call(
            lambda: self._client.get_object(**self._where, **self._pinned, Range=f"bytes={start}-{end}")
        )
        self.requested += end - start + 1
        try:
            return bytes(response["Body"].read())
        except Exception as exc:  # botocore's read errors (a connection reset mid-body) are storage failures
            raise S3ReadFailed(exc) from exc

    @staticmethod
    def _call(request: Callable[[], Any]) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return request()
        except (ClientError, BotoCoreError) as exc:
            raise S3ReadFailed(exc) from exc
