"""Through the real handler: a field sent twice, a JSON number past Python's digit limit, a filename with a bidi
control. Each is a 400 that names what is wrong: not the last value taken, not a 500 that says to retry; the model is
never called and nothing is reserved or charged.
"""

from __future__ import annotations

import base64
import json

import pytest

from tests.support.api import TRANSCRIPTIONS, TRANSLATIONS, assert_error
from tests.support.builders import multipart_body, raw_multipart

SEEDED = 50
BOUNDARY = "b0undary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
UPLOADS = "/v1/uploads"
JOBS = "/v1/audio/transcriptions/jobs"
HUGE_NUMBER = "9" * 5000


@pytest.fixture
def refusing(fake_runtime, load_api, accounts):
    url, fake = fake_runtime(200, {"never": "called"})
    api_key, item = accounts.new_key(SEEDED)
    with accounts.refused_before_the_model(item, SEEDED, fake):
        yield load_api(url), api_key


def text_part(name: str, value: str) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}'.encode()


def file_part(audio: bytes, filename: str = "speech.wav") -> bytes:
    disposition = f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
    return (disposition + "Content-Type: audio/wav\r\n\r\n").encode() + audio


@pytest.mark.parametrize("path", [TRANSCRIPTIONS, TRANSLATIONS, JOBS])
def test_two_files_are_400_ambiguous_audio(refusing, wav, path):
    api, api_key = refusing
    body = raw_multipart(BOUNDARY, text_part("model", "whisper-1"), file_part(wav, "a.wav"), file_part(wav, "b.wav"))
    reply = api.call("POST", path, body=body, content_type=MULTIPART, api_key=api_key)
    assert_error(reply, 400, "ambiguous_audio", param="file", error_type="invalid_request_error")


def test_two_response_formats_are_400_naming_the_field(refusing, wav):
    api, api_key = refusing
    parts = [text_part("model", "whisper-1"), text_part("response_format", "json"), file_part(wav)]
    body = raw_multipart(BOUNDARY, *parts, text_part("response_format", "srt"))
    reply = api.call("POST", TRANSCRIPTIONS, body=body, content_type=MULTIPART, api_key=api_key)
    error = assert_error(reply, 400, "duplicate_parameter", param="response_format")
    assert "response_format" in error["message"]


def test_a_json_key_sent_twice_is_400(refusing, wav):
    api, api_key = refusing
    audio = base64.b64encode(wav).decode()
    body = f'{{"model": "whisper-1", "audio": "{audio}", "model": "whisper-1"}}'.encode()
    reply = api.call("POST", TRANSCRIPTIONS, body=body, content_type="application/json", api_key=api_key)
    assert_error(reply, 400, "duplicate_parameter", param="model")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (TRANSCRIPTIONS, '{"model": "whisper-1", "temperature": NUMBER, "audio": "UklGRg=="}'),
        (TRANSLATIONS, '{"model": "whisper-1", "audio": "UklGRg==", "prompt": NUMBER}'),
        (JOBS, '{"model": "whisper-1", "temperature": -NUMBER}'),
        ("/v1/audio/translations/jobs", "NUMBER"),
        (UPLOADS, '{"start_job": NUMBER}'),
    ],
    ids=["transcriptions", "translations", "transcription-jobs", "translation-jobs", "uploads"],
)
def test_a_5000_digit_json_number_is_400_invalid_json_not_a_500(refusing, path, body):
    api, api_key = refusing
    body = body.replace("NUMBER", HUGE_NUMBER)
    reply = api.call("POST", path, body=body.encode(), content_type="application/json", api_key=api_key)
    error = assert_error(reply, 400, "invalid_json", error_type="invalid_request_error")
    assert "retry" not in error["message"].lower()


@pytest.mark.parametrize("path", [TRANSCRIPTIONS, JOBS])
def test_a_filename_with_a_right_to_left_override_is_400_on_filename(refusing, wav, path):
    api, api_key = refusing
    filename = "invoice\u202evaw.exe"
    content_type, body = multipart_body(wav, filename=filename, model="whisper-1")
    reply = api.call("POST", path, body=body, content_type=content_type, api_key=api_key)
    assert_error(reply, 400, "invalid_value", param="filename")
    payload = {"model": "whisper-1", "audio": base64.b64encode(wav).decode(), "filename": filename}
    reply = api.call("POST", path, body=json.dumps(payload).encode(), content_type="application/json", api_key=api_key)
    assert_error(reply, 400, "invalid_value", param="filename")


def test_an_upload_named_with_an_isolate_is_400_on_filename(refusing):
    api, api_key = refusing
    body = json.dumps({"filename": "report\u2067.wav"}).encode()
    reply = api.call("POST", UPLOADS, body=body, content_type="application/json", api_key=api_key)
    assert_error(reply, 400, "invalid_value", param="filename")
