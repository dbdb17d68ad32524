"""Long audio at the limits we promise, end to end through the local stack and `infery transcribe`.

Each recording is said sentence by sentence (espeak-ng) and laid out on a timeline we know, so every sentence is
checked where it was said: a window dropped, a word cut at a window edge or a last sentence lost fails the test
even when the same words are said elsewhere. Jobs run on the (emulated) asynchronous endpoint, so nothing here
depends on one 60-second invocation.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.speech import (
    TIMED_SAMPLE_RATE,
    TimedSentence,
    distinct_sentences,
    mono_wav,
    one_hertz_wav,
    sentences_missing,
    timed_speech,
)
from tests.support.stack import RunningStack, running_stack
from tests.support.stack_calls import (
    cli,
    create_upload,
    credits_for,
    ledger_entries,
    upload_file,
    usage,
    wait_for_job,
)

pytestmark = pytest.mark.e2e

TEN_MINUTES = 600.0


# jobs longer than 5 minutes run in parts here (JobPartSeconds): the 25 MB recording's 13 minutes are 3 parts, cut
# at pauses and stitched back, so every sentence checked where it was said checks the parts' edges too
PART_SECONDS = 300


@pytest.fixture(scope="module")
def long_stack() -> Iterator[RunningStack]:
    with running_stack(
        credits=100_000, extra_environment={"INFERY_PARAMETER_OVERRIDES": f"JobPartSeconds={PART_SECONDS}"}
    ) as running:
        yield running


def _transcribe_verbose(stack: RunningStack, path: Path, *extra: str) -> dict[str, Any]:
    result = cli(stack, "transcribe", str(path), "--format", "verbose_json", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def _settled_request(stack: RunningStack, balance_before: int) -> dict[str, Any]:
    """The one request settled since ``balance_before`` was read, and the usage report that shows it."""
    report = usage(stack)
    newest = report["recent_requests"][0]
    assert newest["status"] == "settled", report["recent_requests"][:3]
    assert report["balance"] == balance_before - newest["credits"], (balance_before, report["balance"], newest)
    return newest


def _at_most(wav: bytes, timeline: list[TimedSentence], limit_bytes: int) -> tuple[bytes, list[TimedSentence]]:
    """The recording cut after the last sentence that fits in ``limit_bytes``: the file ends with that sentence."""
    last_sample = (limit_bytes - 44) // 2  # a 16-bit mono WAV after its 44-byte header
    kept = [sentence for sentence in timeline if round(sentence.end * TIMED_SAMPLE_RATE) <= last_sample]
    return mono_wav(wav[44 : 44 + 2 * round(kept[-1].end * TIMED_SAMPLE_RATE)], TIMED_SAMPLE_RATE), kept


def test_a_recording_of_the_full_25_mb_through_infery_transcribe_keeps_every_sentence_and_is_charged_once(
    long_stack: RunningStack, tmp_path: Path
) -> None:
    # the upload flow's limit (MaxUploadBytes), filled: 13 minutes of 16 kHz speech, ending with its last word
    wav, timeline = _at_most(*timed_speech(distinct_sentences(240)), limit_bytes=25_000_000)
    assert timeline[-1].end >= TEN_MINUTES, timeline[-1].end
    assert 25_000_000 - 150_000 <= len(wav) <= 25_000_000, len(wav)  # a sentence and its pause at most short
    path = tmp_path / "twenty-five-megabytes.wav"
    path.write_bytes(wav)
    before = usage(long_stack)

    transcript = _transcribe_verbose(long_stack, path)  # over the sync limit: upload, job, asynchronous endpoint

    missing = sentences_missing(timeline, transcript["segments"])
    assert missing == [], f"{len(missing)} of {len(timeline)} sentences lost, first: {missing[:3]}"
    assert transcript["duration"] == pytest.approx(len(wav[44:]) / 2 / TIMED_SAMPLE_RATE, abs=0.1)
    request = _settled_request(long_stack, before["balance"])
    assert request["credits"] == credits_for(transcript["duration"]) == transcript["credits_used"]
    entries = ledger_entries(long_stack, before["key_id"], request["request_id"])
    assert Counter(entry["kind"] for entry in entries) == Counter({"reserve": 1, "settle": 1}), entries
    assert sum(entry["credits"] for entry in entries) == -request["credits"]

    # it ran as 3 parts, whose results meet end to start: nothing said twice where two parts meet (a sentence
    # transcribed by both would put a segment back in time), the segments numbered through
    [job] = [row for row in long_stack.jobs_of(before["key_id"]) if row["job_id"] == request["request_id"]]
    assert len(job["parts"]) == 3 and all(part["output_location"] for part in job["parts"]), job.get("parts")
    segments = transcript["segments"]
    assert [segment["id"] for segment in segments] == list(range(len(segments)))
    assert all(earlier["end"] <= later["start"] + 0.5 for earlier, later in zip(segments, segments[1:], strict=False))


@pytest.mark.parametrize("path_flag", ["--job", None], ids=["job", "sync"])
def test_silence_between_sentences_and_quiet_speech_lose_nothing(
    long_stack: RunningStack, tmp_path: Path, path_flag: str | None
) -> None:
    # 5 s pauses put window cuts in silence; three sentences are whispered at 5% of the others' volume
    wav, timeline = timed_speech(distinct_sentences(14), gap_seconds=5.0, quiet=frozenset({2, 6, 11}))
    assert timeline[-1].end > 60  # several windows
    path = tmp_path / "pauses.wav"
    path.write_bytes(wav)
    transcript = _transcribe_verbose(long_stack, path, *([path_flag] if path_flag else []))
    assert sentences_missing(timeline, transcript["segments"]) == []


@pytest.mark.parametrize("path_flag", ["--job", None], ids=["job", "sync"])
def test_the_last_sentence_ending_at_the_very_end_of_the_file_comes_back(
    long_stack: RunningStack, tmp_path: Path, path_flag: str | None
) -> None:
    wav, timeline = timed_speech(distinct_sentences(20))
    assert len(wav[44:]) / 2 / TIMED_SAMPLE_RATE == pytest.approx(timeline[-1].end, abs=0.01)  # no silence after
    path = tmp_path / "ends-mid-breath.wav"
    path.write_bytes(wav)
    transcript = _transcribe_verbose(long_stack, path, *([path_flag] if path_flag else []))
    assert sentences_missing(timeline, transcript["segments"]) == []
    last_words = timeline[-1].key_words
    assert all(word in transcript["text"].lower() for word in last_words), (last_words, transcript["text"][-200:])


def test_a_duration_bomb_is_refused_before_any_credit_is_reserved_sync_and_job(long_stack: RunningStack) -> None:
    bomb = one_hertz_wav(4000)
    before = usage(long_stack)
    reply = requests.post(
        f"{long_stack.base_url}/audio/transcriptions",
        headers=long_stack.headers(),
        data={"model": "whisper-1"},
        files={"file": ("bomb.wav", bomb, "audio/wav")},
        timeout=60,
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == "sample_rate_too_low", reply.text

    upload = create_upload(long_stack, filename="bomb.wav", model="whisper-1")
    upload_file(upload, "bomb.wav", bomb)
    job = wait_for_job(long_stack, upload["job_id"])
    assert job["status"] == "failed" and job["error"]["code"] == "sample_rate_too_low", job
    assert "8000 Hz" in job["error"]["message"], job
    after = usage(long_stack)
    assert after["balance"] == before["balance"]
    assert ledger_entries(long_stack, before["key_id"], upload["job_id"]) == []  # nothing reserved, nothing refunded
