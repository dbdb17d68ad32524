"""Asking for speakers: the fields as the openai SDK sends them, the known speakers' samples checked before anything
is reserved, the model's request, and the surcharge reserved and settled like the rest."""

from __future__ import annotations

import base64
import json

import pytest
from infery.domain.errors import InferyError, InvalidRequest
from infery.domain.inference import InferenceResult, SpeakerTurn, Task
from infery.domain.pricing import Pricing
from infery.domain.transcription import ResponseFormat, TranscriptionOptions
from infery.http.request_parsing import parse_transcription_request
from infery.usecases.charging import ModelCatalog, TranscriptionTerms
from infery.usecases.transcribe import TranscriptionService

from tests.support.builders import json_body, multipart_body, segment
from tests.support.fakes import FakeAudio, FakeCredits, FakeRealtimeEndpoint
from tests.support.job_world import KEY
from tests.support.speech import silent_wav

SAMPLE = "data:audio/wav;base64," + base64.b64encode(silent_wav(16_000, 3.0)).decode()
AUDIO = silent_wav(16_000, 12.0)


def parse(content_type: str, body: bytes, task: Task = Task.TRANSCRIBE, *, for_job: bool = False):
    return parse_transcription_request(
        task, content_type, body, max_audio_bytes=4 * 1024 * 1024, max_upload_bytes=25_000_000, for_job=for_job
    )


def refusal(content_type: str, body: bytes, task: Task = Task.TRANSCRIBE, *, for_job: bool = False) -> InferyError:
    with pytest.raises(InferyError) as refused:
        parse(content_type, body, task, for_job=for_job)
    return refused.value


def test_the_sdks_form_names_two_speakers() -> None:
    request = parse(
        *multipart_body(
            AUDIO,
            model="gpt-4o-transcribe-diarize",
            response_format="diarized_json",
            **{"known_speaker_names[]": ["agent", "customer"], "known_speaker_references[]": [SAMPLE, SAMPLE]},
        )
    )
    assert request.diarize
    assert request.known_speaker_names == ["agent", "customer"]
    assert request.known_speaker_references == [SAMPLE, SAMPLE]
    assert "base64" not in repr(request)  # samples are not logged


def test_json_names_speakers_with_lists() -> None:
    request = parse(
        *json_body(
            AUDIO,
            model="whisper-1",
            response_format="diarized_json",
            known_speaker_names=["agent"],
            known_speaker_references=[SAMPLE],
        )
    )
    assert request.diarize and request.known_speaker_names == ["agent"]


def test_diarized_json_without_known_speakers_is_fine() -> None:
    request = parse(*multipart_body(AUDIO, model="whisper-1", response_format="diarized_json"))
    assert request.diarize and request.known_speaker_names == []


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        # samples without a diarized format would be paid for and never shown
        ({"known_speaker_names[]": ["a"], "known_speaker_references[]": [SAMPLE]}, "known_speaker_names",
         "invalid_known_speakers"),
        ({"response_format": "diarized_json", "known_speaker_names[]": ["a", "b"],
          "known_speaker_references[]": [SAMPLE]}, "known_speaker_names", "invalid_known_speakers"),
        ({"response_format": "diarized_json", "known_speaker_references[]": [SAMPLE]}, "known_speaker_names",
         "invalid_known_speakers"),
        ({"response_format": "diarized_json", "known_speaker_names[]": list("abcde"),
          "known_speaker_references[]": [SAMPLE] * 5}, "known_speaker_names", "invalid_known_speakers"),
        ({"response_format": "diarized_json", "known_speaker_names[]": ["a"], "known_speaker_references[]": ["x"]},
         "known_speaker_references", "invalid_speaker_reference"),
        ({"response_format": "diarized_json", "known_speaker_names[]": ["a"],
          "known_speaker_references[]": ["data:audio/wav;base64," + base64.b64encode(silent_wav(16_000, 12)).decode()]},
         "known_speaker_references", "invalid_speaker_reference"),
        ({"response_format": "diarized_json", "timestamp_granularities[]": ["word"]}, "timestamp_granularities",
         "invalid_value"),
    ],
)  # fmt: skip
def test_bad_speaker_fields_are_400s(fields, param, code) -> None:
    refused = refusal(*multipart_body(AUDIO, model="whisper-1", **fields))
    assert (refused.status_code, refused.param, refused.code) == (400, param, code)


def test_json_speaker_fields_must_be_lists_of_text() -> None:
    for fields in ({"known_speaker_names": "agent"}, {"known_speaker_names": [1], "known_speaker_references": [2]}):
        refused = refusal(*json_body(AUDIO, model="whisper-1", response_format="diarized_json", **fields))
        assert refused.code == "invalid_value" and refused.param is not None
        assert refused.param.startswith("known_speaker")


def test_a_translation_has_no_speakers() -> None:
    refused = refusal(*multipart_body(AUDIO, model="whisper-1", response_format="diarized_json"), Task.TRANSLATE)
    assert (refused.param, refused.code) == ("response_format", "invalid_value")
    refused = refusal(*multipart_body(AUDIO, model="whisper-1", **{"known_speaker_names[]": ["a"]}), Task.TRANSLATE)
    assert refused.code == "unknown_parameter"


def test_a_job_takes_known_speakers_checked_as_a_sync_call_s_are() -> None:
    samples = {"known_speaker_names[]": ["a"], "known_speaker_references[]": [SAMPLE]}
    job = parse(*multipart_body(AUDIO, model="whisper-1", response_format="diarized_json", **samples), for_job=True)
    assert job.diarize and job.known_speaker_names == ["a"] and job.known_speaker_references == [SAMPLE]
    bad = {"known_speaker_names[]": ["a"], "known_speaker_references[]": ["data:audio/wav;base64,@@@"]}
    refused = refusal(*multipart_body(AUDIO, model="whisper-1", response_format="diarized_json", **bad), for_job=True)
    assert refused.code == "invalid_speaker_reference"
    refused = refusal(*multipart_body(AUDIO, model="whisper-1", **samples), for_job=True)  # json: no speakers
    assert refused.code == "invalid_known_speakers"
    refused = refusal(*multipart_body(AUDIO, model="whisper-1", **samples), Task.TRANSLATE, for_job=True)
    assert refused.code == "unknown_parameter"


# --- price --------------------------------------------------------------------------------------------------------


def test_the_surcharge_is_a_credit_per_started_block_of_diarized_audio() -> None:
    pricing = Pricing(seconds_per_credit=5, min_credits_per_request=1, diarization_seconds_per_credit=10)
    assert pricing.credits_for(12.0) == 3
    assert pricing.credits_for(12.0, diarize=True) == 3 + 2
    assert pricing.credits_for(10.0, diarize=True) == 2 + 1
    assert pricing.credits_for(0.0, diarize=True) == 1  # the minimum, and no block started
    assert Pricing(seconds_per_credit=5, min_credits_per_request=1).credits_for(12.0, diarize=True) == 3


# --- the use case -------------------------------------------------------------------------------------------------


def _service(
    answer: InferenceResult, max_sync_diarized_audio_seconds: float | None = None
) -> tuple[TranscriptionService, FakeCredits, FakeRealtimeEndpoint]:
    terms = TranscriptionTerms(
        catalog=ModelCatalog("whisper-large-v3", {"gpt-4o-transcribe-diarize": "whisper-1"}),
        pricing=Pricing(seconds_per_credit=5.0, min_credits_per_request=1, diarization_seconds_per_credit=10.0),
        max_audio_seconds=4 * 3600.0,
        max_sync_audio_seconds=300.0,
        min_audio_sample_rate=8_000,
    )
    ledger = FakeCredits(balances={KEY.key_hash: 100})
    endpoint = FakeRealtimeEndpoint(answer)
    service = TranscriptionService(
        terms, ledger, endpoint, FakeAudio(), max_sync_diarized_audio_seconds=max_sync_diarized_audio_seconds
    )
    return service, ledger, endpoint


DIARIZED_12S = InferenceResult(
    text="Hello there.",
    language="en",
    duration=12.0,
    segments=[segment(0, 0.0, 12.0, " Hello there.")],
    words=[],
    speaker_turns=[SpeakerTurn(speaker="agent", start=0.0, end=12.0)],
)


def test_a_diarized_request_asks_the_model_for_speakers_and_pays_the_surcharge() -> None:
    from infery.domain.transcription import LoadedAudio

    service, ledger, endpoint = _service(DIARIZED_12S)
    options = TranscriptionOptions(
        task=Task.TRANSCRIBE,
        model="gpt-4o-transcribe-diarize",
        response_format=ResponseFormat.DIARIZED_JSON,
        known_speaker_names=["agent"],
        known_speaker_references=[SAMPLE],
    )
    outcome = service.transcribe(KEY, options, LoadedAudio.inline(AUDIO), request_id="req-1")
    sent = endpoint.requests[-1]
    assert sent.diarize is True
    assert [(speaker.name, speaker.audio) for speaker in sent.known_speakers] == [("agent", SAMPLE.split(",")[1])]
    assert outcome.credits_used == 3 + 2
    reserved = next(entry for entry in ledger.entries if entry.kind.value == "reserve")
    assert -reserved.credits >= 3 + 2  # the reservation covers the surcharge too
    body = outcome.rendered.body
    assert isinstance(body, dict) and body["segments"][0]["speaker"] == "agent"
    assert json.dumps(body)


def test_a_plain_request_asks_for_no_speakers_and_pays_no_surcharge() -> None:
    from infery.domain.transcription import LoadedAudio

    plain = DIARIZED_12S.model_copy(update={"speaker_turns": None, "words": None})
    service, _, endpoint = _service(plain)
    options = TranscriptionOptions(task=Task.TRANSCRIBE, model="whisper-1")
    outcome = service.transcribe(KEY, options, LoadedAudio.inline(AUDIO), request_id="req-2")
    assert endpoint.requests[-1].diarize is False and endpoint.requests[-1].known_speakers == []
    assert outcome.credits_used == 3


# --- the synchronous ceiling --------------------------------------------------------------------------------------

DIARIZED = TranscriptionOptions(
    task=Task.TRANSCRIBE, model="gpt-4o-transcribe-diarize", response_format=ResponseFormat.DIARIZED_JSON
)


def test_a_sync_call_asking_for_speakers_is_held_to_the_lower_ceiling_before_anything_is_reserved() -> None:
    from infery.domain.transcription import LoadedAudio

    service, ledger, endpoint = _service(DIARIZED_12S, max_sync_diarized_audio_seconds=30.0)
    with pytest.raises(InvalidRequest) as refused:
        service.transcribe(KEY, DIARIZED, LoadedAudio.inline(silent_wav(8000, 31.0)), request_id="req-3")
    assert refused.value.code == "audio_too_long_for_sync" and refused.value.param == "file"
    assert "asks for speakers" in refused.value.message and "at most 30 s" in refused.value.message
    assert ledger.entries == [] and endpoint.requests == []
    # the same audio without speakers is under the plain ceiling (300 s)
    plain = TranscriptionOptions(task=Task.TRANSCRIBE, model="whisper-1")
    service.transcribe(KEY, plain, LoadedAudio.inline(silent_wav(8000, 31.0)), request_id="req-4")
    assert endpoint.requests[-1].max_sync_audio_seconds == 300.0


def test_a_sync_call_asking_for_speakers_sends_the_model_the_lower_ceiling() -> None:
    """The model refuses audio past it too: a file whose header does not say its length is stopped there."""
    from infery.domain.transcription import LoadedAudio

    service, ledger, endpoint = _service(DIARIZED_12S, max_sync_diarized_audio_seconds=30.0)
    service.transcribe(KEY, DIARIZED, LoadedAudio.inline(silent_wav(8000, 12.0)), request_id="req-5")
    sent = endpoint.requests[-1]
    assert sent.diarize is True and sent.max_sync_audio_seconds == 30.0 and sent.max_audio_seconds <= 30.0


def test_a_diarized_ceiling_above_the_plain_one_changes_nothing() -> None:
    from infery.domain.transcription import LoadedAudio

    service, _, endpoint = _service(DIARIZED_12S, max_sync_diarized_audio_seconds=900.0)
    service.transcribe(KEY, DIARIZED, LoadedAudio.inline(silent_wav(8000, 12.0)), request_id="req-6")
    assert endpoint.requests[-1].max_sync_audio_seconds == 300.0
