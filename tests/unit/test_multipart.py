"""infery.http.multipart: a multipart/form-data body read into its named parts, in order, as request parsing takes
them; what the fields mean is tested with request parsing (test_transcription_request, test_body_handling)."""

from __future__ import annotations

import pytest
from infery.domain.errors import InvalidRequest
from infery.domain.inference import Task
from infery.http.multipart import read_form
from infery.http.request_parsing import parse_transcription_request

from tests.support.builders import SDK_BOUNDARY, multipart_body, raw_multipart

BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def test_each_part_comes_with_its_name_content_and_filename_in_order():
    content_type, body = multipart_body(b"RIFF-audio", filename="meeting.wav", model="whisper-1", language="en")
    assert f"boundary={SDK_BOUNDARY}" in content_type
    parts = [(name, part.content(), part.filename()) for name, part in read_form(body, content_type)]
    assert parts == [
        ("file", b"RIFF-audio", "meeting.wav"),
        ("model", b"whisper-1", None),
        ("language", b"en", None),
    ]


def test_a_part_without_a_name_is_refused_only_when_it_is_reached():
    # the parts before it are read first: a request parser refusing one of them says so, not "no name"
    body = raw_multipart(
        BOUNDARY,
        b'Content-Disposition: form-data; name="model"\r\n\r\nwhisper-1',
        b"Content-Disposition: form-data\r\n\r\nnameless",
    )
    parts = read_form(body, CONTENT_TYPE)
    name, part = next(parts)
    assert (name, part.content()) == ("model", b"whisper-1")
    with pytest.raises(InvalidRequest, match="has no name"):
        next(parts)


def test_a_field_repeated_before_a_nameless_part_is_refused_as_repeated():
    body = raw_multipart(
        BOUNDARY,
        b'Content-Disposition: form-data; name="model"\r\n\r\nwhisper-1',
        b'Content-Disposition: form-data; name="model"\r\n\r\nwhisper-1',
        b"Content-Disposition: form-data\r\n\r\nnameless",
    )
    with pytest.raises(InvalidRequest) as refused:
        parse_transcription_request(
            Task.TRANSCRIBE, CONTENT_TYPE, body, max_audio_bytes=4 * 1024 * 1024, max_upload_bytes=25_000_000
        )
    assert refused.value.code == "duplicate_parameter"


def test_a_malformed_form_is_refused_before_any_part_is_read():
    body = raw_multipart(BOUNDARY, b'Content-Disposition: form-data; name="model"\r\n\r\nwhisper-1')
    body = body.replace(b"\r\n\r\n", b"\r\n", 1)  # headers that never end
    parts = read_form(body, CONTENT_TYPE)
    with pytest.raises(InvalidRequest, match="malformed") as refused:
        next(parts)
    assert refused.value.code == "invalid_multipart"
