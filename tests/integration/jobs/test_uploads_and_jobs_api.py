"""The API: presigned uploads, job requests, job polling and results."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from infery.domain.jobs import JobStatus
from infery.settings import get_api_settings

from tests.support.api import (
    TRANSCRIPTIONS,
    assert_error,
    assert_ok,
)
from tests.support.jobs import (
    SEEDED,
    TEXT_CONTENT_TYPES,
    TRANSCRIPTION_JOBS,
    UPLOADS,
    assert_charged_once,
    assert_no_batch_failures,
    assert_transcript,
    decoded_policy,
    event_for,
    get_job,
    post_upload,
    upload_to_s3,
)


def requests_naming_an_upload(api, api_key, audio, upload_id):
    """The replies to each request that may name an upload: a transcription (multipart, then JSON) and a job."""
    return (
        api.transcribe(api_key, audio, upload_id=upload_id),
        api.transcribe_json(api_key, audio, upload_id=upload_id),
        api.transcribe(api_key, audio, path=TRANSCRIPTION_JOBS, upload_id=upload_id),
    )


def test_an_upload_runs_its_job_on_arrival_and_the_result_comes_in_every_format(
    jobs_api, worker, store, jobs_queue, accounts, short_wav
):
    api_key, item = accounts.new_key(SEEDED)
    other_key, _ = accounts.new_key(SEEDED)
    reply = post_upload(jobs_api, api_key, {"filename": "board meeting.wav", "response_format": "srt"})
    assert reply.status == 201, reply.text
    upload = reply.json()
    upload_id, job_id = upload["id"], upload["job_id"]
    object_key = f"uploads/{item.key_id}/{upload_id}"
    assert upload_id.startswith("upl_") and job_id == "job_" + upload_id.removeprefix("upl_")
    assert upload["method"] == "POST" and upload["fields"]["key"] == object_key
    assert urlsplit(upload["upload_url"]).path.rstrip("/").endswith(store.bucket)
    assert upload["max_bytes"] == get_api_settings().max_job_bytes == 1_000_000_000
    assert upload["webhook_secret"] is None  # no webhook asked for
    conditions = decoded_policy(upload)["conditions"]
    assert ["content-length-range", 1, 1_000_000_000] in conditions
    assert {"key": object_key} in conditions and {"bucket": store.bucket} in conditions

    waiting = get_job(jobs_api, api_key, job_id)
    assert_ok(waiting)
    assert waiting.json()["status"] == "awaiting_upload" and "result" not in waiting.json()
    assert_error(get_job(jobs_api, api_key, job_id, result=True), 409, "job_not_finished")
    for other in (get_job(jobs_api, other_key, job_id), get_job(jobs_api, other_key, job_id, result=True)):
        assert_error(other, 404, "job_not_found")

    upload_to_s3(upload, short_wav)
    messages = event_for(jobs_queue.drain(), object_key)
    assert_no_batch_failures(worker.deliver(messages))

    finished = get_job(jobs_api, api_key, job_id)
    assert_ok(finished)
    view = finished.json()
    assert view["id"] == job_id and view["object"] == "transcription.job" and view["status"] == "succeeded"
    assert view["filename"] == "board meeting.wav" and view["upload_id"] == upload_id
    assert view["result"].startswith("1\n00:00:0") and " --> " in view["result"]  # the job's own format, srt
    for hidden in ("key_hash", "webhook_secret", "lease_until", "result_key", "source_uri"):
        assert hidden not in view
    assert_error(get_job(jobs_api, other_key, job_id), 404, "job_not_found")  # finished, and still not theirs
    billed = assert_charged_once(accounts, store, item, job_id)
    assert view["credits_used"] == billed

    ledger_before = accounts.ledger(item)
    results = {}
    for response_format in ("json", "text", "srt", "verbose_json", "vtt"):
        reply = get_job(jobs_api, api_key, job_id, result=True, query=f"?response_format={response_format}")
        assert_ok(reply)
        content_type = reply.header("content-type") or ""
        assert content_type.startswith(TEXT_CONTENT_TYPES.get(response_format, "application/json")), content_type
        assert reply.header("x-infery-credits-used") == str(billed)
        assert reply.header("x-infery-credits-balance") == str(SEEDED - billed)  # as on every successful answer
        results[response_format] = reply.text
    assert json.loads(results["json"]) == {"text": json.loads(results["json"])["text"], "credits_used": billed}
    assert_transcript(json.loads(results["json"])["text"])
    assert_transcript(results["text"])
    assert results["srt"].startswith("1\n") and "00:00:00," in results["srt"]
    assert results["vtt"].startswith("WEBVTT") and "00:00:00." in results["vtt"]
    verbose = json.loads(results["verbose_json"])
    assert verbose["task"] == "transcribe" and verbose["language"] == "en" and verbose["segments"]
    assert verbose["duration"] == pytest.approx(view["audio_seconds"])
    default = get_job(jobs_api, api_key, job_id, result=True)
    assert default.text == results["srt"] and (default.header("content-type") or "").startswith("text/plain")
    assert_error(
        get_job(jobs_api, api_key, job_id, result=True, query="?response_format=docx"),
        400,
        "invalid_value",
        param="response_format",
    )
    assert accounts.ledger(item) == ledger_before  # reading a result costs nothing


def test_an_upload_for_the_sync_call_starts_no_job_and_is_transcribed_and_charged_once(
    load_api, model_proxy, worker, store, jobs_queue, accounts, short_wav
):
    inferences: list[dict[str, Any]] = []
    jobs_api = load_api(model_proxy(lambda body: inferences.append(json.loads(body))))
    api_key, item = accounts.new_key(SEEDED)
    reply = post_upload(jobs_api, api_key, {"start_job": False})
    assert reply.status == 201, reply.text
    upload = reply.json()
    assert "job_id" not in upload
    upload_to_s3(upload, short_wav)
    object_key = f"uploads/{item.key_id}/{upload['id']}"
    assert_no_batch_failures(worker.deliver(event_for(jobs_queue.drain(), object_key)))
    assert store.jobs_of(item) == []  # its arrival started nothing
    accounts.assert_untouched(item, SEEDED)

    reply = jobs_api.transcribe(api_key, None, upload_id=upload["id"], response_format="verbose_json")
    assert_ok(reply)
    transcript = reply.json()
    assert_transcript(transcript["text"])
    billed = assert_charged_once(accounts, store, item, reply.request_id)
    assert reply.header("x-infery-credits-used") == str(billed) == str(transcript["credits_used"])
    assert reply.header("x-infery-credits-balance") == str(SEEDED - billed)
    assert len(inferences) == 1  # by reference, from the key's own upload slot
    assert inferences[0]["audio_s3_uri"] == f"s3://{store.bucket}/{object_key}" and inferences[0].get("audio") is None


def test_an_upload_is_only_its_own_keys(jobs_api, store, jobs_queue, accounts, short_wav, fake_runtime, load_api):
    owner_key, _ = accounts.new_key(SEEDED)
    upload = post_upload(jobs_api, owner_key, {"start_job": False}).json()
    upload_to_s3(upload, short_wav)
    jobs_queue.drain()
    url, model = fake_runtime(200, {"never": "called"})
    api = load_api(url)
    thief_key, thief = accounts.new_key(SEEDED)
    not_uploaded = post_upload(api, thief_key, {"start_job": False}).json()["id"]
    for upload_id in (upload["id"], not_uploaded, "upl_" + "0" * 32):
        for reply in requests_naming_an_upload(api, thief_key, None, upload_id):
            assert_error(reply, 404, "upload_not_found", param="upload_id")
    assert model.calls == 0
    assert store.jobs_of(thief) == []
    assert jobs_queue.drain() == []
    accounts.assert_untouched(thief, SEEDED)


@pytest.mark.parametrize(
    "upload_id",
    [
        "upl_123",
        "upl_" + "0" * 31,
        "upl_" + "A" * 32,
        "upl_" + "0" * 33,
        "0" * 32,
        "job_" + "0" * 32,
        "upl_" + "0" * 32 + "/../x",
        f"../key_{'0' * 16}/upl_{'0' * 32}",
        "",
    ],
)
def test_a_malformed_upload_id_is_400(upload_id, fake_runtime, load_api, accounts, store):
    url, model = fake_runtime(200, {"never": "called"})
    api = load_api(url)
    api_key, item = accounts.new_key(SEEDED)
    for reply in requests_naming_an_upload(api, api_key, None, upload_id):
        assert_error(reply, 400, "invalid_upload_id", param="upload_id")
    assert model.calls == 0 and store.jobs_of(item) == []
    accounts.assert_untouched(item, SEEDED)


def test_a_json_upload_id_that_is_not_a_string_is_400(fake_runtime, load_api, accounts):
    url, _ = fake_runtime(200, {"never": "called"})
    api_key, _ = accounts.new_key(SEEDED)
    reply = load_api(url).call(
        "POST",
        TRANSCRIPTIONS,
        body=json.dumps({"model": "whisper-1", "upload_id": 7}).encode(),
        content_type="application/json",
        api_key=api_key,
    )
    assert_error(reply, 400, "invalid_upload_id", param="upload_id")


def test_a_file_and_an_upload_id_together_are_400(fake_runtime, load_api, accounts, store, short_wav):
    url, model = fake_runtime(200, {"never": "called"})
    api = load_api(url)
    api_key, item = accounts.new_key(SEEDED)
    upload_id = "upl_" + "0" * 32
    for reply in requests_naming_an_upload(api, api_key, short_wav, upload_id):
        assert_error(reply, 400, "ambiguous_audio", param="upload_id")
    assert model.calls == 0 and store.jobs_of(item) == []
    accounts.assert_untouched(item, SEEDED)


def test_an_upload_over_the_sync_limit_is_413_naming_jobs_on_the_sync_call_and_a_job_takes_it(
    fake_runtime, load_api, accounts, store, jobs_queue, short_wav
):
    url, model = fake_runtime(200, {"never": "called"})
    # a synchronous call reads half the file; a job (and so the presigned POST) takes exactly all of it
    api = load_api(url, MAX_UPLOAD_BYTES=str(len(short_wav) // 2), MAX_JOB_BYTES=str(len(short_wav)))
    api_key, item = accounts.new_key(SEEDED)
    upload = post_upload(api, api_key, {"start_job": False}).json()
    assert upload["max_bytes"] == len(short_wav)
    assert ["content-length-range", 1, len(short_wav)] in decoded_policy(upload)["conditions"]
    upload_to_s3(upload, short_wav)
    jobs_queue.drain()
    error = assert_error(
        api.transcribe(api_key, None, upload_id=upload["id"]), 413, "audio_too_large", param="upload_id"
    )
    assert "synchronous" in error["message"] and "/v1/audio/transcriptions/jobs" in error["message"]
    assert "nothing was charged" in error["message"]
    assert model.calls == 0
    accounts.assert_untouched(item, SEEDED)
    # the same upload, as a job: accepted (its size is within a job's)
    reply = api.transcribe(api_key, None, path=TRANSCRIPTION_JOBS, upload_id=upload["id"])
    assert reply.status == 202, reply.text


BAD_WEBHOOK_URLS = [
    "ftp://example.com/hook",
    "example.com/hook",
    "http://",
    "https:///path",
    "javascript:alert(1)",
    "http://exa mple.com/",
    "https://example.com/" + "a" * 2100,
    "",
]


@pytest.mark.parametrize("webhook_url", BAD_WEBHOOK_URLS)
def test_a_bad_webhook_url_is_400_and_creates_nothing(
    webhook_url, fake_runtime, load_api, accounts, store, jobs_queue, short_wav
):
    url, model = fake_runtime(200, {"never": "called"})
    api = load_api(url)
    api_key, item = accounts.new_key(SEEDED)
    for reply in (
        post_upload(api, api_key, {"webhook_url": webhook_url}),
        api.transcribe(api_key, short_wav, path=TRANSCRIPTION_JOBS, webhook_url=webhook_url),
    ):
        assert_error(reply, 400, "invalid_value", param="webhook_url")
    assert store.jobs_of(item) == []
    assert store.objects(f"uploads/{item.key_id}/") == []
    assert jobs_queue.drain() == []
    assert model.calls == 0
    accounts.assert_untouched(item, SEEDED)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "param"),
    [
        pytest.param({"file_size": 10}, "application/json", 400, "unknown_parameter", "file_size", id="unknown-field"),
        pytest.param(
            {"upload_id": "upl_" + "0" * 32}, "application/json", 400, "unknown_parameter", "upload_id", id="upload-id"
        ),
        pytest.param({"start_job": "yes"}, "application/json", 400, "invalid_value", "start_job", id="start-job-text"),
        pytest.param(
            {"response_format": "docx"}, "application/json", 400, "invalid_value", "response_format", id="bad-format"
        ),
        pytest.param({"language": "xx"}, "application/json", 400, "invalid_value", "language", id="bad-language"),
        pytest.param({"filename": "x" * 256}, "application/json", 400, "invalid_value", None, id="long-filename"),
        pytest.param({"model": "gpt-4o"}, "application/json", 400, "model_not_found", "model", id="unknown-model"),
        pytest.param(b"{not json", "application/json", 400, "invalid_json", None, id="invalid-json"),
        pytest.param(b"[]", "application/json", 400, "invalid_json", None, id="json-list"),
        pytest.param(
            b"filename=a.wav",
            "application/x-www-form-urlencoded",
            415,
            "unsupported_content_type",
            None,
            id="form-body",
        ),
    ],
)
def test_a_bad_upload_request_is_refused_and_creates_nothing(
    body, content_type, status, code, param, jobs_api, accounts, store
):
    api_key, item = accounts.new_key(SEEDED)
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = jobs_api.call("POST", UPLOADS, body=payload, content_type=content_type, api_key=api_key)
    assert_error(reply, status, code, param=param)
    assert store.jobs_of(item) == []


def test_uploads_and_jobs_need_a_key(jobs_api, accounts, short_wav):
    api_key, _ = accounts.new_key(SEEDED)
    job_id = post_upload(jobs_api, api_key, {}).json()["job_id"]
    for reply in (
        post_upload(jobs_api, None, {}),
        jobs_api.transcribe(None, short_wav, path=TRANSCRIPTION_JOBS),
        get_job(jobs_api, None, job_id),
        get_job(jobs_api, None, job_id, result=True),
        post_upload(jobs_api, "inf_" + "x" * 40, {}),
    ):
        assert_error(reply, 401)


def test_an_upload_without_a_body_is_a_default_job(jobs_api, accounts, store):
    api_key, item = accounts.new_key(SEEDED)
    reply = post_upload(jobs_api, api_key)
    assert reply.status == 201, reply.text
    job = store.job(reply.json()["job_id"])
    assert job.status is JobStatus.AWAITING_UPLOAD and job.key_id == item.key_id
    assert job.options.response_format.value == "json" and job.options.task == "transcribe"


@pytest.mark.parametrize("job_id", ["job_" + "0" * 32, "upl_" + "0" * 32, "nothing", "job_"])
def test_an_unknown_job_is_404(job_id, jobs_api, accounts):
    api_key, _ = accounts.new_key(SEEDED)
    for reply in (get_job(jobs_api, api_key, job_id), get_job(jobs_api, api_key, job_id, result=True)):
        assert_error(reply, 404, "job_not_found", param="job_id")


def test_a_job_with_a_file_is_queued_with_202_and_charges_nothing_yet(jobs_api, store, jobs_queue, accounts, short_wav):
    api_key, item = accounts.new_key(SEEDED)
    reply = jobs_api.transcribe(
        api_key, short_wav, path=TRANSCRIPTION_JOBS, response_format="text", filename="interview.wav"
    )
    assert reply.status == 202, reply.text
    created = reply.json()
    job_id = created["id"]
    assert created["object"] == "transcription.job" and created["status"] == "queued"
    assert created["options"]["response_format"] == "text" and created["filename"] == "interview.wav"
    assert created["webhook_secret"] is None and "result" not in created

    messages = jobs_queue.drain()
    job_messages = [json.loads(message["Body"]) for message in messages if "job_id" in json.loads(message["Body"])]
    assert job_messages == [{"job_id": job_id}]
    job = store.job(job_id)
    assert job.status is JobStatus.QUEUED and job.key_id == item.key_id
    stored = store.objects(f"uploads/{item.key_id}/")  # the audio went to the key's own prefix
    assert len(stored) == 1 and job.source_uri == f"s3://{store.bucket}/{stored[0]}"
    assert store.s3.get_object(Bucket=store.bucket, Key=stored[0])["Body"].read() == short_wav
    event_for(messages, stored[0])  # its arrival is an S3 event too; the worker ignores it (no job of that upload)
    assert_error(get_job(jobs_api, api_key, job_id, result=True), 409, "job_not_finished")
    assert {entry["kind"] for entry in accounts.ledger(item)} == {"topup"}  # nothing reserved until it runs
    assert accounts.balance(item) == SEEDED


def test_a_queued_job_with_a_file_runs_once_through_the_worker(
    jobs_api, worker, store, jobs_queue, accounts, short_wav
):
    api_key, item = accounts.new_key(SEEDED)
    reply = jobs_api.transcribe(api_key, short_wav, path=TRANSCRIPTION_JOBS, response_format="text")
    assert reply.status == 202, reply.text
    job_id = reply.json()["id"]
    messages = jobs_queue.drain()
    assert len(messages) == 2  # the job message and the S3 event of its stored audio
    assert_no_batch_failures(worker.deliver(messages))
    assert_no_batch_failures(worker.deliver(messages, receive_count=2))
    result = get_job(jobs_api, api_key, job_id, result=True)
    assert_ok(result)
    assert (result.header("content-type") or "").startswith("text/plain")
    assert_transcript(result.text)
    assert store.only_job(item).job_id == job_id
    assert_charged_once(accounts, store, item, job_id)


def test_the_sync_call_takes_no_webhook(fake_runtime, load_api, accounts, short_wav):
    url, model = fake_runtime(200, {"never": "called"})
    api_key, item = accounts.new_key(SEEDED)
    reply = load_api(url).transcribe(api_key, short_wav, webhook_url="https://example.com/hook")
    assert_error(reply, 400, "unknown_parameter", param="webhook_url")
    assert model.calls == 0


def test_a_key_at_its_cap_of_open_uploads_and_jobs_gets_429_until_one_finishes(
    load_api, model_server_url, storage_endpoints, worker, jobs_queue, store, accounts, short_wav
):
    """A key has a cap on open uploads and running jobs (MAX_OPEN_JOBS_PER_KEY); another key is not
    affected, and a finished job frees its place."""
    api = load_api(model_server_url, MAX_OPEN_JOBS_PER_KEY="3")
    api_key, item = accounts.new_key(SEEDED)
    other_key, _ = accounts.new_key(SEEDED)
    with_job = post_upload(api, api_key, {"model": "whisper-1"}).json()
    assert post_upload(api, api_key, {"start_job": False}).status == 201
    queued = api.transcribe(api_key, short_wav, path=TRANSCRIPTION_JOBS)
    assert queued.status == 202, queued.text
    for refused in (
        post_upload(api, api_key, {"start_job": False}),
        api.transcribe(api_key, short_wav, path=TRANSCRIPTION_JOBS),
    ):
        assert_error(refused, 429, "too_many_open_jobs")
        assert refused.header("retry-after") == "30"
    assert post_upload(api, other_key, {"start_job": False}).status == 201
    assert accounts.ledger_sum(item) == SEEDED  # nothing charged for what was refused

    upload_to_s3(with_job, short_wav)  # both jobs run to their end: two places are free again
    assert_no_batch_failures(worker.deliver(jobs_queue.drain()))
    for job_id in (with_job["job_id"], queued.json()["id"]):
        assert get_job(api, api_key, job_id).json()["status"] == "succeeded"
    for _ in range(2):
        assert post_upload(api, api_key, {"start_job": False}).status == 201
    assert_error(post_upload(api, api_key, {"start_job": False}), 429, "too_many_open_jobs")
