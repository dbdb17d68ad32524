"""Audio sent by URL: fetched (the port's adapter keeps to the address rules), recognised as audio, stored in the
bucket as an upload is, and read back from there: the stored version is what is checked, priced, transcribed and
billed, as for an upload. A sync call fetches in the API function (its bytes held: at most a sync call's size), a
job in the worker when it runs, streamed into the bucket as it arrives: a job's file is never held whole."""

from __future__ import annotations

from dataclasses import dataclass

from infery.domain import audio_url
from infery.domain.audio import sniff_audio_format
from infery.domain.errors import InferyError, NotFound
from infery.domain.stored_audio import StoredObject
from infery.domain.transcription import LoadedAudio
from infery.usecases.ports import AudioFetcher, AudioObjects, UploadSink

# what a streamed fetch holds back to recognise the file before any of it is stored; an MP3's leading ID3 tag is
# held to its end when that ends within this much more
SNIFF_BYTES = 64 * 1024
SNIFF_ID3_BYTES = 8 * 1024 * 1024


class _StoreFailed(Exception):
    """Storing a chunk failed: carried out of the fetch as it is, never taken for a failure of the URL's server."""

    def __init__(self, failure: Exception) -> None:
        super().__init__(str(failure))
        self.failure = failure


class _SniffedStream:
    """Hands a fetched body to ``sink``, once its first bytes were recognised as audio (none stored before)."""

    def __init__(self, sink: UploadSink) -> None:
        self._sink = sink
        self._head: bytearray | None = bytearray()

    def write(self, chunk: bytes) -> None:
        if self._head is not None:
            self._head += chunk
            if len(self._head) < self._needed():
                return
            self._recognise()
            chunk, self._head = bytes(self._head), None
        self._store(chunk)

    def finish(self) -> None:
        """The body ended: recognise what is still held (a body shorter than the sniffed window)."""
        if self._head is not None:
            self._recognise()
            head, self._head = bytes(self._head), None
            self._store(head)

    def _store(self, chunk: bytes) -> None:
        try:
            self._sink.write(chunk)
        except Exception as failure:
            raise _StoreFailed(failure) from failure

    def _needed(self) -> int:
        """How much to hold: the sniffed window, or a leading ID3 tag's end (up to a bound) and what follows."""
        assert self._head is not None
        head = self._head
        if len(head) < 10 or head[:3] != b"ID3":
            return SNIFF_BYTES
        size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
        return max(SNIFF_BYTES, min(10 + size + 10 + 16, SNIFF_ID3_BYTES))

    def _recognise(self) -> None:
        assert self._head is not None
        try:
            sniff_audio_format(bytes(self._head))
        except InferyError as refused:
            if self._head[:3] == b"ID3" and len(self._head) >= SNIFF_ID3_BYTES:
                return  # a tag too large to hold: the stored file is recognised when it is read back
            raise audio_url.not_audio(refused.message) from None


@dataclass(frozen=True)
class AudioByUrl:
    fetcher: AudioFetcher
    store: AudioObjects

    def fetch(self, key_id: str, url: str, *, upload_id: str, max_bytes: int) -> LoadedAudio:
        """Fetch ``url`` into the key's upload ``upload_id`` and load it from there (a synchronous call: its bytes
        held). Nothing is stored for a fetch that fails or brings something other than audio."""
        data = self.fetcher.fetch(url, max_bytes=max_bytes)
        try:
            sniff_audio_format(data)  # as any upload is recognised: from its bytes, never from a name or a header
        except InferyError as refused:
            raise audio_url.not_audio(refused.message) from None
        stored = self.store.put_upload(key_id, upload_id, data)
        return LoadedAudio.stored(*self.store.load(stored))

    def fetch_once(self, stored: StoredObject, url: str, *, max_bytes: int) -> LoadedAudio:
        """A job's audio: what an earlier attempt fetched into ``stored`` (an upload slot, read at its first
        version), or fetched now, streamed into it. Read back as a job's file is (its head and tail when large)."""
        try:
            return LoadedAudio.stored(*self.store.load_job_audio(stored))
        except NotFound:
            pass
        self.stream(stored, url, max_bytes=max_bytes)
        return LoadedAudio.stored(*self.store.load_job_audio(stored))

    def stream(self, stored: StoredObject, url: str, *, max_bytes: int) -> int:
        """Fetch ``url`` into the upload slot ``stored`` as its bytes arrive, at most ``max_bytes`` of them; its
        size. Its first bytes are recognised as audio before any is stored, and a fetch that fails (too large,
        too slow, cut short, not audio) or a store that fails leaves nothing in the bucket."""
        sink = self.store.stream_upload(stored.key_id, stored.name)
        stream = _SniffedStream(sink)
        try:
            size = self.fetcher.fetch_into(url, stream.write, max_bytes=max_bytes)
            stream.finish()
            sink.commit()
        except _StoreFailed as failed:
            sink.abort()
            raise failed.failure from None
        except BaseException:
            sink.abort()
            raise
        return size
