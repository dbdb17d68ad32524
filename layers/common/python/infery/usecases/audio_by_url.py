"""Audio sent by URL: fetched (the port's adapter keeps to the address rules), recognised as audio, stored in the
bucket as an upload is, and read back from there: the stored version is what is checked, priced, transcribed and
billed, as for an upload. A sync call fetches in the API function, a job in the worker when it runs."""

from __future__ import annotations

from dataclasses import dataclass

from infery.domain import audio_url
from infery.domain.audio import sniff_audio_format
from infery.domain.errors import InferyError, NotFound
from infery.domain.stored_audio import StoredObject
from infery.domain.transcription import LoadedAudio
from infery.usecases.ports import AudioFetcher, AudioObjects


@dataclass(frozen=True)
class AudioByUrl:
    fetcher: AudioFetcher
    store: AudioObjects

    def fetch(self, key_id: str, url: str, *, upload_id: str, max_bytes: int) -> LoadedAudio:
        """Fetch ``url`` into the key's upload ``upload_id`` and load it from there. Nothing is stored for a fetch
        that fails or brings something other than audio."""
        data = self.fetcher.fetch(url, max_bytes=max_bytes)
        try:
            sniff_audio_format(data)  # as any upload is recognised: from its bytes, never from a name or a header
        except InferyError as refused:
            raise audio_url.not_audio(refused.message) from None
        stored = self.store.put_upload(key_id, upload_id, data)
        return LoadedAudio.stored(*self.store.load(stored))

    def fetch_once(self, stored: StoredObject, url: str, *, max_bytes: int) -> LoadedAudio:
        """A job's audio: what an earlier attempt fetched into ``stored`` (an upload slot, read at its first
        version), or fetched now."""
        try:
            return LoadedAudio.stored(*self.store.load(stored))
        except NotFound:
            return self.fetch(stored.key_id, url, upload_id=stored.name, max_bytes=max_bytes)
