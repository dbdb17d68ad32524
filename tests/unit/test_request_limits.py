"""Every field of a request has a limit, checked while parsing (before anything is written), with a 400 in
OpenAI's shape that names the field; and what a client is told never carries our internals.
"""

from __future__ import annotations

import json
import math

import pytest
from infery.domain.errors import InferyError, InvalidRequest
from infery.domain.inference import Task
from infery.domain.transcription import (
    FILENAME_MAX_CHARACTERS,
    MODEL_MAX_CHARACTERS,
    PROMPT_MAX_CHARACTERS,
    WEBHOOK_URL_MAX_CHARACTERS,
)
from infery.http.request_parsing import parse_transcription_request, parse_upload_request

from tests.support.builders import SDK_BOUNDARY, audio_of, json_body, multipart_body, raw_multipart

MAX_AUDIO_BYTES = 4 * 1024 * 1024
MAX_UPLOAD_BYTES = 25_000_000
WAV = b"RIFF" + (1000 - 8).to_bytes(4, "little") + b"WAVE" + bytes(1000 - 12)  # sniffs as WAV
GRANULARITIES = "timestamp_granularities[]"
# what a message must never carry: Python's and the libraries' own words, errno text, our bucket
INTERNAL_TEXT = ("MultipartDecoder", "attribute", "Errno", "CR-LF", "codec", "Traceback", "s3://", "object has no")


def parse(
    content_type: str | None,
    body: bytes,
    task: Task = Task.TRANSCRIBE,
    *,
    for_job: bool = False,
    allow_http_webhooks: bool = False,
    allow_private_webhooks: bool = False,
):
    return parse_transcription_request(
        task,
        content_type,
        body,
        max_audio_bytes=MAX_AUDIO_BYTES,
        max_upload_bytes=MAX_UPLOAD_BYTES,
        for_job=for_job,
        allow_http_webhooks=allow_http_webhooks,
        allow_private_webhooks=allow_private_webhooks,
    )


def refused(content_type: str | None, body: bytes, **options) -> InferyError:
    with pytest.raises(InferyError) as raised:
        parse(content_type, body, **options)
    return _checked(raised.value)


def refused_upload(fields: dict, **webhook_rules: bool) -> InferyError:
    with pytest.raises(InferyError) as raised:
        parse_upload_request("application/json", json.dumps(fields).encode(), "whisper-1", **webhook_rules)
    return _checked(raised.value)


def _checked(error: InferyError) -> InferyError:
    """Every refusal: a 400-class error whose message a person can read, short, without our internals."""
    assert 400 <= error.status_code < 500
    assert error.message and len(error.message) <= 400, error.message
    assert not any(text in error.message for text in INTERNAL_TEXT), error.message
    return error


def both_bodies(**fields) -> list[tuple[str, bytes]]:
    """The same request as multipart (as the SDK sends it) and as JSON."""
    return [
        multipart_body(WAV, **{"model": "whisper-1", **fields}),
        json_body(WAV, **{"model": "whisper-1", **{name.removesuffix("[]"): value for name, value in fields.items()}}),
    ]


# --- a multipart body must be whole ----------------------------------------------------------------------------------


def _without_closing_boundary(body: bytes) -> bytes:
    closing = f"--{SDK_BOUNDARY}--\r\n".encode()
    assert body.endswith(closing)
    return body[: -len(closing)]


@pytest.mark.parametrize("cut", ["closing-boundary", "closing-boundary-and-crlf", "mid-audio", "mid-headers"])
def test_a_multipart_body_without_its_closing_boundary_is_refused(cut):
    # Given the SDK's form, cut off before its end (a client or proxy that gave up part way)
    content_type, body = multipart_body(WAV, model="whisper-1")
    truncated = {
        "closing-boundary": _without_closing_boundary(body),
        "closing-boundary-and-crlf": _without_closing_boundary(body)[:-2],
        "mid-audio": body[: body.index(WAV) + len(WAV) // 2],
        "mid-headers": body[: body.index(b"Content-Disposition") + 10],
    }[cut]
    # Then it is a 400 that says the body is incomplete, not a (billed) request for part of the audio
    error = refused(content_type, truncated)
    assert (type(error), error.code) == (InvalidRequest, "invalid_multipart")
    assert "closing boundary" in error.message


def test_the_whole_body_with_its_closing_boundary_is_still_accepted():
    content_type, body = multipart_body(WAV, model="whisper-1", language="de")
    assert audio_of(parse(content_type, body)) == WAV
    assert audio_of(parse(content_type, body + b"an epilogue after the closing boundary is ignored\r\n")) == WAV


def test_a_part_after_the_closing_boundary_is_epilogue_not_a_field():
    content_type, body = multipart_body(WAV, model="whisper-1")
    smuggled = body + f"--{SDK_BOUNDARY}\r\n".encode() + b'Content-Disposition: form-data; name="language"\r\n\r\nxx'
    assert parse(content_type, smuggled + f"\r\n--{SDK_BOUNDARY}--\r\n".encode()).language is None


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", None),
        ("multipart/form-data; charset=utf-8", None),
        ("multipart/form-data; boundary=", None),
        ("multipart/form-data; boundary=" + "b" * 71, None),
        (f"multipart/form-data; boundary={SDK_BOUNDARY}", b"this is not a multipart body"),
        (
            f"multipart/form-data; boundary={SDK_BOUNDARY}",
            raw_multipart(SDK_BOUNDARY, b'Content-Disposition: form-data; name="model" whisper-1'),
        ),
        (
            f"multipart/form-data; boundary={SDK_BOUNDARY}",
            raw_multipart(SDK_BOUNDARY, b'Content-Disposition: form-data; name="mod\xffel"\r\n\r\nwhisper-1'),
        ),
    ],
    ids=[
        "no-boundary",
        "other-parameter",
        "empty-boundary",
        "boundary-too-long",
        "garbage",
        "no-blank-line",
        "header-not-utf8",
    ],
)
def test_a_broken_multipart_envelope_is_told_without_the_parsers_words(content_type, body):
    error = refused(content_type, body if body is not None else multipart_body(WAV, model="whisper-1")[1])
    assert (error.status_code, error.code) == (400, "invalid_multipart")


# --- temperature -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False, "true", [0.5], {"value": 0.5}])
def test_a_temperature_that_is_not_a_number_is_refused(value):
    error = refused(*json_body(WAV, model="whisper-1", temperature=value))
    assert (error.status_code, error.param, error.code) == (400, "temperature", "invalid_value")
    assert "must be a number between 0 and 1" in error.message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinite_temperatures_are_refused_as_not_a_number_between_0_and_1(value):
    body = json.dumps({"model": "whisper-1", "audio": "UklGRgAAAABXQVZF", "temperature": value})
    assert "NaN" in body or "Infinity" in body  # what Python's json (and JavaScript's) writes for them
    for content_type, payload in (
        ("application/json", body.encode()),
        multipart_body(WAV, model="whisper-1", temperature=str(value)),
    ):
        error = refused(content_type, payload)
        assert (error.param, error.code) == ("temperature", "invalid_value")
        assert "must be a number between 0 and 1" in error.message


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "2", "-0.5", "hot", ""])
def test_every_bad_multipart_temperature_says_the_same_thing(value):
    error = refused(*multipart_body(WAV, model="whisper-1", temperature=value))
    assert (error.param, error.code) == ("temperature", "invalid_value")
    assert "must be a number between 0 and 1" in error.message


@pytest.mark.parametrize(("value", "expected"), [(0, 0.0), (1, 1.0), (0.2, 0.2), ("0.7", 0.7), ("1", 1.0)])
def test_good_temperatures_are_kept(value, expected):
    content_type, body = json_body(WAV, model="whisper-1", temperature=value)
    assert parse(content_type, body).temperature == pytest.approx(expected)


# --- word timestamps need verbose_json -------------------------------------------------------------------------------


@pytest.mark.parametrize("response_format", [None, "json", "text", "srt", "vtt"])
def test_word_timestamps_without_verbose_json_are_a_400_as_openai_answers(response_format):
    fields = {GRANULARITIES: ["word"]} | ({"response_format": response_format} if response_format else {})
    for content_type, body in both_bodies(**fields):
        for for_job in (False, True):
            error = refused(content_type, body, for_job=for_job)
            assert (error.status_code, error.param, error.code) == (400, "timestamp_granularities", "invalid_value")
            assert "verbose_json" in error.message
    fields = {"timestamp_granularities": ["word", "segment"]} | (
        {"response_format": response_format} if response_format else {}
    )
    error = refused_upload(fields)
    assert (error.param, error.code) == ("timestamp_granularities", "invalid_value")


def test_word_timestamps_with_verbose_json_and_segments_with_any_format_are_accepted():
    content_type, body = multipart_body(
        WAV, model="whisper-1", response_format="verbose_json", **{GRANULARITIES: ["word", "segment"]}
    )
    assert parse(content_type, body).word_timestamps
    content_type, body = multipart_body(WAV, model="whisper-1", response_format="srt", **{GRANULARITIES: ["segment"]})
    assert not parse(content_type, body).word_timestamps


# --- limits on every field -------------------------------------------------------------------------------------------


def test_the_limits_are_the_documented_ones():
    assert (PROMPT_MAX_CHARACTERS, FILENAME_MAX_CHARACTERS, WEBHOOK_URL_MAX_CHARACTERS) == (1000, 255, 2048)
    assert MODEL_MAX_CHARACTERS == 256


@pytest.mark.parametrize("size", [PROMPT_MAX_CHARACTERS + 1, 450_000])
def test_a_prompt_over_1000_characters_is_refused_everywhere(size):
    prompt = "Quartalsbericht " * (size // 16 + 1)
    prompt = prompt[:size]
    for content_type, body in both_bodies(prompt=prompt):
        for for_job in (False, True):
            error = refused(content_type, body, for_job=for_job)
            assert (error.status_code, error.param, error.code) == (400, "prompt", "invalid_value")
            assert f"{PROMPT_MAX_CHARACTERS:,}" in error.message
    error = refused_upload({"prompt": prompt})
    assert (error.param, error.code) == ("prompt", "invalid_value")


def test_a_prompt_of_exactly_1000_characters_is_accepted_and_counted_in_characters_not_bytes():
    prompt = "ü" * PROMPT_MAX_CHARACTERS  # 2,000 bytes of UTF-8
    for content_type, body in both_bodies(prompt=prompt):
        assert parse(content_type, body).prompt == prompt
    assert (
        parse_upload_request("application/json", json.dumps({"prompt": prompt}).encode(), "whisper-1").job.prompt
        == prompt
    )


@pytest.mark.parametrize(
    "filename",
    [
        "a" * (FILENAME_MAX_CHARACTERS - 4) + ".wav" + "x",
        "x" * 450_000 + ".wav",
        "meeting\x00.wav",
        "meeting\r\n.wav",
        "\x1b[31mred.wav",
    ],
    ids=["256", "450k", "nul", "crlf", "escape"],
)
def test_a_filename_over_255_characters_or_with_control_characters_is_refused_everywhere(filename):
    # multipart (in the file part's Content-Disposition), JSON, the job endpoint and POST /v1/uploads
    if "\r" not in filename and "\x00" not in filename:
        content_type, body = multipart_body(WAV, filename=filename, model="whisper-1")
        error = refused(content_type, body)
        assert (error.param, error.code) == ("filename", "invalid_value")
    content_type, body = json_body(WAV, model="whisper-1", filename=filename)
    for for_job in (False, True):
        error = refused(content_type, body, for_job=for_job)
        assert (error.status_code, error.param, error.code) == (400, "filename", "invalid_value")
    error = refused_upload({"filename": filename})
    assert (error.param, error.code) == ("filename", "invalid_value")


def test_a_filename_of_255_characters_is_accepted():
    filename = "ä" * (FILENAME_MAX_CHARACTERS - 4) + ".wav"
    content_type, body = multipart_body(WAV, filename=filename, model="whisper-1")
    assert parse(content_type, body).filename == filename
    assert (
        parse_upload_request("application/json", json.dumps({"filename": filename}).encode(), "whisper-1").filename
        == filename
    )


def test_a_model_name_past_256_characters_is_refused_without_being_echoed():
    model = "whisper-" + "x" * 450_000
    for content_type, body in both_bodies(model=model):
        error = refused(content_type, body)
        assert (error.param, error.code) == ("model", "invalid_value")
    assert refused_upload({"model": model}).param == "model"


def test_a_huge_language_or_unknown_field_name_is_not_echoed_back():
    error = refused(*multipart_body(WAV, model="whisper-1", language="x" * 450_000))
    assert (error.param, error.code) == ("language", "invalid_value")
    error = refused(*json_body(WAV, model="whisper-1", **{"y" * 450_000: 1}))
    assert error.code == "unknown_parameter" and len(error.param or "") <= 64
    error = refused_upload({"z" * 450_000: 1})
    assert error.code == "unknown_parameter" and len(error.param or "") <= 64


@pytest.mark.parametrize(
    "upload_id",
    [
        "upl_" + "0" * 31,
        "upl_" + "0" * 33,
        "upl_" + "G" * 32,
        "job_" + "0" * 32,
        "upl_" + "0" * 32 + "\n",
        "upl_" + "x" * 450_000,
        42,
    ],
)
def test_an_upload_id_of_another_shape_is_refused_before_anything_is_read(upload_id):
    for content_type, body in (
        multipart_body(None, model="whisper-1", upload_id=upload_id),
        json_body(None, model="whisper-1", upload_id=upload_id),
    ):
        error = refused(content_type, body, for_job=True)
        assert (error.param, error.code) == ("upload_id", "invalid_upload_id")


# --- webhook URLs ----------------------------------------------------------------------------------------------------


def _webhook_refusals(url: str, **webhook_rules: bool) -> list[InferyError]:
    errors = [
        refused(content_type, body, for_job=True, **webhook_rules)
        for content_type, body in both_bodies(webhook_url=url)
    ]
    return [*errors, refused_upload({"webhook_url": url}, **webhook_rules)]


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/infery",  # on AWS only https
        "https://hooks.example.com:8443/infery",  # ... on port 443
        "https://hooks.example.com:80/infery",
        "https://hooks.example.com:99999/infery",  # not a port at all
        "https://user:secret@hooks.example.com/infery",  # credentials would be stored and shown in the job
        "https://169.254.169.254/latest/meta-data/",  # an internal address, written as one
        "https://127.0.0.1/hook",
        "https://[::1]/hook",
        "https://10.0.0.7/hook",
        "https://[fd00::1]/hook",
        "https://hooks.example.com/" + "a" * WEBHOOK_URL_MAX_CHARACTERS,
    ],
)
def test_on_aws_a_webhook_url_must_be_https_on_443_to_a_public_host(url):
    for error in _webhook_refusals(url):
        assert (error.status_code, error.param, error.code) == (400, "webhook_url", "invalid_value")


def test_a_public_https_webhook_url_is_accepted_as_given():
    url = "https://hooks.example.com/infery?tenant=7"
    assert parse(*json_body(WAV, model="whisper-1", webhook_url=url), for_job=True).webhook_url == url
    assert (
        parse(
            *json_body(WAV, model="whisper-1", webhook_url="https://hooks.example.com:443/x"), for_job=True
        ).webhook_url
        == "https://hooks.example.com:443/x"
    )
    assert (
        parse_upload_request("application/json", json.dumps({"webhook_url": url}).encode(), "whisper-1").job.webhook_url
        == url
    )


LOCAL_STACK = {"allow_http_webhooks": True, "allow_private_webhooks": True}


def accepted(url: str, **webhook_rules: bool) -> bool:
    job = parse(*json_body(WAV, model="whisper-1", webhook_url=url), for_job=True, **webhook_rules)
    upload = parse_upload_request(
        "application/json", json.dumps({"webhook_url": url}).encode(), "whisper-1", **webhook_rules
    )
    return job.webhook_url == upload.job.webhook_url == url


def test_where_private_addresses_and_http_are_allowed_http_to_loopback_is_accepted():
    # the local stack (WEBHOOK_ALLOW_PRIVATE_ADDRESSES and WEBHOOK_ALLOW_HTTP): receivers run on the developer's machine
    assert accepted("http://127.0.0.1:8123/hook", **LOCAL_STACK)
    # ... but the length and the scheme are still checked
    for bad in ("ftp://127.0.0.1/hook", "http://127.0.0.1/" + "a" * WEBHOOK_URL_MAX_CHARACTERS):
        for error in _webhook_refusals(bad, **LOCAL_STACK):
            assert (error.param, error.code) == ("webhook_url", "invalid_value")


def test_allowing_private_addresses_does_not_allow_http():
    assert accepted("https://127.0.0.1:8123/hook", allow_private_webhooks=True)
    for error in _webhook_refusals("http://127.0.0.1:8123/hook", allow_private_webhooks=True):
        assert (error.param, error.code) == ("webhook_url", "invalid_value")
        assert error.message == "Invalid value for 'webhook_url': must be an https:// URL."


def test_allowing_http_does_not_allow_private_addresses_nor_another_port():
    assert accepted("http://hooks.example.com/hook", allow_http_webhooks=True)
    assert accepted("http://hooks.example.com:80/hook", allow_http_webhooks=True)
    for url in (
        "http://127.0.0.1/hook",
        "http://10.0.0.7/hook",
        "http://127.0.0.1:8123/hook",
        "http://hooks.example.com:8080/hook",
    ):
        for error in _webhook_refusals(url, allow_http_webhooks=True):
            assert (error.param, error.code) == ("webhook_url", "invalid_value")
