"""Audio by reference is read from S3 by ranges: a few megabytes at a time whatever the file's size, every range of
the version that was checked, and a change or a failure at any read told apart (S3 on moto)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np
import pytest
import whisper_server
from audio_input import AudioLimits, AudioRefused, decode
from botocore.exceptions import EndpointConnectionError
from infery.domain.inference import AudioPart
from moto import mock_aws
from parts import decode_part
from s3_reader import FIRST_BLOCK_BYTES, RangedObject, S3ReadFailed
from windows import VAD_FRAME

from tests.support.speech import mono_wav

BUCKET = "audio"


class CountingClient:
    """An S3 client that records each ranged GET's size and can run ``before_get`` before each one."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.ranges: list[int] = []
        self.starts: list[int] = []
        self.before_get: Any = None

    def head_object(self, **kwargs: Any) -> Any:
        return self._client.head_object(**kwargs)

    def get_object(self, **kwargs: Any) -> Any:
        if self.before_get is not None:
            self.before_get(len(self.ranges))
        first, last = kwargs["Range"].removeprefix("bytes=").split("-")
        self.ranges.append(int(last) - int(first) + 1)
        self.starts.append(int(first))
        return self._client.get_object(**kwargs)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield client


def _put(s3: Any, key: str, data: bytes) -> dict[str, str]:
    answer = s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    return {"etag": answer["ETag"], "version_id": answer["VersionId"]}


def _loud_every_other_second(seconds: int) -> bytes:
    """A 16 kHz WAV: a buzz in each even second, silence in each odd one."""
    t = np.arange(seconds * 16_000) / 16_000
    audio = 0.3 * np.sin(2 * np.pi * 180 * t) * (np.floor(t) % 2 == 0)
    return mono_wav((audio * 32767).astype("<i2").tobytes(), 16_000)


def _loudness(samples: np.ndarray) -> np.ndarray:
    frames = np.pad(samples, (0, -len(samples) % VAD_FRAME)).reshape(-1, VAD_FRAME)
    return np.clip(np.sqrt(np.mean(frames**2, axis=1)) / 0.02, 0, 1)


@pytest.mark.parametrize("audio_format", ["wav", "ogg", "m4a", "mp3", "webm"])
def test_a_small_buffer_still_decodes_the_whole_file_as_its_bytes_decode(audio_format, encoded_audio, s3):
    data = encoded_audio[audio_format].read_bytes()
    pinned = _put(s3, f"a.{audio_format}", data)
    counting = CountingClient(s3)
    reader = RangedObject(counting, BUCKET, f"a.{audio_format}", buffer_bytes=4096, **pinned)
    assert np.array_equal(decode(reader, AudioLimits()), decode(data, AudioLimits()))
    assert max(counting.ranges) <= 4096  # no read asks for more than the buffer
    assert reader.held_bytes <= 2 * 4096  # and only that block and the object's head are held


def test_a_part_of_a_long_file_reads_little_more_than_its_own_stretch(s3):
    data = _loud_every_other_second(300)  # 9.6 MB
    pinned = _put(s3, "long.wav", data)
    counting = CountingClient(s3)
    reader = RangedObject(counting, BUCKET, "long.wav", buffer_bytes=256 * 1024, **pinned)
    part = decode_part(
        reader, AudioPart(start=100, end=130, search_seconds=5), AudioLimits(), speech_probabilities=_loudness
    )
    assert int(part.start) % 2 == 1 and int(part.end) % 2 == 1  # both cuts in a silent second
    whole = decode(data, AudioLimits())
    assert np.array_equal(part.samples, whole[round(part.start * 16_000) : round(part.end * 16_000)])
    # its cuts' two stretches of 1 + 2 x 5 s, its own stretch (1 s before it), and one buffer more for each of the
    # three opens (the header) and three seeks: not the file
    needed_seconds = 2 * (1 + 2 * 5) + 1 + (part.end - part.start)
    assert sum(counting.ranges) <= needed_seconds * 32_000 + 6 * 256 * 1024
    assert sum(counting.ranges) < 0.35 * len(data)
    assert max(counting.ranges) <= 256 * 1024


def test_an_object_changed_in_the_middle_of_a_read_is_audio_changed(encoded_audio, s3):
    data = encoded_audio["wav"].read_bytes()
    pinned = _put(s3, "a.wav", data)
    counting = CountingClient(s3)
    # an upload slot written again while the model decodes: the third range asked is of another object
    counting.before_get = lambda done: _put(s3, "a.wav", data[::-1]) if done == 2 else None
    reader = RangedObject(counting, BUCKET, "a.wav", buffer_bytes=8192, etag=pinned["etag"])
    with pytest.raises(S3ReadFailed) as failed:
        decode(reader, AudioLimits())  # not undecodable audio: the read failed, not the decoder
    assert len(counting.ranges) == 3  # two ranges read, the third refused
    refusal = whisper_server._storage_failure("s3://audio/a.wav", failed.value.cause)
    assert (refusal.status, refusal.code) == (400, "audio_changed")


def test_a_pinned_version_is_read_whole_though_the_key_was_written_again_meanwhile(encoded_audio, s3):
    data = encoded_audio["ogg"].read_bytes()
    pinned = _put(s3, "a.ogg", data)
    counting = CountingClient(s3)
    counting.before_get = lambda done: _put(s3, "a.ogg", b"not audio at all" * 100) if done == 1 else None
    reader = RangedObject(counting, BUCKET, "a.ogg", buffer_bytes=8192, version_id=pinned["version_id"])
    assert np.array_equal(decode(reader, AudioLimits()), decode(data, AudioLimits()))


def test_an_object_changed_before_the_first_read_is_audio_changed(encoded_audio, s3):
    pinned = _put(s3, "a.wav", encoded_audio["wav"].read_bytes())
    _put(s3, "a.wav", b"another file")
    with pytest.raises(S3ReadFailed) as failed:
        RangedObject(s3, BUCKET, "a.wav", etag=pinned["etag"])
    assert whisper_server._storage_failure("s3://audio/a.wav", failed.value.cause).code == "audio_changed"


def test_a_missing_object_is_unreadable_and_a_storage_outage_is_storage_unavailable(encoded_audio, s3):
    with pytest.raises(S3ReadFailed) as missing:
        RangedObject(s3, BUCKET, "nothing-here.wav")
    refusal = whisper_server._storage_failure("s3://audio/nothing-here.wav", missing.value.cause)
    assert (refusal.status, refusal.code) == (400, "invalid_request")

    _put(s3, "a.wav", encoded_audio["wav"].read_bytes())
    counting = CountingClient(s3)

    def outage(done: int) -> None:
        if done == 1:
            raise EndpointConnectionError(endpoint_url="https://s3.example")

    counting.before_get = outage
    reader = RangedObject(counting, BUCKET, "a.wav", buffer_bytes=8192)
    with pytest.raises(S3ReadFailed) as failed:
        decode(reader, AudioLimits())
    refusal = whisper_server._storage_failure("s3://audio/a.wav", failed.value.cause)
    assert (refusal.status, refusal.code) == (503, "storage_unavailable")


def test_undecodable_bytes_by_reference_are_undecodable_audio(s3):
    pinned = _put(s3, "junk.wav", b"\x00junk" * 10_000)
    reader = RangedObject(s3, BUCKET, "junk.wav", buffer_bytes=4096, **pinned)
    with pytest.raises(AudioRefused) as refused:
        decode_part(reader, AudioPart(start=20, end=100), AudioLimits(), speech_probabilities=_loudness)
    assert refused.value.code == "undecodable_audio"


def test_reading_past_the_end_gives_nothing_and_asks_s3_nothing(s3):
    pinned = _put(s3, "small.bin", bytes(range(256)) * 4)
    counting = CountingClient(s3)
    reader = RangedObject(counting, BUCKET, "small.bin", buffer_bytes=100, **pinned)
    assert reader.size == 1024
    reader.seek(-24, 2)
    assert reader.read(100) == (bytes(range(256)) * 4)[-24:]
    assert reader.read(100) == b""
    reader.seek(5000)
    assert reader.read(10) == b""
    assert counting.ranges == [24]  # a range never runs past the object's end (S3 would refuse it)


def test_a_block_after_a_jump_is_small_and_each_block_read_on_from_it_twice_the_one_before(s3):
    data = bytes(range(256)) * 8192  # 2 MiB
    pinned = _put(s3, "big.bin", data)
    counting = CountingClient(s3)
    reader = RangedObject(counting, BUCKET, "big.bin", buffer_bytes=512 * 1024, **pinned)
    reader.seek(1_000_000)
    assert reader.read(10) == data[1_000_000:1_000_010]
    assert counting.ranges == [FIRST_BLOCK_BYTES]  # a bisection's probe costs one small range
    rest = b"".join(iter(lambda: reader.read(100_000), b""))  # a raw file's read gives what one block holds
    assert rest == data[1_000_010:]
    # read on: 128 KiB, 256 KiB, then the buffer's 512 KiB at most, to the object's end
    assert counting.ranges[1:4] == [2 * FIRST_BLOCK_BYTES, 4 * FIRST_BLOCK_BYTES, 512 * 1024]
    assert max(counting.ranges) == 512 * 1024 and reader.held_bytes <= 512 * 1024 + FIRST_BLOCK_BYTES
    reader.seek(200_000)
    reader.read(10)
    assert counting.ranges[-1] == FIRST_BLOCK_BYTES


def test_the_objects_head_is_asked_once_however_often_it_is_opened(encoded_audio, s3):
    data = encoded_audio["ogg"].read_bytes()
    pinned = _put(s3, "a.ogg", data)
    counting = CountingClient(s3)
    reader = RangedObject(counting, BUCKET, "a.ogg", **pinned)
    for _ in range(3):  # a part opens it three times: its two cuts' stretches, then its own
        decode(reader, AudioLimits())
    assert counting.starts.count(0) == 1 and counting.ranges[0] == FIRST_BLOCK_BYTES


def test_an_entity_tag_sent_without_its_quotes_pins_the_object_as_well(encoded_audio, s3):
    data = encoded_audio["wav"].read_bytes()
    bare = _put(s3, "a.wav", data)["etag"].strip('"')
    assert np.array_equal(
        decode(RangedObject(s3, BUCKET, "a.wav", etag=bare), AudioLimits()), decode(data, AudioLimits())
    )
    _put(s3, "a.wav", b"another file")
    with pytest.raises(S3ReadFailed) as failed:
        RangedObject(s3, BUCKET, "a.wav", etag=bare)
    assert whisper_server._storage_failure("s3://audio/a.wav", failed.value.cause).code == "audio_changed"
