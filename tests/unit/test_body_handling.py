"""The request body's way through the handler with fewer copies (issue 13), answering as before."""

from __future__ import annotations

import base64
import json

import pytest
from infery.endpoint_client import request_body
from infery.errors import InvalidRequest
from infery.inference import InferenceRequest, Task
from infery.transcription_request import event_body, parse_transcription_request

from tests.unit.builders import multipart_body

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80\x3e\x00\x00\x00\x7d\x00\x00\x02\x00\x10\x00"
WAV += b"data\x00\x00\x00\x00"


def parse(content_type: str, body: bytes | str):
    return parse_transcription_request(
        Task.TRANSCRIBE, content_type, body, max_audio_bytes=4 * 1024 * 1024, max_upload_bytes=25_000_000
    )


@pytest.mark.parametrize(
    "encoded",
    [
        base64.b64encode(b"form bytes \x00\xff").decode(),  # what API Gateway sends
        base64.encodebytes(b"form bytes \x00\xff" * 20).decode(),  # line-wrapped: decoded as before
        "Zm9y bSBi\neXRlcyAA/w==",
    ],
)
def test_a_base64_event_body_decodes_as_base64_b64decode_does(encoded):
    assert event_body(encoded, True) == base64.b64decode(encoded)


def test_a_text_event_body_is_handed_over_as_text():
    assert event_body('{"model": "whisper-1"}', False) == '{"model": "whisper-1"}'
    assert event_body(None, True) == b"" and event_body(None, False) == b""


@pytest.mark.parametrize("prefix", ["", "\ufeff"])
def test_a_json_body_parses_the_same_as_text_and_as_bytes(prefix):
    text = prefix + json.dumps({"model": "whisper-1", "audio": base64.b64encode(WAV).decode(), "language": "en"})
    from_text, from_bytes = parse("application/json", text), parse("application/json", text.encode())
    assert from_text == from_bytes and from_text.audio is not None and from_text.audio.data == WAV


@pytest.mark.parametrize(
    "audio",
    [
        "data:audio/wav;base64," + base64.b64encode(WAV).decode(),
        base64.encodebytes(WAV).decode(),  # line-wrapped, as `base64` without -w0 writes it
        " " + base64.b64encode(WAV).decode() + "\n",
    ],
)
def test_base64_audio_that_is_not_one_plain_line_is_still_accepted(audio):
    request = parse("application/json", json.dumps({"model": "whisper-1", "audio": audio}))
    assert request.audio is not None and request.audio.data == WAV


def test_audio_that_is_not_base64_is_still_refused_with_its_reason():
    with pytest.raises(InvalidRequest) as refused:
        parse("application/json", json.dumps({"model": "whisper-1", "audio": "not base64!"}))
    assert refused.value.code == "invalid_base64"


def test_a_multipart_form_parses_to_the_same_request_from_its_parts():
    content_type, body = multipart_body(WAV, filename="a.wav", model="whisper-1", prompt="Hello", language="en")
    request = parse(content_type, body)
    assert request.audio is not None and request.audio.data == WAV
    assert (request.filename, request.prompt, request.language) == ("a.wav", "Hello", "en")
    assert parse(content_type, b"a preamble\r\n" + body) == request


@pytest.mark.parametrize("word_timestamps", [False, True])
def test_the_endpoint_body_is_the_request_s_own_json(word_timestamps):
    request = InferenceRequest(
        audio=base64.b64encode(WAV * 5000).decode(),
        task=Task.TRANSLATE,
        prompt='a "quoted" prompt \\ with a backslash',
        word_timestamps=word_timestamps,
        max_audio_seconds=12.5,
    )
    assert bytes(request_body(request)) == request.model_dump_json().encode()


@pytest.mark.parametrize("audio", ['not "base64"', "caf\u00e9", None])
def test_an_endpoint_body_without_base64_text_is_serialised_whole(audio):
    source = {"audio": audio} if audio is not None else {"audio_s3_uri": "s3://bucket/key"}
    request = InferenceRequest(**source)
    assert bytes(request_body(request)) == request.model_dump_json().encode()
