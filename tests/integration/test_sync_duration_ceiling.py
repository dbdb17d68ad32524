"""A synchronous call refuses audio the model cannot finish before the API's deadline, before anything is reserved.

Past its deadline a synchronous call answers 504 and refunds in full: without this ceiling an hour of low-bitrate
audio, sent again and again, kept the model busy for free. Jobs have no such deadline and take the same audio.
"""

from __future__ import annotations

import json

import pytest
from infery.domain.audio import AudioFormat
from infery.domain.duration import probe_duration

from tests.support.api import assert_error
from tests.support.speech import eight_bit_wav, silent_wav, synthesize_wav

SEEDED = 500


def _answer(seconds: float) -> dict:
    return {"text": "", "language": "en", "duration": seconds, "segments": []}


@pytest.fixture
def refusing_endpoint(fake_runtime, accounts):
    url, fake = fake_runtime(200, _answer(1.0))
    api_key, item = accounts.new_key(SEEDED)
    with accounts.refused_before_the_model(item, SEEDED, fake):
        yield url, api_key


def test_eight_minutes_in_4_mib_is_refused_by_the_default_ceiling_before_anything_is_reserved(
    refusing_endpoint, load_api
):
    url, api_key = refusing_endpoint
    audio = eight_bit_wav(520)
    assert len(audio) <= 4 * 1024 * 1024  # it fits the synchronous size limit: only its duration is refused
    reply = load_api(url).transcribe(api_key, audio, filename="long.wav")
    assert_error(reply, 400, "audio_too_long_for_sync", param="file", error_type="invalid_request_error")
    message = reply.json()["error"]["message"]
    assert "520 s" in message and "300 s" in message
    assert "/v1/audio/transcriptions/jobs" in message and "nothing was charged" in message.lower()


def test_the_json_body_and_translations_are_held_to_the_same_ceiling(refusing_endpoint, load_api):
    url, api_key = refusing_endpoint
    api = load_api(url, MAX_SYNC_AUDIO_SECONDS="30")
    reply = api.transcribe_json(api_key, silent_wav(8000, 31))
    assert_error(reply, 400, "audio_too_long_for_sync", param="file")
    reply = api.transcribe(api_key, silent_wav(8000, 31), path="/v1/audio/translations")
    assert_error(reply, 400, "audio_too_long_for_sync", param="file")


def test_audio_at_the_ceiling_reaches_the_model_with_the_ceiling_it_must_keep(fake_runtime, load_api, accounts):
    url, fake = fake_runtime(200, _answer(30.0))
    api_key, item = accounts.new_key(SEEDED)
    reply = load_api(url, MAX_SYNC_AUDIO_SECONDS="30").transcribe(api_key, silent_wav(8000, 30))
    assert reply.status == 200, reply.text
    sent = json.loads(fake.requests[0]["body"])
    assert sent["max_sync_audio_seconds"] == 30.0
    assert sent["max_audio_seconds"] <= 30.0  # the reservation never covers more than the ceiling
    assert accounts.balance(item) == SEEDED - 6


def test_a_call_that_asks_for_speakers_is_held_to_the_deployments_lower_ceiling(refusing_endpoint, load_api):
    url, api_key = refusing_endpoint
    api = load_api(url, MAX_SYNC_DIARIZED_AUDIO_SECONDS="20")
    for fields in (
        {"response_format": "diarized_json"},
        {"model": "gpt-4o-transcribe-diarize", "response_format": "vtt"},
    ):
        reply = api.transcribe(api_key, silent_wav(8000, 21), **fields)
        assert_error(reply, 400, "audio_too_long_for_sync", param="file")
        assert "speakers" in reply.json()["error"]["message"] and "20 s" in reply.json()["error"]["message"]


def test_the_lower_ceiling_reaches_the_model_of_a_call_that_asks_for_speakers(fake_runtime, load_api, accounts):
    answer = {**_answer(20.0), "words": [], "speaker_turns": []}
    url, fake = fake_runtime(200, answer)
    api_key, _ = accounts.new_key(SEEDED)
    reply = load_api(url).transcribe(api_key, silent_wav(8000, 20), response_format="diarized_json")
    assert reply.status == 200, reply.text
    assert json.loads(fake.requests[0]["body"])["max_sync_audio_seconds"] == 30.0  # the default


def test_a_job_takes_audio_longer_than_the_synchronous_ceiling(refusing_endpoint, load_api):
    url, api_key = refusing_endpoint
    reply = load_api(url, MAX_SYNC_AUDIO_SECONDS="30").transcribe(
        api_key, silent_wav(8000, 31), path="/v1/audio/transcriptions/jobs"
    )
    assert reply.status == 202, reply.text


def test_the_model_refuses_audio_past_the_ceiling_when_the_header_does_not_say(load_api, model_server_url, accounts):
    """A WebM recorded live declares no duration: the reservation is bounded by the ceiling, the model stops
    decoding there, and the client gets the same refusal, charged nothing."""
    from tests.support.speech import encode

    api_key, item = accounts.new_key(SEEDED)
    speech = synthesize_wav("One two three four five six seven eight nine ten. " * 8)
    webm = encode(speech, "webm")
    live = _without_duration(webm)
    assert probe_duration(live, AudioFormat.WEBM) is None  # so only the model can find out
    reply = load_api(model_server_url, MAX_SYNC_AUDIO_SECONDS="10").transcribe(api_key, live, filename="live.webm")
    assert_error(reply, 400, "audio_too_long_for_sync", param="file")
    accounts.assert_untouched(item, SEEDED)


def _without_duration(webm: bytes) -> bytes:
    """The WebM with its Info's Duration element renamed to a Void element (0xEC) of the same size, as a live
    recording writes none."""
    marker = bytes([0x44, 0x89])
    position = webm.index(marker)
    size_byte = webm[position + 2]
    assert size_byte & 0x80, "a one-byte size is expected"
    length = size_byte & 0x7F
    # Void (0xEC) with a size covering the rest of the old element: same total length
    return webm[:position] + bytes([0xEC, 0x80 | (length + 1)]) + bytes(length + 1) + webm[position + 3 + length :]
