"""A job's limits against a synchronous call's, over fakes: a file may last up to MaxJobAudioSeconds (a job's
limit), a synchronous call no longer than its own ceiling, each refused before any credit is reserved; and a job's
URL streamed into the bucket is recognised before anything is stored, and a failure leaves nothing behind."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from infery.domain import audio_url
from infery.domain.errors import InferyError, InvalidRequest
from infery.domain.pricing import Pricing
from infery.domain.ranged_audio import RangedAudio
from infery.domain.stored_audio import StoredObject
from infery.domain.transcription import LoadedAudio
from infery.usecases.audio_by_url import SNIFF_BYTES, SNIFF_ID3_BYTES, AudioByUrl
from infery.usecases.charging import ModelCatalog, TranscriptionTerms, reserve

from tests.support.builders import ebml_header, id3_tag
from tests.support.fakes import FakeAudio, FakeCredits
from tests.support.job_world import KEY
from tests.support.speech import silent_wav

HOUR = 3600.0


def terms(*, max_job_audio_seconds: float | None = 10 * HOUR) -> TranscriptionTerms:
    return TranscriptionTerms(
        catalog=ModelCatalog("whisper-1", {}),
        pricing=Pricing(seconds_per_credit=5.0, min_credits_per_request=1),
        max_audio_seconds=4 * HOUR,
        max_sync_audio_seconds=300.0,
        min_audio_sample_rate=8_000,
        max_job_audio_seconds=max_job_audio_seconds,
    )


def stored_wav(seconds: float, sample_rate: int = 8_000) -> LoadedAudio:
    """A stored job file of ``seconds`` of 8-bit mono, as the worker reads it: its head, and its true size."""
    data_bytes = int(seconds * sample_rate)
    header = (
        b"RIFF"
        + (36 + data_bytes).to_bytes(4, "little")
        + b"WAVEfmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")
        + (1).to_bytes(2, "little")
        + sample_rate.to_bytes(4, "little")
        + sample_rate.to_bytes(4, "little")
        + (1).to_bytes(2, "little")
        + (8).to_bytes(2, "little")
        + b"data"
        + data_bytes.to_bytes(4, "little")
    )
    head = header + bytes(64 * 1024)
    return LoadedAudio.stored(RangedAudio(len(header) + data_bytes, [(0, head)]), "s3://bucket/uploads/k/u")


# --- seconds ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hours", [4.5, 10.0])
def test_a_job_may_last_past_one_invocations_limit_up_to_max_job_audio_seconds(hours):
    audio = stored_wav(hours * HOUR)
    assert terms().check_audio_limits(audio) == pytest.approx(hours * HOUR, abs=1)


def test_a_job_one_second_past_max_job_audio_seconds_is_audio_too_long_before_any_reservation():
    books = FakeCredits(balances={KEY.key_hash: KEY.credits})
    with pytest.raises(InvalidRequest) as refused:
        reserve(books, terms(), KEY, "whisper-1", stored_wav(10 * HOUR + 1), request_id="job_1-1")
    assert refused.value.code == "audio_too_long" and "600 minutes" in refused.value.message
    assert books.open == {} and books.entries == []


def test_a_sync_call_of_five_hours_is_sent_to_jobs_not_told_the_file_is_too_long():
    with pytest.raises(InvalidRequest) as refused:
        terms().check_audio_limits(stored_wav(5 * HOUR), max_seconds=300.0)
    assert refused.value.code == "audio_too_long_for_sync" and "/v1/audio/transcriptions/jobs" in refused.value.message


def test_without_a_job_limit_a_file_is_limited_to_one_invocation_as_before():
    with pytest.raises(InvalidRequest) as refused:
        terms(max_job_audio_seconds=None).check_audio_limits(stored_wav(4 * HOUR + 60))
    assert refused.value.code == "audio_too_long"


def test_a_jobs_reservation_of_a_1_gb_file_whose_header_says_nothing_is_capped_at_a_jobs_limit():
    books = FakeCredits(balances={KEY.key_hash: 10**6})
    # a WebM with no duration before its media (a live recording): what 1 GB could hold is far past ten hours
    head = ebml_header(b"webm") + bytes(64 * 1024)
    audio = LoadedAudio.stored(RangedAudio(10**9, [(0, head)]), "s3://bucket/uploads/k/u")
    reservation = reserve(
        books, terms(), KEY.model_copy(update={"credits": 10**6}), "whisper-1", audio, request_id="job_2-1"
    )
    assert reservation.covered_seconds == 10 * HOUR


# --- a job's URL, streamed ---------------------------------------------------------------------------------------

CHUNK = 64 * 1024


@dataclass
class ChunkedFetcher:
    """The AudioFetcher port handing ``body`` over in chunks, then raising ``then`` (a fetch cut short) if given."""

    body: bytes
    then: InferyError | None = None
    chunks_handed: int = 0
    calls: list[str] = field(default_factory=list)

    def fetch(self, url: str, *, max_bytes: int) -> bytes:
        raise AssertionError("a job's fetch is streamed, never held")

    def fetch_into(self, url: str, write: Callable[[bytes], object], *, max_bytes: int) -> int:
        self.calls.append(url)
        for start in range(0, len(self.body), CHUNK):
            write(self.body[start : start + CHUNK])
            self.chunks_handed += 1
        if self.then is not None:
            raise self.then
        return len(self.body)


def slot(audio: FakeAudio) -> StoredObject:
    return StoredObject(audio.bucket, audio.upload_key(KEY.key_id, "upl_1"), KEY.key_id, "uploads", "upl_1", 0)


def test_a_streamed_fetch_is_stored_whole_and_read_back():
    body = silent_wav(16_000, 5)
    audio = FakeAudio()
    loaded = AudioByUrl(ChunkedFetcher(body), audio).fetch_once(slot(audio), "https://a.example/x.wav", max_bytes=10**9)
    assert audio.objects[slot(audio).key] == body and loaded.size == len(body)
    assert [stream.committed for stream in audio.streams] == [True]


def test_what_is_not_audio_is_refused_from_its_first_bytes_before_any_is_stored_and_the_rest_is_not_read():
    fetcher = ChunkedFetcher(b"<html>" + bytes(10 * SNIFF_BYTES))
    audio = FakeAudio()
    with pytest.raises(InvalidRequest) as refused:
        AudioByUrl(fetcher, audio).stream(slot(audio), "https://a.example/page", max_bytes=10**9)
    assert refused.value.code == "url_not_audio"
    assert fetcher.chunks_handed == 0  # refused within the first sniffed window, in the middle of the fetch
    assert audio.objects == {} and audio.streams[0].written == b"" and audio.streams[0].aborted


def test_an_empty_body_is_not_audio_and_stores_nothing():
    audio = FakeAudio()
    with pytest.raises(InvalidRequest) as refused:
        AudioByUrl(ChunkedFetcher(b""), audio).stream(slot(audio), "https://a.example/empty", max_bytes=10)
    assert refused.value.code == "url_not_audio"
    assert audio.objects == {} and audio.streams[0].aborted


@pytest.mark.parametrize(
    "failure",
    [audio_url.too_large(10**6), audio_url.too_slow(240.0), audio_url.unreachable("its connection was reset")],
    ids=["too-large", "too-slow", "cut-short"],
)
def test_a_fetch_that_fails_after_storing_some_parts_aborts_them(failure):
    audio = FakeAudio()
    fetcher = ChunkedFetcher(silent_wav(16_000, 20), then=failure)
    with pytest.raises(InferyError) as refused:
        AudioByUrl(fetcher, audio).stream(slot(audio), "https://a.example/x.wav", max_bytes=10**9)
    assert refused.value.code == failure.code
    assert audio.streams[0].written == b"" and audio.streams[0].aborted and not audio.streams[0].committed
    assert audio.objects == {}


def test_a_store_that_fails_mid_stream_is_raised_as_itself_not_as_the_urls_fault_and_aborts():
    audio = FakeAudio(fail_stream_after=3 * CHUNK)
    with pytest.raises(OSError, match="S3 refused the part"):
        AudioByUrl(ChunkedFetcher(silent_wav(16_000, 20)), audio).stream(
            slot(audio), "https://a.example/x.wav", max_bytes=10**9
        )
    assert audio.streams[0].aborted and audio.objects == {}


def test_an_mp3_behind_an_id3_tag_longer_than_the_sniffed_window_is_held_to_the_tags_end_and_taken():
    mp3 = id3_tag(3 * SNIFF_BYTES) + bytes.fromhex("fffb9064") + bytes(4000)
    audio = FakeAudio()
    AudioByUrl(ChunkedFetcher(mp3), audio).stream(slot(audio), "https://a.example/x.mp3", max_bytes=10**9)
    assert audio.objects[slot(audio).key] == mp3


def test_an_id3_tag_larger_than_what_is_held_to_recognise_it_is_stored_and_recognised_when_read_back():
    mp3 = id3_tag(SNIFF_ID3_BYTES) + bytes.fromhex("fffb9064") + bytes(4000)
    audio = FakeAudio()
    AudioByUrl(ChunkedFetcher(mp3), audio).stream(slot(audio), "https://a.example/x.mp3", max_bytes=10**9)
    assert audio.objects[slot(audio).key] == mp3
    assert LoadedAudio.stored(mp3, slot(audio).uri).format.value == "mp3"
