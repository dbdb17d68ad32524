"""Client mistakes through the real handler: a clear OpenAI-shaped 4xx, never a 500, never the model, never a charge.

The endpoint here is a stand-in that always fails and counts its calls, so a request that reached it would show.
"""

from __future__ import annotations

import json

import pytest

from tests.support.api import TRANSCRIPTIONS, TRANSLATIONS, assert_error
from tests.support.builders import multipart_body
from tests.support.model_replies import MODEL_ERROR_500, MODEL_ERROR_HEADERS

WAV_HEADER_ONLY = b"RIFF\x24\x00\x00\x00WAVE"  # sniffs as WAV; refused before it would be decoded
SEEDED = 50


@pytest.fixture
def refusing(fake_runtime, load_api, accounts):
    url, fake = fake_runtime(424, MODEL_ERROR_500, MODEL_ERROR_HEADERS)
    with accounts.new_key_refused_before_the_model(SEEDED, fake) as api_key:
        yield load_api(url), api_key


@pytest.mark.parametrize(
    ("audio", "fields", "path", "status", "code", "param"),
    [
        pytest.param(
            WAV_HEADER_ONLY, {"model": "whisper-7"}, TRANSCRIPTIONS, 400, "model_not_found", "model", id="unknown-model"
        ),
        pytest.param(
            WAV_HEADER_ONLY,
            {"model": "gpt-5-transcribe"},
            TRANSLATIONS,
            400,
            "model_not_found",
            "model",
            id="unknown-model-translation",
        ),
        pytest.param(
            b"just some text, no audio at all",
            {},
            TRANSCRIPTIONS,
            415,
            "unsupported_audio_format",
            "file",
            id="not-audio",
        ),
        pytest.param(
            b"\x89PNG\r\n\x1a\n" + bytes(64),
            {},
            TRANSCRIPTIONS,
            415,
            "unsupported_audio_format",
            "file",
            id="png-image",
        ),
        pytest.param(b"", {}, TRANSCRIPTIONS, 400, "empty_file", "file", id="empty-file"),
        pytest.param(None, {}, TRANSCRIPTIONS, 400, "missing_audio", "file", id="no-file"),
        pytest.param(
            WAV_HEADER_ONLY,
            {"response_format": "xml"},
            TRANSCRIPTIONS,
            400,
            "invalid_value",
            "response_format",
            id="bad-response-format",
        ),
        pytest.param(
            WAV_HEADER_ONLY, {"language": "xx"}, TRANSCRIPTIONS, 400, "invalid_value", "language", id="unknown-language"
        ),
        pytest.param(
            WAV_HEADER_ONLY,
            {"temperature": "7"},
            TRANSCRIPTIONS,
            400,
            "invalid_value",
            "temperature",
            id="temperature-out-of-range",
        ),
        pytest.param(
            WAV_HEADER_ONLY,
            {"stream": "true"},
            TRANSLATIONS,
            400,
            "unknown_parameter",
            "stream",
            id="unknown-parameter",
        ),
        pytest.param(
            WAV_HEADER_ONLY,
            {"language": "en"},
            TRANSLATIONS,
            400,
            "unknown_parameter",
            "language",
            id="language-on-translations",
        ),
    ],
)
def test_multipart_mistakes_are_4xx(refusing, audio, fields, path, status, code, param):
    api, api_key = refusing
    assert_error(
        api.transcribe(api_key, audio, path=path, **fields),
        status,
        code,
        param=param,
        error_type="invalid_request_error",
    )


def test_a_missing_model_field_is_400(refusing):
    api, api_key = refusing
    content_type, payload = multipart_body(WAV_HEADER_ONLY)
    reply = api.call("POST", TRANSCRIPTIONS, body=payload, content_type=content_type, api_key=api_key)
    assert_error(reply, 400, "missing_model", param="model")


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        pytest.param(
            json.dumps({"model": "whisper-1", "audio": "not base64 at all!"}),
            "invalid_base64",
            "audio",
            id="invalid-base64",
        ),
        pytest.param(
            json.dumps({"model": "whisper-1", "audio": "UklGRg=="[:-1]}),
            "invalid_base64",
            "audio",
            id="truncated-base64",
        ),
        pytest.param(
            json.dumps({"model": "whisper-1", "audio": 12345}), "invalid_base64", "audio", id="audio-not-a-string"
        ),
        pytest.param('{"model": "whisper-1", "audio": ', "invalid_json", None, id="broken-json"),
        pytest.param(json.dumps(["whisper-1"]), "invalid_json", None, id="json-not-an-object"),
        pytest.param(json.dumps({"model": "whisper-1"}), "missing_audio", "audio", id="no-audio"),
    ],
)
def test_json_body_mistakes_are_400(refusing, body, code, param):
    api, api_key = refusing
    reply = api.call("POST", TRANSCRIPTIONS, body=body.encode(), content_type="application/json", api_key=api_key)
    assert_error(reply, 400, code, param=param, error_type="invalid_request_error")


@pytest.mark.parametrize("content_type", ["audio/wav", "application/octet-stream", "text/plain", None])
def test_a_body_that_is_neither_multipart_nor_json_is_415(refusing, wav, content_type):
    api, api_key = refusing
    reply = api.call("POST", TRANSCRIPTIONS, body=wav, content_type=content_type, api_key=api_key)
    assert_error(reply, 415, "unsupported_content_type", error_type="invalid_request_error")


def test_a_multipart_body_without_a_boundary_is_400(refusing, wav):
    api, api_key = refusing
    reply = api.call("POST", TRANSCRIPTIONS, body=wav, content_type="multipart/form-data", api_key=api_key)
    assert_error(reply, 400, "invalid_multipart")


def test_audio_over_the_sync_limit_is_413_with_the_upload_hint(fake_runtime, load_api, accounts, wav):
    url, fake = fake_runtime(200, {"never": "called"})
    api = load_api(url, MAX_SYNC_AUDIO_BYTES=str(len(wav) // 2))
    api_key, item = accounts.new_key(SEEDED)
    for reply in (api.transcribe(api_key, wav), api.transcribe_json(api_key, wav)):
        error = assert_error(reply, 413, "audio_too_large", param="file")
        assert "/v1/uploads" in error["message"]
    assert fake.calls == 0
    accounts.assert_untouched(item, SEEDED)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nothing-here"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/audio/transcriptions"),
        ("DELETE", "/v1/models/whisper-1"),
    ],
)
def test_unknown_routes_are_404_in_openai_shape(refusing, method, path):
    api, api_key = refusing
    error = assert_error(
        api.call(method, path, api_key=api_key), 404, "unknown_url", error_type="invalid_request_error"
    )
    assert method in error["message"] and path in error["message"]
