from __future__ import annotations

import base64

import pytest
from infery.audio import AudioFormat
from infery.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from infery.inference import Task
from infery.transcription_request import ResponseFormat, parse_transcription_request

from tests.unit.builders import json_body, multipart_body

LIMIT = 4 * 1024 * 1024
UPLOAD_LIMIT = 25_000_000


@pytest.fixture(scope="module")
def wav(speech_files) -> bytes:
    return speech_files["wav"].read_bytes()


def parse(content_type, body, task=Task.TRANSCRIBE, limit=LIMIT):
    return parse_transcription_request(task, content_type, body, max_audio_bytes=limit, max_upload_bytes=UPLOAD_LIMIT)


def test_multipart_as_the_openai_sdk_sends_it(wav):
    request = parse(*multipart_body(wav, model="whisper-1", language="EN", prompt="Quarterly report",
                                    response_format="verbose_json", temperature="0.2",
                                    **{"timestamp_granularities[]": ["word", "segment"]}))
    assert request.audio == wav and request.audio_format is AudioFormat.WAV and request.filename == "speech.wav"
    assert (request.model, request.language, request.prompt) == ("whisper-1", "en", "Quarterly report")
    assert request.response_format is ResponseFormat.VERBOSE_JSON and request.temperature == 0.2
    assert request.timestamp_granularities == ["word", "segment"] and request.word_timestamps


def test_defaults(wav):
    request = parse(*multipart_body(wav, model="whisper-1"))
    assert request.response_format is ResponseFormat.JSON
    assert request.timestamp_granularities == ["segment"] and not request.word_timestamps
    assert request.language is None and request.temperature is None


def test_word_timestamps_only_for_verbose_json(wav):
    request = parse(*multipart_body(wav, model="whisper-1", response_format="json",
                                    **{"timestamp_granularities[]": ["word"]}))
    assert not request.word_timestamps


@pytest.mark.parametrize("spelling", ["audio", "file_base64"])
def test_json_base64_in_both_spellings(wav, spelling):
    request = parse(*json_body(wav, spelling, model="whisper-1", filename="meeting.wav", response_format="srt"))
    assert request.audio == wav and request.response_format is ResponseFormat.SRT


def test_json_accepts_a_data_url_and_line_wrapped_base64(wav):
    encoded = base64.encodebytes(wav).decode()  # wrapped at 76 characters
    body = f'{{"model": "whisper-1", "audio": "data:audio/wav;base64,{encoded.replace(chr(10), chr(92) + "n")}"}}'
    assert parse("application/json", body.encode()).audio == wav


def _refused(content_type, body, task=Task.TRANSCRIBE, limit=LIMIT):
    with pytest.raises((InvalidRequest, PayloadTooLarge, UnsupportedMediaType)) as raised:
        parse(content_type, body, task, limit)
    return raised.value


@pytest.mark.parametrize(("fields", "param", "code"), [
    ({}, "model", "missing_model"),
    ({"model": ""}, "model", "invalid_value"),
    ({"model": "whisper-1", "response_format": "xml"}, "response_format", "invalid_value"),
    ({"model": "whisper-1", "response_format": "diarized_json"}, "response_format", "invalid_value"),
    ({"model": "whisper-1", "language": "xx"}, "language", "invalid_value"),
    ({"model": "whisper-1", "temperature": "2"}, "temperature", "invalid_value"),
    ({"model": "whisper-1", "temperature": "hot"}, "temperature", "invalid_value"),
    ({"model": "whisper-1", "timestamp_granularities[]": "sentence"}, "timestamp_granularities", "invalid_value"),
    ({"model": "whisper-1", "stream": "true"}, "stream", "unknown_parameter"),
    ({"model": "whisper-1", "foo": "bar"}, "foo", "unknown_parameter"),
])
def test_bad_multipart_fields_are_400(wav, fields, param, code):
    error = _refused(*multipart_body(wav, **fields))
    assert (error.status_code, error.param, error.code) == (400, param, code)
    assert param in error.message


def test_language_is_not_a_translation_field(wav):
    error = _refused(*multipart_body(wav, model="whisper-1", language="en"), task=Task.TRANSLATE)
    assert (error.status_code, error.param, error.code) == (400, "language", "unknown_parameter")


def test_multipart_without_a_file_is_400():
    error = _refused(*multipart_body(None, model="whisper-1"))
    assert (error.status_code, error.param, error.code) == (400, "file", "missing_audio")


@pytest.mark.parametrize(("body", "param", "code"), [
    (b'{"model": "whisper-1"}', "audio", "missing_audio"),
    (b'{"model": "whisper-1", "audio": "not base64!"}', "audio", "invalid_base64"),
    (b'{"model": "whisper-1", "file_base64": "QUJ"}', "file_base64", "invalid_base64"),
    (b'{"model": "whisper-1", "audio": 42}', "audio", "invalid_base64"),
    (b'{"model": "whisper-1", "audio": "QUJD", "file_base64": "QUJD"}', "audio", "ambiguous_audio"),
    (b'{"model": "whisper-1", "audio": "QUJD", "filename": 3}', "filename", None),
    (b'[1, 2]', None, "invalid_json"),
    (b'{"model": ', None, "invalid_json"),
    (b'\xff\xfe', None, "invalid_json"),
])
def test_bad_json_bodies_are_400(body, param, code):
    error = _refused("application/json", body)
    assert error.status_code == 400 and error.param == param
    if code:
        assert error.code == code


def test_json_audio_that_decodes_to_nothing_is_an_empty_file():
    error = _refused(*json_body(b"", model="whisper-1"))
    assert (error.status_code, error.code) == (400, "empty_file")


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "audio/mpeg", "application/x-www-form-urlencoded"])
def test_other_content_types_are_415(wav, content_type):
    error = _refused(content_type, wav)
    assert (error.status_code, error.code) == (415, "unsupported_content_type")


def test_a_broken_multipart_body_is_400(wav):
    _, body = multipart_body(wav, model="whisper-1")
    error = _refused("multipart/form-data; boundary=not-the-real-boundary", body)
    assert (error.status_code, error.code) == (400, "invalid_multipart")


@pytest.mark.parametrize("build", [multipart_body, json_body])
def test_audio_over_the_limit_is_413_naming_the_limit_and_the_upload_flow(build):
    audio = b"RIFF" + bytes(4) + b"WAVE" + bytes(2_000_000)
    error = _refused(*build(audio, model="whisper-1"), limit=1_000_000)
    assert (error.status_code, error.code, error.param) == (413, "audio_too_large", "file")
    assert "1.0 MB" in error.message and "POST /v1/uploads" in error.message and "25 MB" in error.message


def test_audio_just_under_the_limit_is_accepted():
    audio = b"RIFF" + bytes(4) + b"WAVE" + bytes(999_988)
    assert len(parse(*multipart_body(audio, model="whisper-1"), limit=1_000_000).audio) == 1_000_000
