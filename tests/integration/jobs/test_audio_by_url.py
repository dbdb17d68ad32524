"""``url`` through the handlers, against moto and the real model server: a sync call fetches in the API function and
transcribes what it stored; a job request only checks the URL and queues the job, and the worker fetches it when the
job runs. Refusals charge nothing. The audio is served by a server the test starts on 127.0.0.1
(tests/support/audio_server.py), which only the local stack's rules (private addresses, http) reach."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from infery.domain.jobs import JobStatus

from tests.support.api import TRANSCRIPTIONS, TRANSLATIONS, assert_error, assert_ok
from tests.support.audio_server import AudioServer, serving_audio
from tests.support.builders import inference_result, segment
from tests.support.jobs import (
    SEEDED,
    TRANSCRIPTION_JOBS,
    assert_charged_once,
    assert_no_batch_failures,
    assert_transcript,
    get_job,
)
from tests.support.model_replies import model_answer

LOCAL_RULES = {"WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true", "WEBHOOK_ALLOW_HTTP": "true"}
DEPLOYED_RULES = {"WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "false", "WEBHOOK_ALLOW_HTTP": "false"}


@pytest.fixture
def audio_server(short_wav: bytes) -> Iterator[AudioServer]:
    with serving_audio(short_wav) as served:
        yield served


@pytest.fixture
def local_api(load_api, model_server_url, storage_endpoints):
    """The API as the local stack runs it: it fetches from loopback over http."""
    return load_api(model_server_url, **LOCAL_RULES)


def test_a_sync_call_by_url_transcribes_the_stored_fetch_and_charges_once(
    local_api, store, accounts, audio_server, short_wav
):
    api_key, item = accounts.new_key(SEEDED)

    reply = local_api.transcribe(api_key, None, url=audio_server.url("/redirects/2"), response_format="text")

    assert_ok(reply)
    assert_transcript(reply.text)
    stored = store.objects(f"uploads/{item.key_id}/")  # fetched into the key's own uploads, as a file is stored
    assert len(stored) == 1
    assert store.s3.get_object(Bucket=store.bucket, Key=stored[0])["Body"].read() == short_wav
    assert_charged_once(accounts, store, item, reply.request_id)
    assert reply.header("x-infery-credits-used") == str(SEEDED - accounts.balance(item))


def test_a_translation_by_url_in_json_is_taken_too(local_api, accounts, audio_server):
    api_key, _ = accounts.new_key(SEEDED)

    reply = local_api.transcribe_json(api_key, None, path=TRANSLATIONS, url=audio_server.url("/audio"))

    assert_ok(reply)
    assert reply.json()["text"].strip()


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/not-audio", "url_not_audio"),
        ("/redirects/4", "url_too_many_redirects"),
        (f"/longer-than-said/{5 * 1024 * 1024}", "url_too_large"),  # past the sync limit, 4 MiB
        ("/status/404", "url_unreachable"),
    ],
)
def test_a_sync_fetch_that_fails_is_400_with_its_code_and_charges_and_stores_nothing(
    local_api, store, accounts, audio_server, path, code
):
    api_key, item = accounts.new_key(SEEDED)

    reply = local_api.transcribe(api_key, None, url=audio_server.url(path))

    assert_error(reply, 400, code, param="url")
    accounts.assert_untouched(item, SEEDED)
    assert store.objects(f"uploads/{item.key_id}/") == []


def test_a_server_that_never_answers_is_400_url_timeout(load_api, model_server_url, storage_endpoints, accounts):
    with serving_audio(b"") as silent:
        api = load_api(model_server_url, **LOCAL_RULES, AUDIO_URL_TIMEOUT_SECONDS="1")
        api_key, item = accounts.new_key(SEEDED)

        reply = api.transcribe(api_key, None, url=silent.url("/never"))

    assert_error(reply, 400, "url_timeout", param="url")
    accounts.assert_untouched(item, SEEDED)


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://127.0.0.1:8000/a.wav", "invalid_value"),  # a deployment fetches over https only
        ("https://10.0.0.8/a.wav", "url_address_not_allowed"),
        ("https://[::ffff:169.254.169.254]/latest/meta-data/", "url_address_not_allowed"),
    ],
)
@pytest.mark.parametrize("path", [TRANSCRIPTIONS, TRANSCRIPTION_JOBS])
def test_a_deployment_refuses_urls_inside_its_network_when_they_arrive(
    load_api, model_server_url, storage_endpoints, jobs_queue, accounts, url, code, path
):
    api_key, item = accounts.new_key(SEEDED)

    reply = load_api(model_server_url, **DEPLOYED_RULES).transcribe(api_key, None, path=path, url=url)

    assert_error(reply, 400, code, param="url")
    accounts.assert_untouched(item, SEEDED)
    assert jobs_queue.drain() == []


def test_url_and_a_file_together_are_400_ambiguous_audio(local_api, accounts, audio_server, short_wav):
    api_key, item = accounts.new_key(SEEDED)

    reply = local_api.transcribe(api_key, short_wav, url=audio_server.url("/audio"))

    assert_error(reply, 400, "ambiguous_audio", param="url")
    assert audio_server.paths == []


def test_a_job_by_url_is_queued_at_once_and_the_worker_fetches_and_charges_it_once(
    local_api, load_worker, model_server_url, store, jobs_queue, accounts, audio_server
):
    worker = load_worker(model_server_url)
    api_key, item = accounts.new_key(SEEDED)

    reply = local_api.transcribe(api_key, None, path=TRANSCRIPTION_JOBS, url=audio_server.url("/audio"))

    assert reply.status == 202, reply.text
    job_id = reply.json()["id"]
    assert reply.json()["status"] == "queued" and "source_url" not in reply.json()
    assert audio_server.paths == []  # the API's request did not wait for the fetch
    assert_no_batch_failures(worker.deliver(jobs_queue.drain()))
    assert audio_server.paths == ["/audio"]
    assert_no_batch_failures(worker.deliver(jobs_queue.drain()))  # the stored fetch's S3 event starts nothing
    result = get_job(local_api, api_key, job_id, result=True)
    assert_ok(result)
    assert_transcript(result.json()["text"])
    assert_charged_once(accounts, store, item, job_id)


@pytest.mark.parametrize(("path", "code"), [("/not-audio", "url_not_audio"), ("/status/500", "url_unreachable")])
def test_a_job_whose_fetch_fails_fails_with_its_code_and_charges_nothing(
    local_api, load_worker, model_server_url, store, jobs_queue, accounts, audio_server, path, code
):
    worker = load_worker(model_server_url)
    api_key, item = accounts.new_key(SEEDED)
    reply = local_api.transcribe(api_key, None, path=TRANSCRIPTION_JOBS, url=audio_server.url(path))
    assert reply.status == 202, reply.text

    assert_no_batch_failures(worker.deliver(jobs_queue.drain()))

    job = get_job(local_api, api_key, reply.json()["id"]).json()
    assert job["status"] == JobStatus.FAILED.value and job["error"]["code"] == code
    accounts.assert_untouched(item, SEEDED)
    assert store.objects(f"uploads/{item.key_id}/") == []


@pytest.fixture
def counted_model(fake_runtime):
    """A model that hears 12 s of audio and counts its calls."""
    return fake_runtime(200, model_answer(12.0))


def test_a_key_that_cannot_pay_gets_its_402_before_the_url_is_fetched(
    load_api, counted_model, storage_endpoints, store, accounts, audio_server
):
    url, fake = counted_model
    api_key, item = accounts.new_key(0)

    reply = load_api(url, **LOCAL_RULES).transcribe(api_key, None, url=audio_server.url("/audio"))

    assert_error(reply, 402, "insufficient_credits", error_type="insufficient_quota")
    assert reply.header("x-infery-credits-balance") == "0" and "at least 1" in reply.json()["error"]["message"]
    assert audio_server.paths == [] and store.objects(f"uploads/{item.key_id}/") == [] and fake.calls == 0
    accounts.assert_untouched(item, 0)


def test_an_unknown_model_is_refused_before_the_url_is_fetched(
    load_api, counted_model, storage_endpoints, accounts, audio_server
):
    url, _ = counted_model
    api_key, _ = accounts.new_key(SEEDED)

    reply = load_api(url, **LOCAL_RULES).transcribe(api_key, None, url=audio_server.url("/audio"), model="nope-1")

    assert_error(reply, 400, "model_not_found", param="model")
    assert audio_server.paths == []


def test_a_replayed_url_request_whose_answer_was_too_large_to_keep_fetches_nothing_again(
    load_api, fake_runtime, storage_endpoints, accounts, audio_server
):
    many = [segment(index, index * 0.5, index * 0.5 + 0.5, " " + "word " * 60) for index in range(1200)]
    url, fake = fake_runtime(200, json.loads(inference_result("many words", many, duration=600.0).model_dump_json()))
    api = load_api(url, **LOCAL_RULES)
    api_key, item = accounts.new_key(1000)
    headers = [("Idempotency-Key", f"by-url-{uuid.uuid4()}")]
    fields = {"url": audio_server.url("/audio"), "response_format": "verbose_json", "headers": headers}

    first = api.transcribe(api_key, None, **fields)
    assert_ok(first)
    assert len(first.text) > 400_000  # more than its idempotency record holds: rendered again on a replay
    audio_server.audio = b"a presigned URL that has expired since"
    retry = api.transcribe(api_key, None, **fields)

    assert_ok(retry)
    assert retry.header("idempotent-replayed") == "true" and retry.json() == first.json()
    assert audio_server.paths == ["/audio"] and fake.calls == 1
    assert accounts.balance(item) == 1000 - first.json()["credits_used"]
