"""Audio that would make the model work without end is refused by the API before any credit is held.

A WAV header that says 1 Hz turns 4 KB into 2,000 s of decoded audio; audio longer than the deployment's maximum
would occupy the model for hours. Both are 400s, before the endpoint is called and before anything is reserved.
"""

from __future__ import annotations

import pytest

from tests.support.api import assert_error
from tests.support.model_replies import MODEL_ERROR_500, MODEL_ERROR_HEADERS
from tests.support.speech import one_hertz_wav, silent_wav

SEEDED = 500


@pytest.fixture
def refusing_endpoint(fake_runtime, accounts):
    url, fake = fake_runtime(424, MODEL_ERROR_500, MODEL_ERROR_HEADERS)
    with accounts.new_key_refused_before_the_model(SEEDED, fake) as api_key:
        yield url, api_key


@pytest.mark.parametrize(
    ("audio", "filename"),
    [
        pytest.param(one_hertz_wav(), "bomb.wav", id="4-KB-WAV-saying-1-Hz"),
        pytest.param(one_hertz_wav(8000), "bomb.wav", id="8-KB-WAV-saying-1-Hz"),
        pytest.param(silent_wav(4000, 3), "phone.wav", id="4-kHz-WAV"),
    ],
)
def test_a_sample_rate_under_8_khz_is_400_before_anything_is_reserved(refusing_endpoint, load_api, audio, filename):
    url, api_key = refusing_endpoint
    reply = load_api(url).transcribe(api_key, audio, filename=filename)
    assert_error(reply, 400, "sample_rate_too_low", param="file", error_type="invalid_request_error")
    assert "8000 Hz" in reply.json()["error"]["message"]


def test_audio_longer_than_the_maximum_is_400_before_anything_is_reserved(refusing_endpoint, load_api):
    url, api_key = refusing_endpoint
    api = load_api(url, MAX_JOB_AUDIO_SECONDS="60")
    reply = api.transcribe(api_key, silent_wav(8000, 61), filename="long.wav")
    assert_error(reply, 400, "audio_too_long", param="file", error_type="invalid_request_error")
    assert "at most 1 minute per file" in reply.json()["error"]["message"]


def test_audio_at_exactly_8_khz_and_the_maximum_duration_reaches_the_model(fake_runtime, load_api, accounts):
    url, fake = fake_runtime(200, {"text": "", "language": "en", "duration": 60.0, "segments": []})
    api_key, _ = accounts.new_key(SEEDED)
    reply = load_api(url, MAX_JOB_AUDIO_SECONDS="60").transcribe(api_key, silent_wav(8000, 60), filename="limit.wav")
    assert reply.status == 200, reply.text
    assert fake.calls == 1
