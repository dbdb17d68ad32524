"""Every client mistake gets a clear OpenAI-shaped error with an x-request-id, never a 500, and costs nothing."""

from __future__ import annotations

import base64
import io
import struct

import openai
import pytest
import requests

from tests.support.speech import mono_wav
from tests.support.stack import RunningStack, start_stack, stop_stack

pytestmark = pytest.mark.e2e


def _wav_of_size(total_bytes: int) -> bytes:
    """A valid 16 kHz mono WAV of silence, ``total_bytes`` long (its header is 44 bytes)."""
    return mono_wav(bytes(total_bytes - 44), 16_000)


def _assert_openai_error(response: requests.Response, status: int, code: str | None, param: str | None = None):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("x-request-id")
    assert "x-infery-credits-used" not in response.headers
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def _auth(stack: RunningStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.api_key}"}


def _multipart(stack, files=None, data=None, headers=None, path="/audio/transcriptions"):
    return requests.post(
        f"{stack.base_url}{path}",
        files=files,
        data=data,
        timeout=60,
        headers=_auth(stack) if headers is None else headers,
    )


@pytest.fixture(scope="module")
def wav_bytes(speech_files) -> bytes:
    return speech_files["wav"].read_bytes()


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "invalid_api_key"),
        ({"Authorization": "Bearer sk-proj-abcdefghijklmnopqrstuvwxyz"}, "invalid_api_key"),
        ({"Authorization": "Bearer inf_thiskeywasneverissuedbyanyone0000"}, "invalid_api_key"),
    ],
)
def test_missing_or_wrong_key_is_401(stack, wav_bytes, headers, code):
    response = _multipart(stack, files={"file": ("a.wav", wav_bytes)}, data={"model": "whisper-1"}, headers=headers)
    error = _assert_openai_error(response, 401, code)
    assert "thiskeywasneverissuedbyanyone0000" not in error["message"]  # the key is masked, never echoed


def test_sdk_raises_authentication_error_for_a_wrong_key(stack, speech_files):
    with pytest.raises(openai.AuthenticationError) as raised, speech_files["wav"].open("rb") as audio:
        stack.client(api_key="inf_wrongwrongwrongwrongwrong").audio.transcriptions.create(model="whisper-1", file=audio)
    assert raised.value.status_code == 401


@pytest.mark.parametrize(
    ("fields", "status", "code", "param"),
    [
        ({"model": "gpt-5-transcribe"}, 400, "model_not_found", "model"),
        ({"model": "whisper-1", "language": "xx"}, 400, "invalid_value", "language"),
        ({"model": "whisper-1", "language": "fr"}, 400, "unsupported_language", "language"),  # tiny.en is English-only
        ({"model": "whisper-1", "response_format": "xml"}, 400, "invalid_value", "response_format"),
        ({"model": "whisper-1", "temperature": "7"}, 400, "invalid_value", "temperature"),
        ({"model": "whisper-1", "stream": "perhaps"}, 400, "invalid_value", "stream"),
        ({"model": "whisper-1", "stream": "true", "response_format": "vtt"}, 400, "invalid_value", "stream"),
        ({}, 400, "missing_model", "model"),
    ],
)
def test_bad_fields_are_400(stack, wav_bytes, fields, status, code, param):
    response = _multipart(stack, files={"file": ("speech.wav", wav_bytes)}, data=fields)
    _assert_openai_error(response, status, code, param)


def test_missing_file_is_400(stack):
    response = _multipart(stack, files={"model": (None, "whisper-1")})
    _assert_openai_error(response, 400, "missing_audio", "file")


def test_empty_file_is_400(stack):
    response = _multipart(stack, files={"file": ("empty.mp3", b"")}, data={"model": "whisper-1"})
    _assert_openai_error(response, 400, "empty_file", "file")


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("notes.mp3", b"these are meeting notes, not audio at all" * 20),
        ("picture.wav", b"\x89PNG\r\n\x1a\n" + bytes(400)),
        ("paper.m4a", b"%PDF-1.7\n" + bytes(400)),
        ("stream.aac", bytes([0xFF, 0xF1, 0x50, 0x80]) + bytes(400)),  # ADTS AAC: audio, but not a supported format
    ],
)
def test_bytes_that_are_not_supported_audio_are_415_whatever_the_name(stack, filename, content):
    response = _multipart(stack, files={"file": (filename, content)}, data={"model": "whisper-1"})
    _assert_openai_error(response, 415, "unsupported_audio_format", "file")


def test_corrupt_audio_with_a_valid_header_is_400_not_500(stack):
    corrupt = b"RIFF" + struct.pack("<I", 1000) + b"WAVE" + b"garbage, not chunks" * 40
    response = _multipart(stack, files={"file": ("broken.wav", corrupt)}, data={"model": "whisper-1"})
    _assert_openai_error(response, 400, "undecodable_audio", "file")


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"model": "whisper-1", "audio": "this is not base64!!"}, "invalid_base64", "audio"),
        ({"model": "whisper-1", "file_base64": "@@@@", "filename": "a.mp3"}, "invalid_base64", "file_base64"),
        ({"model": "whisper-1", "audio": 12345}, "invalid_base64", "audio"),
        ({"model": "whisper-1"}, "missing_audio", "audio"),
        ({"model": "whisper-1", "audio": ""}, "empty_file", "file"),
        ({"model": "whisper-1", "audio": "QUJD", "file_base64": "QUJD"}, "ambiguous_audio", "audio"),
    ],
)
def test_bad_json_base64_bodies_are_400(stack, body, code, param):
    response = requests.post(f"{stack.base_url}/audio/transcriptions", json=body, headers=_auth(stack), timeout=30)
    _assert_openai_error(response, 400, code, param)


def test_malformed_json_is_400(stack):
    response = requests.post(
        f"{stack.base_url}/audio/transcriptions",
        data=b'{"model": "whisper-1", "audio": ',
        headers={**_auth(stack), "Content-Type": "application/json"},
        timeout=30,
    )
    _assert_openai_error(response, 400, "invalid_json")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "audio/mpeg"])
def test_wrong_content_type_is_415(stack, wav_bytes, content_type):
    response = requests.post(
        f"{stack.base_url}/audio/transcriptions",
        data=wav_bytes,
        headers={**_auth(stack), "Content-Type": content_type},
        timeout=30,
    )
    _assert_openai_error(response, 415, "unsupported_content_type")


def test_audio_over_the_sync_limit_is_413_naming_the_limit_and_the_upload_flow(stack):
    # 4.3 MB: inside API Gateway's and Lambda's limits, so this is the handler's own 413
    response = _multipart(stack, files={"file": ("long.wav", _wav_of_size(4_300_000))}, data={"model": "whisper-1"})
    error = _assert_openai_error(response, 413, "audio_too_large", "file")
    # and what an upload (a job) takes: a deployment's MaxJobBytes, 1 GB
    assert "4.2 MB" in error["message"] and "/v1/uploads" in error["message"] and "1000 MB" in error["message"]


def test_request_over_the_api_gateway_limit_is_413_in_openai_shape(stack):
    response = _multipart(stack, files={"file": ("huge.wav", _wav_of_size(11_000_000))}, data={"model": "whisper-1"})
    error = _assert_openai_error(response, 413, "audio_too_large", "file")
    assert "/v1/uploads" in error["message"]


def test_json_body_over_the_lambda_payload_limit_is_413(stack):
    encoded = base64.b64encode(_wav_of_size(4_800_000)).decode()  # 6.4 MB of JSON
    response = requests.post(
        f"{stack.base_url}/audio/transcriptions",
        json={"model": "whisper-1", "audio": encoded},
        headers=_auth(stack),
        timeout=60,
    )
    _assert_openai_error(response, 413, "audio_too_large")


def test_sdk_surfaces_413_as_an_api_status_error(stack):
    with pytest.raises(openai.APIStatusError) as raised:
        stack.client().audio.transcriptions.create(
            model="whisper-1", file=("long.wav", io.BytesIO(_wav_of_size(4_300_000)))
        )
    assert raised.value.status_code == 413


def test_unknown_url_and_wrong_method_are_404_in_openai_shape(stack):
    for method, path in [("GET", "/audio/speech"), ("GET", "/audio/transcriptions"), ("POST", "/models")]:
        response = requests.request(method, f"{stack.base_url}{path}", headers=_auth(stack), timeout=10)
        _assert_openai_error(response, 404, "unknown_url")


def test_unknown_model_id_is_404(stack):
    response = requests.get(f"{stack.base_url}/models/whisper-9000", headers=_auth(stack), timeout=10)
    _assert_openai_error(response, 404, "model_not_found", "model")


def test_language_is_refused_on_translations(stack, wav_bytes):
    response = _multipart(
        stack,
        files={"file": ("speech.wav", wav_bytes)},
        data={"model": "whisper-1", "language": "en"},
        path="/audio/translations",
    )
    _assert_openai_error(response, 400, "unknown_parameter", "language")


def test_a_key_short_of_credits_gets_402_and_keeps_its_balance(speech_files):
    # A stack of its own: its key holds 2 credits and the 11.7 s clip costs 3.
    process, poor = start_stack(credits=2)
    try:
        with pytest.raises(openai.APIStatusError) as raised, speech_files["wav"].open("rb") as audio:
            poor.client().audio.transcriptions.create(model="whisper-1", file=audio)
        assert raised.value.status_code == 402
        body = raised.value.response.json()["error"]
        assert body["type"] == "insufficient_quota" and body["code"] == "insufficient_credits"
        assert raised.value.response.headers["x-infery-credits-balance"] == "2"
        # a short clip (1 credit) still goes through, and the balance ends at exactly 1
        response = requests.post(
            f"{poor.base_url}/audio/transcriptions",
            timeout=60,
            headers={"Authorization": f"Bearer {poor.api_key}"},
            files={"file": ("short.wav", _wav_of_size(64_044))},
            data={"model": "whisper-1"},
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-infery-credits-used"] == "1"
        assert response.headers["x-infery-credits-balance"] == "1"
    finally:
        stop_stack(process)
