"""Request bodies that used to pass or crash: repeated fields, numbers past Python's digit limit, bidi filenames.

A field sent twice was taken silently (the last one won); a 5,000-digit number in a JSON body was a 500 that told the
client to retry; a filename with a right-to-left override displayed as another name wherever it was shown.
"""

from __future__ import annotations

import base64
import json

import pytest
from infery.domain.errors import InferyError
from infery.domain.inference import Task
from infery.http.request_parsing import parse_transcription_request, parse_upload_request

from tests.support.builders import multipart_body, raw_multipart

MAX_AUDIO_BYTES = 4 * 1024 * 1024
MAX_UPLOAD_BYTES = 25_000_000
BOUNDARY = "b0undary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
BIDI_CONTROLS = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]


@pytest.fixture(scope="module")
def wav(encoded_audio) -> bytes:
    return encoded_audio["wav"].read_bytes()


def parse(content_type: str, body: bytes | str, *, for_job: bool = False):
    return parse_transcription_request(
        Task.TRANSCRIBE,
        content_type,
        body,
        max_audio_bytes=MAX_AUDIO_BYTES,
        max_upload_bytes=MAX_UPLOAD_BYTES,
        for_job=for_job,
        allow_http_webhooks=True,
    )


def refusal(content_type: str, body: bytes | str, *, for_job: bool = False) -> InferyError:
    with pytest.raises(InferyError) as raised:
        parse(content_type, body, for_job=for_job)
    assert raised.value.status_code == 400
    return raised.value


def upload_refusal(body: bytes | str) -> InferyError:
    with pytest.raises(InferyError) as raised:
        parse_upload_request("application/json", body, "whisper-1", allow_http_webhooks=True)
    assert raised.value.status_code == 400
    return raised.value


def text_part(name: str, value: str) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}'.encode()


def file_part(audio: bytes, filename: str = "speech.wav") -> bytes:
    return (
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + audio


# --- a field sent twice -----------------------------------------------------------------------------------------


def test_two_files_in_one_form_are_ambiguous_audio(wav):
    body = raw_multipart(BOUNDARY, file_part(wav, "a.wav"), file_part(wav, "b.wav"), text_part("model", "whisper-1"))
    error = refusal(MULTIPART, body)
    assert (error.code, error.param) == ("ambiguous_audio", "file")
    assert "more than one 'file'" in error.message


def test_two_upload_ids_in_one_form_are_ambiguous_audio():
    upload_id = "upl_" + "a" * 32
    body = raw_multipart(
        BOUNDARY, text_part("upload_id", upload_id), text_part("upload_id", upload_id), text_part("model", "whisper-1")
    )
    error = refusal(MULTIPART, body)
    assert (error.code, error.param) == ("ambiguous_audio", "upload_id")


@pytest.mark.parametrize("name", ["response_format", "model", "prompt", "temperature", "language"])
def test_a_repeated_field_is_refused_by_name_not_taken_last(wav, name):
    values = {"response_format": "json", "model": "whisper-1", "prompt": "hello", "temperature": "0", "language": "en"}
    parts = [file_part(wav), *(text_part(field, value) for field, value in values.items())]
    body = raw_multipart(BOUNDARY, *parts, text_part(name, values[name]))  # even the same value twice
    error = refusal(MULTIPART, body)
    assert (error.code, error.param) == ("duplicate_parameter", name)
    assert f"more than one '{name}'" in error.message


def test_a_repeated_webhook_url_on_a_job_is_refused(wav):
    hook = "http://127.0.0.1:9/hook"
    parts = [file_part(wav), text_part("model", "whisper-1"), text_part("webhook_url", hook)]
    error = refusal(MULTIPART, raw_multipart(BOUNDARY, *parts, text_part("webhook_url", hook)), for_job=True)
    assert (error.code, error.param) == ("duplicate_parameter", "webhook_url")


def test_the_sdks_repeated_list_parts_still_make_one_list(wav):
    # the openai SDK sends a list as one part per item, each named timestamp_granularities[]
    content_type, body = multipart_body(
        wav,
        model="whisper-1",
        response_format="verbose_json",
        **{"timestamp_granularities[]": ["word", "segment"]},
    )
    request = parse(content_type, body)
    assert request.timestamp_granularities == ["word", "segment"]


def test_an_unknown_list_is_refused_as_unknown_not_as_repeated(wav):
    # a [] name is a list by the SDK's convention: two parts of it are not a repetition
    content_type, body = multipart_body(wav, model="whisper-1", **{"languages[]": ["en", "de"]})
    error = refusal(content_type, body)
    assert (error.code, error.param) == ("unknown_parameter", "languages[]")


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ('{"model": "whisper-1", "model": "whisper-1", "audio": "%s"}', "duplicate_parameter", "model"),
        ('{"model": "whisper-1", "response_format": "json", "response_format": "text", "audio": "%s"}',
         "duplicate_parameter", "response_format"),
        ('{"model": "whisper-1", "audio": "%s", "audio": "%s"}', "ambiguous_audio", "audio"),
        ('{"model": "whisper-1", "file_base64": "%s", "file_base64": "%s"}', "ambiguous_audio", "file_base64"),
    ],
    ids=["model", "response_format", "audio", "file_base64"],
)  # fmt: skip
def test_a_json_key_sent_twice_is_refused(wav, body, code, param):
    encoded = base64.b64encode(wav).decode()
    error = refusal("application/json", body.replace("%s", encoded))
    assert (error.code, error.param) == (code, param)


def test_an_upload_request_with_a_repeated_key_is_refused():
    error = upload_refusal('{"start_job": true, "start_job": false}')
    assert (error.code, error.param) == ("duplicate_parameter", "start_job")


# --- numbers past Python's limit on digits ----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["temperature", "nested", "top-level"])
def test_an_integer_past_pythons_digit_limit_is_invalid_json_everywhere_a_body_is_read(where):
    digits = "9" * 5000
    body = {
        "temperature": '{"model": "whisper-1", "temperature": NUMBER}'.replace("NUMBER", digits),
        "nested": '{"model": "whisper-1", "prompt": [NUMBER]}'.replace("NUMBER", digits),
        "top-level": digits,
    }[where]
    with pytest.raises(ValueError):
        json.loads(body)  # what used to escape as a 500
    for error in (refusal("application/json", body), upload_refusal(body), upload_refusal(body.encode())):
        assert (error.code, error.param) == ("invalid_json", None)
        assert "digits" in error.message


# --- bidi controls in filenames ---------------------------------------------------------------------------------


@pytest.mark.parametrize("control", BIDI_CONTROLS, ids=[f"U+{ord(c):04X}" for c in BIDI_CONTROLS])
def test_a_filename_with_a_bidi_control_is_refused_in_a_form_in_json_and_in_an_upload(wav, control):
    filename = f"invoice{control}vaw.exe"
    body = raw_multipart(BOUNDARY, file_part(wav, filename), text_part("model", "whisper-1"))
    payload = {"model": "whisper-1", "audio": base64.b64encode(wav).decode(), "filename": filename}
    for error in (
        refusal(MULTIPART, body),
        refusal("application/json", json.dumps(payload)),
        upload_refusal(json.dumps({"filename": filename})),
    ):
        assert (error.code, error.param) == ("invalid_value", "filename")
        assert "bidirectional" in error.message


@pytest.mark.parametrize("filename", ["שיחה.wav", "مكالمة.mp3", "会議.m4a", "mixed עברית and English.ogg"])
def test_right_to_left_names_without_controls_are_still_accepted(wav, filename):
    body = raw_multipart(BOUNDARY, file_part(wav, filename), text_part("model", "whisper-1"))
    assert parse(MULTIPART, body).filename == filename
    assert parse_upload_request("application/json", json.dumps({"filename": filename}), "whisper-1").filename == (
        filename
    )
