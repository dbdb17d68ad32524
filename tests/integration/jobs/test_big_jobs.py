"""Jobs up to MaxJobBytes against moto: the presigned POST takes exactly a job's size and refuses a byte more, a job
may name an upload a synchronous call refuses, and the worker checks and prices a 100 MB file from its head and tail
(the bytes it reads from S3 are counted, not timed), refusing one longer than MaxJobAudioSeconds before reserving."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
import uuid
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
import requests
from infery.adapters.audio_bucket import (
    PROBE_EXTRA_BYTES,
    PROBE_HEAD_BYTES,
    PROBE_TAIL_BYTES,
    STREAM_PART_BYTES,
    AudioStore,
)
from infery.adapters.audio_fetcher import HttpAudioFetcher
from infery.adapters.job_store import JobStore
from infery.domain.audio import AudioFormat
from infery.domain.errors import InferyError
from infery.domain.jobs import JobError, JobStatus
from infery.domain.ranged_audio import RangedAudio
from infery.domain.stored_audio import StoredObject
from infery.domain.transcription import LoadedAudio
from infery.usecases.audio_by_url import AudioByUrl

from tests.support.api import assert_error
from tests.support.audio_server import serving_audio
from tests.support.jobs import (
    SEEDED,
    TRANSCRIPTION_JOBS,
    assert_no_batch_failures,
    decoded_policy,
    post_upload,
)

# far past what the worker may read, small enough for the suite's moto (which keeps every version it is sent)
BIG_BYTES = 100 * 1000 * 1000
# what the worker may read of any job's file to check and price it, whatever its size (its head, its tail, and a
# budget for other ranges): a few MB, never the file
READ_BOUND = 24 * 1024 * 1024


def wav_header(data_bytes: int, sample_rate: int, bits: int) -> bytes:
    """A mono PCM WAV's 44-byte header for ``data_bytes`` of samples."""
    block = bits // 8
    return (
        b"RIFF"
        + (36 + data_bytes).to_bytes(4, "little")
        + b"WAVEfmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")
        + (1).to_bytes(2, "little")
        + sample_rate.to_bytes(4, "little")
        + (sample_rate * block).to_bytes(4, "little")
        + block.to_bytes(2, "little")
        + bits.to_bytes(2, "little")
        + b"data"
        + data_bytes.to_bytes(4, "little")
    )


class SilentWav(io.RawIOBase):
    """A WAV of ``size`` bytes (a header, then silence) produced as it is read: never held whole here either."""

    def __init__(self, size: int, sample_rate: int, bits: int) -> None:
        self._header = wav_header(size - 44, sample_rate, bits)
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self._size - self._position)
        chunk = (self._header[self._position : self._position + count] if self._position < 44 else b"").ljust(
            count, b"\0"
        )
        buffer[:count] = chunk
        self._position += count
        return count


class CountingS3:
    """The S3 client, counting the body bytes every GetObject returns (what was read into memory)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.bytes_read = 0
        self.gets: list[str] = []

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        response: dict[str, Any] = self._client.get_object(**kwargs)
        body = response["Body"].read()
        self.bytes_read += len(body)
        self.gets.append(kwargs.get("Range", "whole"))
        response["Body"] = io.BytesIO(body)
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def put_big_wav(s3: Any, bucket: str, key: str, *, sample_rate: int, bits: int) -> None:
    s3.upload_fileobj(SilentWav(BIG_BYTES, sample_rate, bits), bucket, key)


@pytest.fixture
def counted_worker_s3(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Install a counting S3 client in a worker's wiring (before its audio store is built)."""

    def install(worker: Any) -> CountingS3:
        counting = CountingS3(worker.module.wiring.s3)
        worker.module.wiring.__dict__.pop("audio_store", None)
        worker.module.wiring.__dict__.pop("job_service", None)
        worker.module.wiring.__dict__.pop("job_audio_by_url", None)
        monkeypatch.setitem(worker.module.wiring.__dict__, "s3", counting)
        return counting

    return install


# --- the presigned POST --------------------------------------------------------------------------------------------


def test_the_presigned_post_takes_a_file_of_exactly_max_job_bytes_and_refuses_one_byte_more(
    fake_runtime, load_api, accounts, store, jobs_queue, short_wav
):
    url, model = fake_runtime(200, {"never": "called"})
    # a job's limit (exactly this file) above a synchronous call's
    api = load_api(url, MAX_UPLOAD_BYTES=str(len(short_wav) // 2), MAX_JOB_BYTES=str(len(short_wav)))
    api_key, item = accounts.new_key(SEEDED)

    over = post_upload(api, api_key, {"start_job": False}).json()
    assert over["max_bytes"] == len(short_wav)
    assert ["content-length-range", 1, len(short_wav)] in decoded_policy(over)["conditions"]
    refused = requests.post(
        over["upload_url"], data=over["fields"], files={"file": ("big.wav", short_wav + b"\0")}, timeout=30
    )
    assert refused.status_code == 400 and b"EntityTooLarge" in refused.content
    assert "Contents" not in store.s3.list_objects_v2(Bucket=store.bucket, Prefix=over["fields"]["key"])

    exact = post_upload(api, api_key, {"start_job": False}).json()
    taken = requests.post(exact["upload_url"], data=exact["fields"], files={"file": ("ok.wav", short_wav)}, timeout=30)
    assert taken.status_code in (200, 201, 204), taken.text
    jobs_queue.drain()
    # a job takes it; a synchronous call does not read it, and says to send it as a job
    assert api.transcribe(api_key, None, path=TRANSCRIPTION_JOBS, upload_id=exact["id"]).status == 202
    error = assert_error(
        api.transcribe(api_key, None, upload_id=exact["id"]), 413, "audio_too_large", param="upload_id"
    )
    assert "job" in error["message"]
    assert model.calls == 0
    # the job is left queued and never run here: closed, so the session's reconciler tests find no stuck job
    jobs_queue.drain()
    for job in store.jobs_of(item):
        JobStore(store.jobs_table).fail(job.job_id, JobError(code="test_over", message="closed by the test"))


def test_a_job_naming_an_upload_over_max_job_bytes_is_413_and_queues_nothing(
    fake_runtime, load_api, accounts, store, jobs_queue, short_wav
):
    url, model = fake_runtime(200, {"never": "called"})
    api = load_api(url, MAX_UPLOAD_BYTES=str(len(short_wav) // 4), MAX_JOB_BYTES=str(len(short_wav) - 1))
    api_key, item = accounts.new_key(SEEDED)
    upload = post_upload(api, api_key, {"start_job": False}).json()
    # one byte over what the POST takes: put in the slot directly, as one uploaded under a larger limit would be
    store.s3.put_object(Bucket=store.bucket, Key=upload["fields"]["key"], Body=short_wav)
    jobs_queue.drain()

    reply = api.transcribe(api_key, None, path=TRANSCRIPTION_JOBS, upload_id=upload["id"])

    error = assert_error(reply, 413, "audio_too_large", param="upload_id")
    assert "a job transcribes" in error["message"]
    assert store.jobs_of(item) == [] and jobs_queue.drain() == []
    accounts.assert_untouched(item, SEEDED)


# --- a 100 MB file in the worker -----------------------------------------------------------------------------------


def test_a_100_mb_wav_is_checked_and_priced_from_16_mb_of_it_with_the_whole_files_duration(s3, audio_resources):
    bucket = audio_resources["bucket"]
    key = "inbox/key_0123456789abcdef/big-16k.wav"
    put_big_wav(s3, bucket, key, sample_rate=16_000, bits=16)
    counting = CountingS3(boto3.client("s3"))
    audio_store = AudioStore(
        counting, bucket, max_upload_bytes=25_000_000, upload_expiry_seconds=900, max_job_bytes=BIG_BYTES
    )
    stored = StoredObject(bucket, key, "key_0123456789abcdef", "inbox", "big-16k.wav", 0)

    audio = LoadedAudio.stored(*audio_store.load_job_audio(stored))

    from infery.domain.duration import probe_duration, probe_sample_rate

    assert audio.format is AudioFormat.WAV and audio.size == BIG_BYTES
    assert probe_duration(audio.data, audio.format) == pytest.approx((BIG_BYTES - 44) / 32_000)
    assert probe_sample_rate(audio.data, audio.format) == 16_000
    assert audio.s3_uri == f"s3://{bucket}/{key}" and audio.s3_etag
    assert counting.bytes_read <= PROBE_HEAD_BYTES + PROBE_TAIL_BYTES
    assert PROBE_HEAD_BYTES + PROBE_TAIL_BYTES + PROBE_EXTRA_BYTES <= READ_BOUND
    assert all(read != "whole" for read in counting.gets)
    # the same object, one byte over a job's limit, is refused without reading it
    smaller = AudioStore(
        counting, bucket, max_upload_bytes=25_000_000, upload_expiry_seconds=900, max_job_bytes=BIG_BYTES - 1
    )
    before = counting.bytes_read
    with pytest.raises(Exception, match="a job transcribes"):
        smaller.load_job_audio(stored)
    assert counting.bytes_read == before
    s3.delete_object(Bucket=bucket, Key=key)


def test_a_100_mb_drop_longer_than_max_job_audio_seconds_is_refused_before_any_credit_is_reserved(
    load_worker, fake_runtime, store, jobs_queue, accounts, counted_worker_s3
):
    url, model = fake_runtime(200, {"never": "called"})
    worker = load_worker(url, MAX_JOB_BYTES=str(BIG_BYTES), MAX_JOB_AUDIO_SECONDS="12000")
    counting = counted_worker_s3(worker)
    api_key, item = accounts.new_key(SEEDED)
    object_key = f"inbox/{item.key_id}/ten-hours.wav"
    # 8 kHz, 8 bits: 100 MB hold 12,500 s, past the 12,000 s a job may last here
    put_big_wav(store.s3, store.bucket, object_key, sample_rate=8_000, bits=8)

    # moto announces a multipart upload twice (as a Put and as a CompleteMultipartUpload, where S3 sends the
    # latter only): both are delivered, and name the same job
    events = [message for message in jobs_queue.drain() if quote_plus(object_key) in message["Body"]]
    assert events
    assert_no_batch_failures(worker.deliver(events))

    job = store.only_job(item)
    assert job.status is JobStatus.FAILED and job.error is not None and job.error.code == "audio_too_long"
    assert "200 minutes" in job.error.message
    assert model.calls == 0
    accounts.assert_untouched(item, SEEDED)
    assert [entry for entry in accounts.ledger(item) if entry["kind"] != "topup"] == []
    assert 0 < counting.bytes_read <= READ_BOUND
    store.s3.delete_object(Bucket=store.bucket, Key=object_key)


# --- a job by URL: streamed into the bucket ------------------------------------------------------------------------

# a served file of two multipart parts and a bit (larger than a probed head and tail): the stream sends parts
# before the body has ended
STREAMED_BYTES = 2 * STREAM_PART_BYTES + 12_345


class RecordingS3(CountingS3):
    """The S3 client, recording each call that writes (what reached the bucket, and when)."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name in ("put_object", "create_multipart_upload", "upload_part", "complete_multipart_upload"):

            def recorded(**kwargs: Any) -> Any:
                self.writes.append(name)
                return attribute(**kwargs)

            return recorded
        return attribute


@pytest.fixture(scope="module")
def streamed_wav() -> bytes:
    return wav_header(STREAMED_BYTES - 44, 16_000, 16) + bytes(STREAMED_BYTES - 44)


@pytest.fixture
def fetch_slot(s3, audio_resources):
    """A job's fetch slot in the bucket, an AudioByUrl over the real fetcher (local rules: http and loopback) and
    AudioStore on moto through a recording client; what is left in the slot is deleted afterwards."""
    bucket = audio_resources["bucket"]
    key_id, upload_id = "key_" + uuid.uuid4().hex[:16], "upl_" + uuid.uuid4().hex
    recording = RecordingS3(boto3.client("s3"))
    store = AudioStore(recording, bucket, max_upload_bytes=1000, upload_expiry_seconds=900, max_job_bytes=10**9)
    fetcher = HttpAudioFetcher(allow_private_addresses=True, allow_http=True, timeout_seconds=60)
    slot = StoredObject(bucket, store.upload_key(key_id, upload_id), key_id, "uploads", upload_id, 0)
    yield AudioByUrl(fetcher, store), slot, recording
    for version in s3.list_object_versions(Bucket=bucket, Prefix=slot.key).get("Versions", []):
        s3.delete_object(Bucket=bucket, Key=slot.key, VersionId=version["VersionId"])


def left_in_the_bucket(s3: Any, slot: StoredObject) -> tuple[list[Any], list[Any]]:
    """The slot's objects, and the multipart uploads begun for it and never completed nor aborted."""
    objects = s3.list_object_versions(Bucket=slot.bucket, Prefix=slot.key).get("Versions", [])
    uploads = s3.list_multipart_uploads(Bucket=slot.bucket, Prefix=slot.key).get("Uploads", [])
    return objects, uploads


def test_a_job_by_url_of_exactly_the_cap_is_streamed_into_the_bucket_in_parts_and_read_back_by_its_ends(
    s3, fetch_slot, streamed_wav
):
    by_url, slot, recording = fetch_slot
    with serving_audio(streamed_wav) as server:
        audio = by_url.fetch_once(slot, server.url("/audio"), max_bytes=len(streamed_wav))

    stored = s3.get_object(Bucket=slot.bucket, Key=slot.key)["Body"].read()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(streamed_wav).digest()
    assert recording.writes[0] == "create_multipart_upload" and recording.writes[-1] == "complete_multipart_upload"
    assert set(recording.writes[1:-1]) == {"upload_part"} and len(recording.writes[1:-1]) in (2, 3)
    assert audio.size == len(streamed_wav) and audio.s3_uri == slot.uri
    assert isinstance(audio.data, RangedAudio)  # read back by its head and tail, as any job's file
    assert recording.bytes_read <= PROBE_HEAD_BYTES + PROBE_TAIL_BYTES
    assert left_in_the_bucket(s3, slot)[1] == []


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/audio", id="its-content-length-one-byte-over"),
        pytest.param(f"/no-length/{STREAMED_BYTES}", id="no-content-length-one-byte-over"),
        pytest.param(f"/chunked/{STREAMED_BYTES}", id="chunked-one-byte-over"),
        pytest.param(f"/longer-than-said/{STREAMED_BYTES}", id="lying-content-length"),
    ],
)
def test_a_job_by_url_one_byte_over_the_cap_is_url_too_large_and_leaves_nothing_behind(
    s3, fetch_slot, streamed_wav, path
):
    by_url, slot, recording = fetch_slot
    with serving_audio(streamed_wav) as server, pytest.raises(InferyError) as refused:
        by_url.stream(slot, server.url(path), max_bytes=len(streamed_wav) - 1)

    assert refused.value.code == "url_too_large"
    # parts were sent before the body went past the cap (a lying or missing length is only found out then), and
    # their multipart upload was aborted: nothing is stored, nothing is left to bill
    assert "complete_multipart_upload" not in recording.writes and "put_object" not in recording.writes
    assert left_in_the_bucket(s3, slot) == ([], [])


def test_a_lying_content_length_under_the_cap_is_url_unreachable_and_leaves_nothing_behind(
    s3, fetch_slot, streamed_wav
):
    by_url, slot, recording = fetch_slot
    with serving_audio(streamed_wav) as server, pytest.raises(InferyError) as refused:
        by_url.stream(slot, server.url(f"/longer-than-said/{STREAMED_BYTES}"), max_bytes=10**9)
    assert refused.value.code == "url_unreachable" and "Content-Length" in refused.value.message
    assert left_in_the_bucket(s3, slot) == ([], [])


def test_a_body_that_is_not_audio_is_refused_before_anything_is_written_to_the_bucket(s3, fetch_slot):
    by_url, slot, recording = fetch_slot
    page = b"<!doctype html>" + b"<p>not audio</p>" * (STREAM_PART_BYTES // 8)
    with serving_audio(page) as server, pytest.raises(InferyError) as refused:
        by_url.stream(slot, server.url("/audio"), max_bytes=10**9)
    assert refused.value.code == "url_not_audio"
    assert recording.writes == []
    assert left_in_the_bucket(s3, slot) == ([], [])


class DiscardingS3:
    """An S3 client that takes a multipart upload's parts and keeps only their sizes (moto runs in this process: its
    own copies of the parts would be counted as the stream's)."""

    def __init__(self) -> None:
        self.part_sizes: list[int] = []
        self.completed = False

    def create_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        return {"UploadId": "multipart-1"}

    def upload_part(self, *, Body: bytes, PartNumber: int, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        self.part_sizes.append(len(Body))
        return {"ETag": f'"part-{PartNumber}"'}

    def complete_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self.completed = True
        return {}


def test_a_streamed_fetch_holds_a_part_or_two_in_memory_not_the_file():
    size = 8 * STREAM_PART_BYTES  # 64 MiB
    served = wav_header(size - 44, 16_000, 16) + bytes(size - 44)
    client = DiscardingS3()
    store = AudioStore(client, "bucket", max_upload_bytes=1000, upload_expiry_seconds=900, max_job_bytes=10**9)
    by_url = AudioByUrl(HttpAudioFetcher(allow_private_addresses=True, allow_http=True, timeout_seconds=60), store)
    slot = StoredObject("bucket", store.upload_key("key_1", "upl_1"), "key_1", "uploads", "upl_1", 0)
    with serving_audio(served) as server:
        tracemalloc.start()
        try:
            assert by_url.stream(slot, server.url("/audio"), max_bytes=size) == size
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert client.completed and sum(client.part_sizes) == size
    assert all(STREAM_PART_BYTES <= part < STREAM_PART_BYTES + 64 * 1024 for part in client.part_sizes[:-1])
    # what was allocated at once while 64 MiB went through: the part being filled and the part being sent
    assert peak < 3 * STREAM_PART_BYTES < size // 2
