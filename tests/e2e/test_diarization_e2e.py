"""Who said what, end to end: a local stack started with diarization (INFERY_DIARIZATION=1, as `make serve
DIARIZATION=1` starts it) driven by the unmodified openai SDK, a three-voice espeak-ng call, voice samples that name
speakers, a job, and bad samples refused with nothing charged."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import openai
import pytest
import requests

from tests.support.speech import silent_wav
from tests.support.stack import RunningStack, running_stack
from tests.support.stack_calls import create_upload, upload_file, wait_for_job
from tests.support.voices import SUPPORT_CALL, Turn, conversation, diarization_error_rate, true_speaker_of, voice_sample

pytestmark = pytest.mark.e2e

MAX_DER = 0.10


@pytest.fixture(scope="module")
def speaking_stack() -> Iterator[RunningStack]:
    with running_stack(credits=10_000, extra_environment={"INFERY_DIARIZATION": "1"}) as running:
        yield running


@pytest.fixture(scope="module")
def call() -> tuple[bytes, list[Turn]]:
    return conversation(SUPPORT_CALL)


def _data_url(wav: bytes) -> str:
    return "data:audio/wav;base64," + base64.b64encode(wav).decode()


def _turns(segments: list) -> list[Turn]:
    return [
        Turn(segment["speaker"], segment["start"], segment["end"])
        if isinstance(segment, dict)
        else Turn(segment.speaker, segment.start, segment.end)
        for segment in segments
    ]


def _balance(stack: RunningStack) -> int:
    return int(stack.usage()["balance"])


def test_a_three_voice_call_comes_back_with_three_speakers(speaking_stack: RunningStack, call) -> None:
    audio, truth = call
    raw = speaking_stack.client().audio.transcriptions.with_raw_response.create(
        model="gpt-4o-transcribe-diarize", file=("call.wav", audio), response_format="diarized_json"
    )
    diarized = raw.parse()
    assert type(diarized).__name__ == "TranscriptionDiarized"  # the SDK read it as OpenAI's shape
    assert diarized.task == "transcribe" and diarized.duration == pytest.approx(truth[-1].end + 0.3, abs=0.1)
    assert "laptop" in diarized.text.lower() and "replacement" in diarized.text.lower()
    found = _turns(diarized.segments)
    speakers = {turn.speaker for turn in found}
    assert speakers == {"A", "B", "C"}, diarized.segments
    assert diarized.segments[0].speaker == "A" and diarized.segments[0].type == "transcript.text.segment"
    der = diarization_error_rate(truth, found)
    print(f"DER of the three-voice call's diarized segments: {der:.3f}")
    assert der <= MAX_DER
    # every label stands for one true voice, and the three for three different ones
    assert {true_speaker_of(label, found, truth) for label in speakers} == {"ann", "bea", "cal"}
    # speakers cost their surcharge: 1 credit per started 5 s, and 1 more per started 10 s
    seconds = diarized.duration
    assert int(raw.headers["x-infery-credits-used"]) == -(-seconds // 5) + -(-seconds // 10)


def test_voice_samples_put_names_on_the_right_voices(speaking_stack: RunningStack, call) -> None:
    audio, truth = call
    diarized = speaking_stack.client().audio.transcriptions.create(
        model="gpt-4o-transcribe-diarize",
        file=("call.wav", audio),
        response_format="diarized_json",
        known_speaker_names=["Agent", "Manager"],
        known_speaker_references=[
            _data_url(voice_sample("ann", "This is me speaking, I answer the phone every day.")),
            _data_url(voice_sample("cal", "Hello, this is the manager of the support team.")),
        ],
    )
    found = _turns(diarized.segments)
    assert {turn.speaker for turn in found} == {"Agent", "Manager", "A"}
    assert true_speaker_of("Agent", found, truth) == "ann"
    assert true_speaker_of("Manager", found, truth) == "cal"
    assert true_speaker_of("A", found, truth) == "bea"


def test_subtitles_name_the_speaker_of_each_cue(speaking_stack: RunningStack, call) -> None:
    audio, _ = call
    client = speaking_stack.client()
    vtt = client.audio.transcriptions.create(
        model="gpt-4o-transcribe-diarize", file=("call.wav", audio), response_format="vtt"
    )
    assert vtt.startswith("WEBVTT") and "<v A>" in vtt and "<v C>" in vtt
    verbose = client.audio.transcriptions.create(
        model="gpt-4o-transcribe-diarize", file=("call.wav", audio), response_format="verbose_json"
    )
    assert {segment.model_extra["speaker"] for segment in verbose.segments} <= {"A", "B", "C"}


@pytest.mark.parametrize("flow", ["jobs", "uploads"])
def test_a_job_returns_the_same_shape(speaking_stack: RunningStack, call, flow: str) -> None:
    audio, truth = call
    if flow == "jobs":
        response = requests.post(
            f"{speaking_stack.base_url}/audio/transcriptions/jobs",
            headers=speaking_stack.headers(),
            files={"file": ("call.wav", audio)},
            data={"model": "whisper-1", "response_format": "diarized_json"},
            timeout=60,
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
    else:
        upload = create_upload(speaking_stack, filename="call.wav", response_format="diarized_json")
        upload_file(upload, "call.wav", audio)
        job_id = upload["job_id"]
    job = wait_for_job(speaking_stack, job_id)
    assert job["status"] == "succeeded", job
    result = requests.get(
        f"{speaking_stack.base_url}/jobs/{job['id']}/result", headers=speaking_stack.headers(), timeout=60
    )
    assert result.status_code == 200, result.text
    body = result.json()
    assert set(body) >= {"task", "duration", "text", "segments", "usage"}
    found = _turns(body["segments"])
    assert {turn.speaker for turn in found} == {"A", "B", "C"}
    assert diarization_error_rate(truth, found) <= MAX_DER


def _job_with_samples(stack: RunningStack, audio: bytes, names: list[str], references: list[str]) -> requests.Response:
    fields = [("model", "whisper-1"), ("response_format", "diarized_json")]
    fields += [("known_speaker_names[]", name) for name in names]
    fields += [("known_speaker_references[]", reference) for reference in references]
    return requests.post(
        f"{stack.base_url}/audio/transcriptions/jobs",
        headers=stack.headers(),
        files={"file": ("call.wav", audio)},
        data=fields,
        timeout=60,
    )


def test_a_jobs_voice_samples_put_names_on_the_right_voices(speaking_stack: RunningStack, call) -> None:
    """The samples (too large for the job's item) are kept in the bucket beside the job and read when it runs."""
    audio, truth = call
    samples = [
        _data_url(voice_sample("ann", "This is me speaking, I answer the phone every day.")),
        _data_url(voice_sample("cal", "Hello, this is the manager of the support team.")),
    ]
    response = _job_with_samples(speaking_stack, audio, ["Agent", "Manager"], samples)
    assert response.status_code == 202, response.text
    job = wait_for_job(speaking_stack, response.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["options"]["known_speaker_names"] == ["Agent", "Manager"]
    assert "base64" not in json.dumps(job) and "speakers/" not in json.dumps(job)  # neither samples nor their key
    found = _turns(job["result"]["segments"])
    assert {turn.speaker for turn in found} == {"Agent", "Manager", "A"}
    assert true_speaker_of("Agent", found, truth) == "ann"
    assert true_speaker_of("Manager", found, truth) == "cal"


def test_a_job_with_a_bad_sample_is_400_before_anything_is_queued_or_charged(speaking_stack: RunningStack, call):
    audio, _ = call
    before = _balance(speaking_stack)
    response = _job_with_samples(speaking_stack, audio, ["Agent"], [_data_url(silent_wav(16_000, 1.0))])
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_speaker_reference"
    assert _balance(speaking_stack) == before and speaking_stack.open_reservations() == []


@pytest.mark.parametrize(
    ("names", "references", "code"),
    [
        (["Agent"], [_data_url(silent_wav(16_000, 1.0))], "invalid_speaker_reference"),  # too short
        (["Agent"], [_data_url(silent_wav(16_000, 12.0))], "invalid_speaker_reference"),  # too long
        (["Agent"], ["https://example.com/agent.wav"], "invalid_speaker_reference"),  # not a data URL
        (["Agent"], ["data:audio/wav;base64," + base64.b64encode(b"not audio at all").decode()],
         "invalid_speaker_reference"),
        (["Agent", "Manager"], [_data_url(silent_wav(16_000, 3.0))], "invalid_known_speakers"),  # one sample short
        (list("abcde"), [_data_url(silent_wav(16_000, 3.0))] * 5, "invalid_known_speakers"),  # more than 4
        (["Agent"], [_data_url(silent_wav(16_000, 3.0))], "invalid_speaker_reference"),  # 3 s without a voice
    ],
)  # fmt: skip
def test_bad_samples_are_400s_and_cost_nothing(speaking_stack: RunningStack, call, names, references, code) -> None:
    audio, _ = call
    before = _balance(speaking_stack)
    with pytest.raises(openai.BadRequestError) as refused:
        speaking_stack.client().audio.transcriptions.create(
            model="gpt-4o-transcribe-diarize",
            file=("call.wav", audio),
            response_format="diarized_json",
            known_speaker_names=names,
            known_speaker_references=references,
        )
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == code, json.dumps(error)[:500]
    assert _balance(speaking_stack) == before
    assert speaking_stack.open_reservations() == []


def test_a_stack_without_diarization_says_how_to_turn_it_on(stack: RunningStack) -> None:
    before = _balance(stack)
    with pytest.raises(openai.BadRequestError) as refused:
        stack.client().audio.transcriptions.create(
            model="whisper-1", file=("quiet.wav", silent_wav(16_000, 2.0)), response_format="diarized_json"
        )
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "diarization_unavailable"
    assert "make serve DIARIZATION=1" in error["message"]
    assert _balance(stack) == before
