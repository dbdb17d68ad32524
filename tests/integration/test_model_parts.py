"""The real model server (tiny.en) transcribes a long job's audio part by part, each part read from S3 by ranges:
the parts meet at the same instants, in pauses of espeak-ng's speech, and together say what the whole file says,
with timestamps on the file's timeline."""

from __future__ import annotations

import base64
import difflib
import json
import re
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from audio_input import AudioLimits
from infery.domain.inference import AudioPart, InferenceRequest, InferenceResult
from parts import decode_part
from whisper_server import WhisperTranscriber

from tests.support import storage
from tests.support.model_server import running_model_server
from tests.support.speech import TimedSentence, distinct_sentences, encode, sentences_missing, timed_speech

audio_resources = storage.audio_resources
storage_endpoints = storage.storage_endpoints  # autouse: S3 at the session's moto, for the model server too

SEARCH = 10.0


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, WhisperTranscriber]]:
    with running_model_server() as server:
        yield server


@pytest.fixture(scope="module")
def speech() -> tuple[bytes, list[TimedSentence]]:
    """About 90 s of 26 different sentences, 0.8 s apart."""
    return timed_speech(distinct_sentences(26), gap_seconds=0.8)


def _pauses(timeline: list[TimedSentence]) -> list[tuple[float, float]]:
    return [(before.end, after.start) for before, after in zip(timeline, timeline[1:], strict=False)]


def _stored(audio_resources: dict[str, str], key: str, data: bytes) -> dict[str, Any]:
    answer = boto3.client("s3").put_object(Bucket=audio_resources["bucket"], Key=key, Body=data)
    return {"audio_s3_uri": f"s3://{audio_resources['bucket']}/{key}", "audio_s3_etag": answer["ETag"]}


def _invoke(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as answer:  # noqa: S310 - loopback
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _words(result: InferenceResult) -> list[str]:
    return re.findall(r"[a-z']+", result.text.lower())


@pytest.mark.parametrize("audio_format", ["ogg", "wav", "flac", "m4a"])
def test_neighbouring_parts_cut_espeak_speech_at_the_same_instant_in_a_pause(audio_format, speech):
    wav, timeline = speech
    data = wav if audio_format == "wav" else encode(wav, audio_format)
    for edge in (30.0, 60.0):
        before = decode_part(data, AudioPart(end=edge, search_seconds=SEARCH), AudioLimits())
        after = decode_part(data, AudioPart(start=edge, search_seconds=SEARCH), AudioLimits())
        assert before.end == after.start, (audio_format, edge)
        # in a pause, with a little of it either side (espeak-ng's own silence makes the pauses longer still)
        assert any(start - 0.05 <= after.start <= end + 0.05 for start, end in _pauses(timeline)), after.start


def test_a_recording_in_three_parts_says_what_it_says_whole_on_the_files_timeline(served, speech, audio_resources):
    url, _ = served
    wav, timeline = speech
    reference = _stored(audio_resources, "parts/speech.ogg", encode(wav, "ogg"))
    status, whole_answer = _invoke(url, {**reference, "word_timestamps": True})
    assert status == 200, whole_answer
    whole = InferenceResult.model_validate(whole_answer)
    edges = [(None, 30.0), (30.0, 60.0), (60.0, None)]
    parts = []
    for start, end in edges:
        part = {"start": start, "end": end, "search_seconds": SEARCH}
        status, answer = _invoke(url, {**reference, "word_timestamps": True, "part": part})
        assert status == 200, answer
        parts.append(InferenceResult.model_validate(answer))

    # the parts tile the file: each starts where the one before it ended, the first at 0, the last at the end
    assert parts[0].audio_start == 0
    for before, after in zip(parts, parts[1:], strict=False):
        assert after.audio_start == pytest.approx(before.audio_start + before.duration, abs=1e-9)
    assert sum(part.duration for part in parts) == pytest.approx(whole.duration, abs=0.002)

    # the same words: the parts' transcripts joined, against the unsplit run's
    heard, expected = Counter(w for part in parts for w in _words(part)), Counter(_words(whole))
    common = sum((heard & expected).values())
    recall, precision = common / sum(expected.values()), common / sum(heard.values())
    assert recall >= 0.97 and precision >= 0.97, (recall, precision, [part.text for part in parts], whole.text)

    # on the file's timeline: every sentence is heard at its own time, and each part's words lie within it
    segments = [segment.model_dump() for part in parts for segment in part.segments]
    assert sentences_missing(timeline, segments) == []
    for part in parts[1:]:
        assert part.segments[0].start >= part.audio_start - 0.01
        assert part.segments[0].seek >= round(part.audio_start * 100) - 1
        assert all(
            part.audio_start - 0.01 <= word.start <= part.audio_start + part.duration for word in part.words or []
        )
    # each word placed where the unsplit run placed it (the two runs' words aligned in order)
    split_words = [word for part in parts for word in part.words or []]
    whole_words = whole.words or []
    matcher = difflib.SequenceMatcher(
        None, [_key(w.word) for w in whole_words], [_key(w.word) for w in split_words], autojunk=False
    )
    offsets = [
        abs(whole_words[block.a + k].start - split_words[block.b + k].start)
        for block in matcher.get_matching_blocks()
        for k in range(block.size)
    ]
    # tiny.en hears a word or two differently with another window's context ("renew" for "review"): not lost
    assert len(offsets) >= 0.95 * len(whole_words) and len(split_words) == pytest.approx(len(whole_words), abs=3)
    assert sorted(offsets)[len(offsets) // 2] < 0.1 and max(offsets) < 1.0, sorted(offsets)[-5:]


def _key(word: str) -> str:
    return re.sub(r"[^a-z']", "", word.lower())


def test_a_part_past_the_files_end_is_an_empty_result_not_an_error(served, speech, audio_resources):
    url, _ = served
    reference = _stored(audio_resources, "parts/short.ogg", encode(speech[0], "ogg"))
    part = {"start": 200.0, "end": 400.0, "search_seconds": SEARCH}
    status, answer = _invoke(url, {**reference, "word_timestamps": True, "part": part})
    assert status == 200, answer
    result = InferenceResult.model_validate(answer)
    assert (result.text, result.segments, result.words, result.duration) == ("", [], [], 0)
    # at or past the file's end (~90 s): where the file ended, or where the part's search began when the file
    # ended before it (the end is not looked for further)
    assert result.audio_start > 85


def test_bad_parts_are_refused(served, speech, audio_resources):
    url, _ = served
    reference = _stored(audio_resources, "parts/junk.ogg", b"OggS" + b"\x00garbage" * 5000)
    status, answer = _invoke(url, {**reference, "part": {"start": 30.0, "end": 120.0}})
    assert (status, answer["code"]) == (400, "undecodable_audio")
    good = _stored(audio_resources, "parts/good.ogg", encode(speech[0], "ogg"))
    for part in ({"start": 60.0, "end": 30.0}, {"start": 30.0, "end": 50.0, "search_seconds": 10}, {"start": 0}):
        status, answer = _invoke(url, {**good, "part": part})
        assert (status, answer["code"]) == (400, "invalid_request"), part
    # what a part pays for is checked against the part's own samples
    status, answer = _invoke(
        url, {**good, "max_audio_seconds": 10, "part": {"start": 30.0, "end": 60.0, "search_seconds": 5}}
    )
    assert (status, answer["code"]) == (400, "audio_longer_than_declared")


def test_inline_audio_may_be_a_part_too(served, speech):
    _, transcriber = served
    audio = base64.b64encode(encode(speech[0], "flac")).decode()
    result = transcriber.transcribe(
        InferenceRequest(audio=audio, part=AudioPart(start=60.0, search_seconds=SEARCH), language="en")
    )
    assert 50 <= result.audio_start <= 70 and result.segments
    assert result.segments[0].start >= result.audio_start - 0.01
