"""Through the local stack: a WAV whose header says 0 bits per sample and a WebM whose audio track says 1 Hz are
400s before any credit is held, on the synchronous call and at job creation, whether sent or uploaded first."""

from __future__ import annotations

import pytest
import requests

from tests.support.media_headers import webm_declaring, zero_bit_wav
from tests.support.stack import RunningStack

pytestmark = pytest.mark.e2e

BAD_MEDIA = [
    pytest.param(zero_bit_wav(), "bad.wav", "undecodable_audio", id="wav-0-bits-per-sample"),
    pytest.param(webm_declaring(1.0), "bad.webm", "sample_rate_too_low", id="webm-1-hz"),
]


@pytest.fixture(scope="module")
def key(stack: RunningStack) -> tuple[str, str]:
    return stack.create_key("bad-headers", 20)


def _assert_refused(response: requests.Response, code: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code and response.json()["error"]["param"] == "file"
    assert "x-infery-credits-used" not in response.headers


def _assert_nothing_charged(stack: RunningStack, key_id: str) -> None:
    assert [entry["kind"] for entry in stack.ledger(key_id)] == ["topup"]
    assert stack.jobs_of(key_id) == []


@pytest.mark.parametrize(("audio", "filename", "code"), BAD_MEDIA)
@pytest.mark.parametrize("path", ["/audio/transcriptions", "/audio/transcriptions/jobs"])
def test_a_file_sent_with_the_request_is_refused(stack, key, audio, filename, code, path):
    key_id, api_key = key
    response = requests.post(
        f"{stack.base_url}{path}",
        files={"file": (filename, audio)},
        data={"model": "whisper-1"},
        headers=stack.headers(api_key),
        timeout=60,
    )
    _assert_refused(response, code)
    _assert_nothing_charged(stack, key_id)


@pytest.mark.parametrize(("audio", "filename", "code"), BAD_MEDIA)
@pytest.mark.parametrize("path", ["/audio/transcriptions", "/audio/transcriptions/jobs"])
def test_an_uploaded_file_is_refused(stack, key, audio, filename, code, path):
    key_id, api_key = key
    upload = requests.post(
        f"{stack.base_url}/uploads", json={"start_job": False}, headers=stack.headers(api_key), timeout=60
    ).json()
    posted = requests.post(upload["upload_url"], data=upload["fields"], files={"file": (filename, audio)}, timeout=60)
    assert posted.status_code in (200, 201, 204), posted.text
    response = requests.post(
        f"{stack.base_url}{path}",
        json={"model": "whisper-1", "upload_id": upload["id"]},
        headers=stack.headers(api_key),
        timeout=60,
    )
    _assert_refused(response, code)
    _assert_nothing_charged(stack, key_id)
