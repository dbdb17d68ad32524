"""The request body's way through the handler with fewer copies, answering as before."""

from __future__ import annotations

import base64
import json
import tracemalloc

import pytest
from infery.adapters.realtime_endpoint import request_body
from infery.domain.errors import InvalidRequest, UnsupportedMediaType
from infery.domain.inference import InferenceRequest, Task
from infery.http.request_parsing import event_body, parse_transcription_request, parse_upload_request

from benchmarks.recordings import wav_bytes
from tests.unit.builders import SDK_BOUNDARY, multipart_body, raw_multipart

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


def test_a_file_holding_bytes_like_the_boundary_comes_back_whole():
    # what looks like the start of a delimiter inside the file makes the parser hand the content over in pieces
    near_misses = b"\r\n--" + SDK_BOUNDARY.encode()[:-1] + b"!\r\n-\r\r\n--\r\n" + SDK_BOUNDARY.encode()[:5]
    audio = wav_bytes((near_misses + b"\x00\x01" * 50) * 40)
    content_type, body = multipart_body(audio, filename="a.wav", model="whisper-1")
    request = parse(content_type, body)
    assert request.audio is not None and request.audio.data == audio


def test_part_headers_are_read_whatever_their_case():
    boundary = "b0undary"
    body = raw_multipart(
        boundary,
        b'CONTENT-DISPOSITION: form-data; name="file"; filename="a.wav"\r\ncontent-type: audio/wav\r\n\r\n' + WAV,
        b'content-disposition: form-data; name="model"\r\n\r\nwhisper-1',
    )
    request = parse(f"multipart/form-data; boundary={boundary}", body)
    assert request.audio is not None and request.audio.data == WAV and request.filename == "a.wav"


@pytest.mark.parametrize(
    "part",
    [
        b'Content-Disposition: form-data; name="model"whisper-1',  # no blank line after the headers
        b"".join(f"X-Header-{index}: {index}\r\n".encode() for index in range(9))
        + b'Content-Disposition: form-data; name="model"\r\n\r\nwhisper-1',  # more headers than a part may have
    ],
)
def test_a_malformed_part_is_refused_in_words_a_client_can_act_on(part):
    boundary = "b0undary"
    body = raw_multipart(boundary, part)
    with pytest.raises(InvalidRequest) as refused:
        parse(f"multipart/form-data; boundary={boundary}", body)
    assert refused.value.code == "invalid_multipart"
    assert "each part needs headers" in refused.value.message and "Multipart" not in refused.value.message


def test_a_form_is_parsed_with_one_copy_of_its_file():
    """python-multipart hands each part's content over as a slice of the body: a split of the whole body and a copy
    per part (requests-toolbelt's MultipartDecoder) would double the peak for a 4 MB upload."""
    audio = wav_bytes(b"\x01\x02" * 1_000_000)
    content_type, body = multipart_body(audio, filename="a.wav", model="whisper-1", prompt="Hello")
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        request = parse(content_type, body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert request.audio is not None and request.audio.data == audio
    assert peak < 1.5 * len(audio)


@pytest.mark.parametrize("body", ["\x1c", "\x1f\x1e", "\u2028", "\x85"])
@pytest.mark.parametrize("as_text", [True, False])
def test_an_upload_body_of_control_characters_is_a_body_not_nothing(body, as_text):
    """API Gateway hands a text body over as text; str.strip() takes \x1c and friends for whitespace."""
    with pytest.raises(UnsupportedMediaType):
        parse_upload_request(None, body if as_text else body.encode(), "whisper-1")


@pytest.mark.parametrize("body", ["", " \r\n\t", b"", b" \n"])
def test_an_upload_body_of_json_whitespace_is_no_body(body):
    assert parse_upload_request(None, body, "whisper-1").start_job is True
