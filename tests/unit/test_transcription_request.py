"""transcription_request.parse_transcription_request: multipart and JSON bodies into a TranscriptionRequest."""

from __future__ import annotations

import base64
import json

import pytest
from infery.domain.audio import AudioFormat
from infery.domain.errors import InferyError, InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from infery.domain.inference import Task
from infery.domain.transcription import ResponseFormat, TranscriptionRequest
from infery.http.request_parsing import parse_transcription_request

from tests.support.builders import (
    SDK_BOUNDARY,
    audio_of,
    json_body,
    multipart_body,
    raw_multipart,
    toolbelt_multipart_body,
)

MAX_AUDIO_BYTES = 4 * 1024 * 1024  # the Settings default
MAX_UPLOAD_BYTES = 25_000_000
GRANULARITIES = "timestamp_granularities[]"


@pytest.fixture(scope="module")
def wav(encoded_audio) -> bytes:
    return encoded_audio["wav"].read_bytes()


def parse(
    content_type: str | None, body: bytes, task: Task = Task.TRANSCRIBE, max_audio_bytes: int = MAX_AUDIO_BYTES
) -> TranscriptionRequest:
    return parse_transcription_request(
        task, content_type, body, max_audio_bytes=max_audio_bytes, max_upload_bytes=MAX_UPLOAD_BYTES
    )


def refused(
    content_type: str | None, body: bytes, task: Task = Task.TRANSCRIBE, max_audio_bytes: int = MAX_AUDIO_BYTES
) -> InferyError:
    with pytest.raises(InferyError) as raised:
        parse(content_type, body, task, max_audio_bytes)
    return raised.value


# --- good requests ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [multipart_body, toolbelt_multipart_body])
def test_every_multipart_field_lands_in_the_request(wav, build):
    # Given a form as the openai SDK sends it, with every field and a repeated timestamp_granularities[]
    content_type, body = build(
        wav,
        filename="meeting.wav",
        model="whisper-1",
        language="de",
        prompt="Quartalsbericht, Umsatz",
        response_format="verbose_json",
        temperature="0.2",
        **{GRANULARITIES: ["word", "segment"]},
    )
    # When it is parsed
    request = parse(content_type, body)
    # Then each field is in the model, typed
    assert request.task is Task.TRANSCRIBE
    assert request.audio is not None and request.audio.data == wav and request.audio.format is AudioFormat.WAV
    assert request.filename == "meeting.wav"
    assert (request.model, request.language, request.prompt) == ("whisper-1", "de", "Quartalsbericht, Umsatz")
    assert request.response_format is ResponseFormat.VERBOSE_JSON
    assert request.temperature == pytest.approx(0.2)
    assert request.timestamp_granularities == ["word", "segment"]


def test_defaults_are_json_and_segment_granularity(wav):
    request = parse(*multipart_body(wav, model="whisper-1"))
    assert request.response_format is ResponseFormat.JSON
    assert request.timestamp_granularities == ["segment"]
    assert (request.language, request.prompt, request.temperature) == (None, None, None)
    assert request.word_timestamps is False


@pytest.mark.parametrize("spelling", ["EN", "en", " En "])
def test_language_is_normalised_to_lower_case(wav, spelling):
    assert parse(*multipart_body(wav, model="whisper-1", language=spelling)).language == "en"


@pytest.mark.parametrize(
    ("response_format", "granularities", "expected"),
    [
        ("verbose_json", ["word"], True),
        ("verbose_json", ["segment", "word"], True),
        ("verbose_json", ["segment"], False),
        ("verbose_json", None, False),
        ("json", ["segment"], False),
        ("srt", None, False),
        # "word" with any other format is a 400: tests/unit/test_request_limits.py
    ],
)
def test_word_timestamps_only_for_verbose_json_with_word_granularity(wav, response_format, granularities, expected):
    fields = {"model": "whisper-1", "response_format": response_format}
    if granularities is not None:
        fields[GRANULARITIES] = granularities
    assert parse(*multipart_body(wav, **fields)).word_timestamps is expected


def test_a_translation_takes_the_common_fields(wav):
    request = parse(
        *multipart_body(wav, model="whisper-1", prompt="Hallo", response_format="srt", temperature="0"),
        task=Task.TRANSLATE,
    )
    assert request.task is Task.TRANSLATE
    assert (request.prompt, request.response_format, request.temperature) == ("Hallo", ResponseFormat.SRT, 0.0)
    assert request.language is None


@pytest.mark.parametrize("spelling", ["audio", "file_base64"])
def test_json_body_with_base64_audio_in_either_spelling(wav, spelling):
    content_type, body = json_body(
        wav,
        spelling,
        model="whisper-1",
        filename="meeting.wav",
        language="EN",
        response_format="vtt",
        timestamp_granularities=["segment"],
        temperature=0.5,
    )
    request = parse(content_type, body)
    assert request.audio is not None and request.audio.data == wav and request.audio.format is AudioFormat.WAV
    assert (request.filename, request.model, request.language) == ("meeting.wav", "whisper-1", "en")
    assert (request.response_format, request.temperature) == (ResponseFormat.VTT, 0.5)


def test_json_accepts_a_data_url_prefix_and_line_wrapped_base64(wav):
    wrapped = base64.encodebytes(wav).decode()  # 76-character lines, as `base64` without -w0 prints
    assert "\n" in wrapped
    body = json.dumps({"model": "whisper-1", "audio": f"data:audio/wav;base64,{wrapped}"}).encode()
    assert audio_of(parse("application/json; charset=utf-8", body)) == wav


def test_content_type_parameters_and_case_do_not_matter(wav):
    content_type, body = multipart_body(wav, model="whisper-1")
    assert audio_of(parse(content_type.replace("multipart/form-data", "Multipart/Form-Data"), body)) == wav


# --- bad requests ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({}, "model", "missing_model"),
        ({"model": ""}, "model", "invalid_value"),
        ({"model": "whisper-1", "response_format": "xml"}, "response_format", "invalid_value"),
        (
            {"model": "whisper-1", "response_format": "diarized_json", "known_speaker_names[]": "a"},
            "known_speaker_names",
            "invalid_known_speakers",
        ),  # fmt: skip
        ({"model": "whisper-1", "language": "xx"}, "language", "invalid_value"),
        ({"model": "whisper-1", "language": "english"}, "language", "invalid_value"),
        ({"model": "whisper-1", "temperature": "2"}, "temperature", "invalid_value"),
        ({"model": "whisper-1", "temperature": "-0.1"}, "temperature", "invalid_value"),
        ({"model": "whisper-1", "temperature": "hot"}, "temperature", "invalid_value"),
        ({"model": "whisper-1", "temperature": "nan"}, "temperature", "invalid_value"),
        ({"model": "whisper-1", GRANULARITIES: ["sentence"]}, "timestamp_granularities", "invalid_value"),
        ({"model": "whisper-1", "stream": "maybe"}, "stream", "invalid_value"),
        ({"model": "whisper-1", "foo": "bar"}, "foo", "unknown_parameter"),
        ({"model": "whisper-1", "audio": "QUJD"}, "audio", "unknown_parameter"),  # a JSON field, not a form field
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_bad_multipart_fields_are_400_naming_the_field(wav, fields, param, code):
    error = refused(*multipart_body(wav, **fields))
    assert (type(error), error.status_code, error.param, error.code) == (InvalidRequest, 400, param, code)
    assert param in error.message


@pytest.mark.parametrize(
    ("payload", "param", "code"),
    [
        ({"model": "whisper-1"}, "audio", "missing_audio"),
        ({"model": "whisper-1", "filename": "a.wav"}, "audio", "missing_audio"),
        ({"audio": "UklGRgAAAABXQVZF"}, "model", "missing_model"),
        ({"model": "", "audio": "UklGRgAAAABXQVZF"}, "model", "invalid_value"),
        ({"model": "whisper-1", "audio": "not base64!"}, "audio", "invalid_base64"),
        ({"model": "whisper-1", "file_base64": "QUJ"}, "file_base64", "invalid_base64"),
        ({"model": "whisper-1", "audio": 42}, "audio", "invalid_base64"),
        ({"model": "whisper-1", "audio": None}, "audio", "invalid_base64"),
        (
            {"model": "whisper-1", "audio": "UklGRgAAAABXQVZF", "file_base64": "UklGRgAAAABXQVZF"},
            "audio",
            "ambiguous_audio",
        ),
        ({"model": "whisper-1", "audio": "UklGRgAAAABXQVZF", "filename": 3}, "filename", None),
        ({"model": "whisper-1", "audio": "UklGRgAAAABXQVZF", "stream": "sometimes"}, "stream", "invalid_value"),
        ({"model": "whisper-1", "audio": "UklGRgAAAABXQVZF", "foo": 1}, "foo", "unknown_parameter"),
        ({"model": "whisper-1", "audio": "UklGRgAAAABXQVZF", "file": "x"}, "file", "unknown_parameter"),
        ({"model": 1, "audio": "UklGRgAAAABXQVZF"}, "model", "invalid_value"),
        (
            {"model": "whisper-1", "audio": "UklGRgAAAABXQVZF", "timestamp_granularities": "word"},
            "timestamp_granularities",
            "invalid_value",
        ),
    ],
)
def test_bad_json_fields_are_400_naming_the_field(payload, param, code):
    error = refused("application/json", json.dumps(payload).encode())
    assert (type(error), error.status_code, error.param, error.code) == (InvalidRequest, 400, param, code)


@pytest.mark.parametrize(
    "body",
    [b"[1, 2]", b'"audio"', b"null", b'{"model": ', b"model=whisper-1", b"\xff\xfe{"],
    ids=["array", "string", "null", "truncated", "form-encoded", "not-utf8"],
)
def test_a_body_that_is_not_a_json_object_is_400_invalid_json(body):
    error = refused("application/json", body)
    assert (type(error), error.status_code, error.param, error.code) == (InvalidRequest, 400, None, "invalid_json")


@pytest.mark.parametrize("build", [multipart_body, json_body])
def test_a_missing_file_is_400_missing_audio(build):
    error = refused(*build(None, model="whisper-1"))
    expected_param = "file" if build is multipart_body else "audio"
    assert (type(error), error.status_code, error.param, error.code) == (
        InvalidRequest,
        400,
        expected_param,
        "missing_audio",
    )


def test_base64_audio_that_decodes_to_nothing_is_an_empty_file():
    error = refused(*json_body(b"", model="whisper-1"))
    assert (type(error), error.status_code, error.param, error.code) == (InvalidRequest, 400, "file", "empty_file")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"language": "en"}, "language"),
        ({GRANULARITIES: ["word"]}, "timestamp_granularities"),
    ],
)
def test_transcription_only_fields_are_unknown_on_a_translation(wav, fields, param):
    # Given a translation request (audio/translations) with a field only transcriptions take
    for content_type, body in (
        multipart_body(wav, model="whisper-1", **fields),
        json_body(wav, model="whisper-1", **{param: next(iter(fields.values()))}),
    ):
        # Then it is refused as unknown, as OpenAI does
        error = refused(content_type, body, task=Task.TRANSLATE)
        assert (type(error), error.status_code, error.param, error.code) == (
            InvalidRequest,
            400,
            param,
            "unknown_parameter",
        )


@pytest.mark.parametrize(
    "content_type", [None, "", "text/plain", "audio/mpeg", "application/x-www-form-urlencoded", "application/jsonp"]
)
def test_other_content_types_are_415_unsupported_content_type(wav, content_type):
    error = refused(content_type, wav)
    assert (type(error), error.status_code, error.code) == (UnsupportedMediaType, 415, "unsupported_content_type")
    assert "multipart/form-data or application/json" in error.message


def test_a_multipart_body_with_another_boundary_is_400_invalid_multipart(wav):
    _, body = multipart_body(wav, model="whisper-1")
    error = refused("multipart/form-data; boundary=not-the-real-boundary", body)
    assert (type(error), error.status_code, error.code) == (InvalidRequest, 400, "invalid_multipart")


def test_a_part_without_a_name_is_400_invalid_multipart(wav):
    body = raw_multipart(
        SDK_BOUNDARY,
        b'Content-Disposition: form-data; name="model"\r\n\r\nwhisper-1',
        b"Content-Disposition: form-data\r\n\r\n" + wav,
    )
    error = refused(f"multipart/form-data; boundary={SDK_BOUNDARY}", body)
    assert (type(error), error.status_code, error.code) == (InvalidRequest, 400, "invalid_multipart")


CLIENT_ERRORS = (InvalidRequest, UnsupportedMediaType, PayloadTooLarge)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", None),
        ("multipart/form-data; boundary=", None),
        (f"multipart/form-data; boundary={SDK_BOUNDARY}", b"this is not a multipart body"),
        (
            f"multipart/form-data; boundary={SDK_BOUNDARY}",
            raw_multipart(SDK_BOUNDARY, b'Content-Disposition: form-data; name="model" whisper-1'),
        ),
    ],
    ids=["no-boundary", "empty-boundary", "garbage-body", "part-without-blank-line"],
)
def test_a_broken_multipart_envelope_is_400_invalid_multipart(wav, content_type, body):
    if body is None:
        body = multipart_body(wav, model="whisper-1")[1]
    with pytest.raises(CLIENT_ERRORS) as raised:
        parse(content_type, body)
    assert (raised.value.status_code, raised.value.code) == (400, "invalid_multipart")


def test_a_form_field_that_is_not_utf8_is_a_400(wav):
    body = raw_multipart(
        SDK_BOUNDARY,
        b'Content-Disposition: form-data; name="model"\r\n\r\nwhisper-1',
        b'Content-Disposition: form-data; name="prompt"\r\n\r\nR\xe9sum\xe9',  # Latin-1
        b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n' + wav,
    )
    with pytest.raises(CLIENT_ERRORS) as raised:
        parse(f"multipart/form-data; boundary={SDK_BOUNDARY}", body)
    assert raised.value.status_code == 400


def test_deeply_nested_json_is_a_400():
    with pytest.raises(CLIENT_ERRORS) as raised:
        parse("application/json", b"[" * 100_000 + b"]" * 100_000)
    assert (raised.value.status_code, raised.value.code) == (400, "invalid_json")


# --- size limits -----------------------------------------------------------------------------------------------------


def _wav_of(size: int) -> bytes:
    return b"RIFF" + (size - 8).to_bytes(4, "little") + b"WAVE" + bytes(size - 12)


@pytest.mark.parametrize("build", [multipart_body, json_body])
def test_audio_over_the_limit_is_413_naming_the_limit_and_the_upload_flow(build):
    # Given 2 MB of audio against a 1 MB synchronous limit
    error = refused(*build(_wav_of(2_000_000), model="whisper-1"), max_audio_bytes=1_000_000)
    # Then a 413 that says the limit in MB and where larger files go (POST /v1/uploads, up to 25 MB)
    assert (type(error), error.status_code, error.param, error.code) == (
        PayloadTooLarge,
        413,
        "file",
        "audio_too_large",
    )
    assert "1.0 MB" in error.message and "POST /v1/uploads" in error.message and "25 MB" in error.message


def test_the_413_names_the_default_limit():
    error = refused(*multipart_body(_wav_of(MAX_AUDIO_BYTES + 1), model="whisper-1"))
    assert isinstance(error, PayloadTooLarge)
    assert f"{MAX_AUDIO_BYTES / 1e6:.1f} MB" in error.message  # 4 MiB is 4.2 MB


@pytest.mark.parametrize("build", [multipart_body, json_body])
def test_audio_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not(build):
    assert len(audio_of(parse(*build(_wav_of(1_000_000), model="whisper-1"), max_audio_bytes=1_000_000))) == 1_000_000
    error = refused(*build(_wav_of(1_000_001), model="whisper-1"), max_audio_bytes=1_000_000)
    assert isinstance(error, PayloadTooLarge)


def test_a_huge_json_body_is_refused_as_too_large_before_its_base64_is_decoded():
    # Given 4 MB of characters that are not even base64
    body = json.dumps({"model": "whisper-1", "audio": "!" * 4_000_000}).encode()
    # Then the size is what is reported, without decoding it first
    error = refused("application/json", body, max_audio_bytes=1_000_000)
    assert (type(error), error.code) == (PayloadTooLarge, "audio_too_large")
