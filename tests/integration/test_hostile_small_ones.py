"""A security review's small findings and the field limits, through the real handler against moto.

Each test is one finding of the security review: the request is refused with a 4xx in OpenAI's shape, the model
is never called, nothing is charged, and (for uploads and jobs) no job row, S3 object or queue message is left.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.support import storage
from tests.support.api import TRANSCRIPTIONS, Api, Reply, assert_error
from tests.support.builders import SDK_BOUNDARY, json_body, multipart_body
from tests.support.model_replies import model_answer
from tests.support.storage import Leftovers

# the bucket and queue uploads and jobs write to, on the session's moto; autouse: every test here reaches them
audio_resources = storage.audio_resources
storage_endpoints = storage.storage_endpoints

UPLOADS = "/v1/uploads"
TRANSCRIPTION_JOBS = "/v1/audio/transcriptions/jobs"
SEEDED = 50
HUGE = 450_000  # the review's 450 KB prompt and filename: past DynamoDB's 400 KB item


# --- fixtures: the bucket and queue uploads and jobs write to, and a handler whose model must never be called ---


@pytest.fixture
def leftovers(audio_resources: dict[str, str], storage_endpoints: None) -> Leftovers:
    return Leftovers(audio_resources)


@pytest.fixture
def untouched_model(fake_runtime, load_api) -> Callable[..., Api]:
    """A handler whose model answers 4.2 s if called; every test here asserts it never is."""
    started = []

    def load(**environment: str) -> Api:
        url, fake = fake_runtime(200, model_answer(4.2))
        started.append(fake)
        return load_api(url, **environment)

    yield load
    assert all(fake.calls == 0 for fake in started), "a refused request reached the model"


def post_upload(api: Api, api_key: str, body: dict[str, Any]) -> Reply:
    return api.call("POST", UPLOADS, body=json.dumps(body).encode(), content_type="application/json", api_key=api_key)


def create_jobs(api: Api, api_key: str, audio: bytes, **fields: Any) -> list[Reply]:
    """The same job asked for as multipart and as JSON (where a list field has no "[]" in its name)."""
    json_fields = {name.removesuffix("[]"): value for name, value in fields.items()}
    content_type, body = json_body(audio, **{"model": "whisper-1", **json_fields})
    return [
        api.transcribe(api_key, audio, path=TRANSCRIPTION_JOBS, **fields),
        api.call("POST", TRANSCRIPTION_JOBS, body=body, content_type=content_type, api_key=api_key),
    ]


# --- a multipart body without its closing boundary -------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["closing-boundary", "mid-audio"])
def test_a_multipart_body_without_its_closing_boundary_is_400_and_not_billed(untouched_model, accounts, wav, cut):
    api = untouched_model()
    api_key, item = accounts.new_key(SEEDED)
    content_type, body = multipart_body(wav, model="whisper-1")
    truncated = body[: -len(f"--{SDK_BOUNDARY}--\r\n")] if cut == "closing-boundary" else body[: len(body) // 2]
    reply = api.call("POST", TRANSCRIPTIONS, body=truncated, content_type=content_type, api_key=api_key)
    error = assert_error(reply, 400, "invalid_multipart")
    assert "closing boundary" in error["message"]
    accounts.assert_untouched(item, SEEDED)


def test_a_multipart_content_type_without_a_boundary_says_so_in_words(untouched_model, accounts, wav):
    api = untouched_model()
    api_key, item = accounts.new_key(SEEDED)
    reply = api.call("POST", TRANSCRIPTIONS, body=wav, content_type="multipart/form-data", api_key=api_key)
    message = assert_error(reply, 400, "invalid_multipart")["message"]
    assert "boundary" in message and "MultipartDecoder" not in message and "attribute" not in message
    accounts.assert_untouched(item, SEEDED)


# --- the model's internals do not reach the client --------------------------------------------------------------------


def test_the_models_errno_text_and_our_bucket_are_not_in_the_clients_message(fake_runtime, load_api, accounts, wav):
    bucket = "infery-audio-123456789012-us-east-1"
    refusal = {
        "error": f"The audio could not be decoded: [Errno 1094995529] Invalid data found when processing "
        f"input: 's3://{bucket}/uploads/key_0123456789abcdef/upl_0.wav'",
        "code": "undecodable_audio",
    }
    url, fake = fake_runtime(
        424,
        {
            "Message": "Received client error (400) from primary",
            "OriginalStatusCode": 400,
            "OriginalMessage": json.dumps(refusal),
        },
        {"x-amzn-ErrorType": "ModelError"},
    )
    api_key, item = accounts.new_key(SEEDED)
    error = assert_error(load_api(url).transcribe(api_key, wav), 400, "undecodable_audio", param="file")
    assert fake.calls == 1
    assert "Errno" not in error["message"] and bucket not in error["message"] and "s3://" not in error["message"]
    assert error["message"].startswith("The audio could not be decoded")
    accounts.assert_untouched(item, SEEDED)


# --- temperature and word timestamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [True, "NaN", "Infinity"])
def test_a_temperature_that_is_not_a_number_between_0_and_1_is_400(untouched_model, accounts, wav, temperature):
    api = untouched_model()
    api_key, item = accounts.new_key(SEEDED)
    if temperature is True:
        content_type, body = json_body(wav, model="whisper-1", temperature=True)
        reply = api.call("POST", TRANSCRIPTIONS, body=body, content_type=content_type, api_key=api_key)
    else:
        reply = api.transcribe(api_key, wav, temperature=temperature)
    error = assert_error(reply, 400, "invalid_value", param="temperature")
    assert "must be a number between 0 and 1" in error["message"]
    accounts.assert_untouched(item, SEEDED)


def test_word_timestamps_without_verbose_json_are_400_on_every_path(untouched_model, accounts, leftovers, wav):
    api = untouched_model()
    api_key, item = accounts.new_key(SEEDED)
    word = {"timestamp_granularities[]": ["word"]}
    for reply in (
        api.transcribe(api_key, wav, response_format="json", **word),
        api.transcribe(api_key, wav, **word),
        *create_jobs(api, api_key, wav, response_format="srt", **word),
        post_upload(api, api_key, {"timestamp_granularities": ["word"], "response_format": "text"}),
    ):
        error = assert_error(reply, 400, "invalid_value", param="timestamp_granularities")
        assert "verbose_json" in error["message"]
    accounts.assert_untouched(item, SEEDED)
    leftovers.assert_none(item)


# --- limits on every field of uploads and jobs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", "Quartalsbericht " * (HUGE // 16)),
        ("prompt", "x" * 1001),
        ("filename", "f" * HUGE + ".wav"),
        ("filename", "f" * 252 + ".wav"),
        ("webhook_url", "https://hooks.example.com/" + "a" * HUGE),
        ("model", "whisper-" + "1" * HUGE),
    ],
    ids=["prompt-450k", "prompt-1001", "filename-450k", "filename-256", "webhook-450k", "model-450k"],
)
def test_an_oversized_field_on_uploads_and_jobs_is_400_and_leaves_nothing(
    untouched_model, accounts, leftovers, wav, field, value
):
    api = untouched_model()
    api_key, item = accounts.new_key(SEEDED)
    replies = [post_upload(api, api_key, {field: value})]
    if field == "filename":  # a job's file name comes with the file (multipart) or beside it (JSON)
        replies.append(api.transcribe(api_key, wav, path=TRANSCRIPTION_JOBS, filename=value))
        content_type, body = json_body(wav, model="whisper-1", filename=value)
        replies.append(api.call("POST", TRANSCRIPTION_JOBS, body=body, content_type=content_type, api_key=api_key))
    else:
        replies.extend(create_jobs(api, api_key, wav, **{field: value}))
    for reply in replies:
        error = assert_error(reply, 400, "invalid_value", param=field)
        assert len(error["message"]) < 300, error["message"][:300]
    accounts.assert_untouched(item, SEEDED)
    leftovers.assert_none(item)


def test_a_malformed_upload_id_on_a_job_is_400_before_anything_is_read_or_written(untouched_model, accounts, leftovers):
    api = untouched_model()
    api_key, item = accounts.new_key(SEEDED)
    for upload_id in ("upl_" + "x" * HUGE, "../../inbox/other", "upl_" + "0" * 31):
        content_type, body = json_body(None, model="whisper-1", upload_id=upload_id)
        reply = api.call("POST", TRANSCRIPTION_JOBS, body=body, content_type=content_type, api_key=api_key)
        assert_error(reply, 400, "invalid_upload_id", param="upload_id")
    leftovers.assert_none(item)


@pytest.mark.parametrize("job_id", ["job_" + "0" * 5000, "job_" + "g" * 32, "job_" + "A" * 32])
def test_a_job_id_of_another_shape_is_404_without_a_lookup(untouched_model, accounts, job_id):
    api = untouched_model()
    api_key, _ = accounts.new_key(SEEDED)
    for suffix in ("", "/result"):
        reply = api.call("GET", f"/v1/jobs/{job_id}{suffix}", api_key=api_key, resource=f"/v1/jobs/{{job_id}}{suffix}")
        error = assert_error(reply, 404, "job_not_found", param="job_id")
        assert len(error["message"]) < 100


def test_on_aws_a_webhook_must_be_https_on_443_to_a_public_host(untouched_model, accounts, leftovers, wav):
    api = untouched_model(WEBHOOK_ALLOW_PRIVATE_ADDRESSES="false", WEBHOOK_ALLOW_HTTP="false")
    api_key, item = accounts.new_key(SEEDED)
    for url in (
        "http://hooks.example.com/infery",
        "https://hooks.example.com:8080/infery",
        "https://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:8123/hook",
    ):
        for reply in (
            post_upload(api, api_key, {"webhook_url": url}),
            *create_jobs(api, api_key, wav, webhook_url=url),
        ):
            assert_error(reply, 400, "invalid_value", param="webhook_url")
    leftovers.assert_none(item)
    assert post_upload(api, api_key, {"webhook_url": "https://hooks.example.com/infery"}).status == 201


def test_locally_a_webhook_to_loopback_over_http_is_accepted(untouched_model, accounts, leftovers, wav):
    api = untouched_model(WEBHOOK_ALLOW_PRIVATE_ADDRESSES="true", WEBHOOK_ALLOW_HTTP="true")
    api_key, _ = accounts.new_key(SEEDED)
    assert post_upload(api, api_key, {"webhook_url": "http://127.0.0.1:8123/hook"}).status == 201
    reply = api.transcribe(api_key, wav, path=TRANSCRIPTION_JOBS, webhook_url="http://127.0.0.1:8123/hook")
    assert reply.status == 202, reply.text
    leftovers.drain()


# --- the minimum credit at creation ----------------------------------------------------------------------------------


def test_uploads_and_jobs_need_the_minimum_credit_at_creation(untouched_model, accounts, leftovers, wav):
    api = untouched_model()
    api_key, item = accounts.new_key(0)
    replies = [
        post_upload(api, api_key, {}),
        post_upload(api, api_key, {"start_job": False}),
        *create_jobs(api, api_key, wav),
        api.call(
            "POST",
            TRANSCRIPTION_JOBS,
            body=json.dumps({"model": "whisper-1", "upload_id": "upl_" + "0" * 32}).encode(),
            content_type="application/json",
            api_key=api_key,
        ),
    ]
    for reply in replies:
        error = assert_error(reply, 402, "insufficient_credits", error_type="insufficient_quota")
        assert "Top up" in error["message"]
        assert reply.header("x-infery-credits-balance") == "0"
    leftovers.assert_none(item)
    assert accounts.ledger(item) == []


def test_a_deployment_minimum_above_one_credit_is_what_creation_needs(untouched_model, accounts, leftovers, wav):
    api = untouched_model(MIN_CREDITS_PER_REQUEST="3")
    api_key, item = accounts.new_key(2)
    for reply in (post_upload(api, api_key, {}), *create_jobs(api, api_key, wav)):
        assert "at least 3" in assert_error(reply, 402, "insufficient_credits")["message"]
    leftovers.assert_none(item)
    rich_key, _ = accounts.new_key(3)
    assert post_upload(api, rich_key, {}).status == 201
