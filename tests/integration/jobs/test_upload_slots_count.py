"""An upload slot made with start_job false counts against its key's cap of open work for as long as its file can
sit in the bucket unbilled: until its presigned POST expires if nothing arrives, else until the file expires
(template.yaml's lifecycle rule for uploads/), unless a billed use (a sync call, a job that succeeded) releases it
first. A refused use releases nothing: a file the model cannot transcribe is not parked for free.

Time is the clock the handler's and the worker's job stores and job use case read, moved by the test."""

from __future__ import annotations

import time
from typing import Any

import pytest
from infery.adapters.job_store import JobStore
from infery.usecases.uploads import upload_expires_at

from tests.support.api import Clock, assert_error
from tests.support.jobs import (
    BUSY,
    SEEDED,
    TRANSCRIPTION_JOBS,
    assert_no_batch_failures,
    event_for,
    get_job,
    post_upload,
    upload_to_s3,
)
from tests.support.media_headers import zero_bit_wav
from tests.support.speech import silent_wav

MINUTES = 60
ANSWER = {"text": "hello", "language": "en", "duration": 1.0, "segments": []}


@pytest.fixture
def clock() -> Clock:
    return Clock(time.time())


def _on_clock(module: Any, clock: Clock) -> Any:
    """The function's job store and job use case read ``clock``."""
    wiring = module.wiring
    wiring.job_store = JobStore(wiring.dynamodb.Table(wiring.settings.jobs_table_name), clock=clock)
    wiring.job_service.clock = clock
    return module


@pytest.fixture
def clocked(load_api, load_worker, fake_runtime, model_server_url, clock):
    """An API whose cap is ``cap`` and a worker, both on ``clock``; the model answers at once (or is the real one)."""

    def load(cap: int, *, real_model: bool = False) -> tuple[Any, Any]:
        url = model_server_url if real_model else fake_runtime(200, ANSWER)[0]
        api = load_api(url, MAX_OPEN_JOBS_PER_KEY=str(cap))
        worker = load_worker(model_server_url)
        _on_clock(api.module, clock)
        _on_clock(worker.module, clock)
        return api, worker

    return load


def _uploaded_slot(api, worker, jobs_queue, api_key, item, audio: bytes) -> str:
    """A slot without a job, its file uploaded and its arrival seen by the worker; its upload id."""
    upload = post_upload(api, api_key, {"start_job": False}).json()
    upload_to_s3(upload, audio)
    assert_no_batch_failures(worker.deliver(event_for(jobs_queue.drain(), f"uploads/{item.key_id}/{upload['id']}")))
    return str(upload["id"])


def _assert_at_cap(api, api_key) -> None:
    refused = post_upload(api, api_key, {"start_job": False})
    assert_error(refused, 429, "too_many_open_jobs")
    assert refused.header("retry-after") == "30"


def test_an_uploaded_file_counts_until_it_expires_not_for_16_minutes(clocked, clock, jobs_queue, accounts, short_wav):
    api, worker = clocked(2)
    api_key, item = accounts.new_key(1)
    uploaded_at = clock.now
    for _ in range(2):
        _uploaded_slot(api, worker, jobs_queue, api_key, item, short_wav)
    _assert_at_cap(api, api_key)

    clock.now = uploaded_at + 17 * MINUTES  # past the presigned POST's expiry: the files are still there
    _assert_at_cap(api, api_key)
    clock.now = upload_expires_at(uploaded_at) - 1
    _assert_at_cap(api, api_key)
    clock.now = upload_expires_at(uploaded_at) + 1  # S3 has expired them: room again
    assert post_upload(api, api_key, {"start_job": False}).status == 201
    assert accounts.ledger_sum(item) == 1  # nothing charged for any of it


def test_a_slot_whose_file_never_arrives_stops_counting_when_its_presigned_post_expires(clocked, clock, accounts):
    api, _ = clocked(1)
    api_key, _ = accounts.new_key(SEEDED)
    assert post_upload(api, api_key, {"start_job": False}).status == 201
    _assert_at_cap(api, api_key)
    clock.now += 17 * MINUTES
    assert post_upload(api, api_key, {"start_job": False}).status == 201


def test_a_billed_sync_call_on_the_upload_releases_its_slot_even_before_its_arrival_is_seen(
    clocked, jobs_queue, accounts, short_wav
):
    api, worker = clocked(1)
    api_key, item = accounts.new_key(SEEDED)
    upload = post_upload(api, api_key, {"start_job": False}).json()
    upload_to_s3(upload, short_wav)
    _assert_at_cap(api, api_key)
    reply = api.transcribe(api_key, None, upload_id=upload["id"])
    assert reply.status == 200, reply.text
    # the arrival's event comes after the use: it does not open the slot again
    assert_no_batch_failures(worker.deliver(event_for(jobs_queue.drain(), f"uploads/{item.key_id}/{upload['id']}")))
    assert post_upload(api, api_key, {"start_job": False}).status == 201


def test_a_refused_sync_call_on_the_upload_releases_nothing(clocked, clock, jobs_queue, accounts):
    api, worker = clocked(1)
    api_key, item = accounts.new_key(SEEDED)
    upload_id = _uploaded_slot(api, worker, jobs_queue, api_key, item, zero_bit_wav())
    assert_error(api.transcribe(api_key, None, upload_id=upload_id), 400, "undecodable_audio", param="file")
    clock.now += 17 * MINUTES
    _assert_at_cap(api, api_key)


def test_a_job_on_the_upload_that_succeeds_releases_its_slot(clocked, jobs_queue, accounts, short_wav):
    api, worker = clocked(2, real_model=True)
    api_key, item = accounts.new_key(SEEDED)
    upload_id = _uploaded_slot(api, worker, jobs_queue, api_key, item, short_wav)
    queued = api.transcribe(api_key, None, path=TRANSCRIPTION_JOBS, upload_id=upload_id)
    assert queued.status == 202, queued.text
    _assert_at_cap(api, api_key)  # the slot and its job
    assert_no_batch_failures(worker.deliver(jobs_queue.drain()))
    assert get_job(api, api_key, queued.json()["id"]).json()["status"] == "succeeded"
    for _ in range(2):  # both places are free again
        assert post_upload(api, api_key, {"start_job": False}).status == 201
    _assert_at_cap(api, api_key)


def test_an_uploads_job_refused_for_its_file_keeps_the_file_counted_until_it_expires(
    clocked, clock, jobs_queue, store, accounts
):
    api, worker = clocked(1)
    api_key, item = accounts.new_key(SEEDED)
    upload = post_upload(api, api_key, {"model": "whisper-1"}).json()  # a job that runs on arrival
    upload_to_s3(upload, zero_bit_wav())
    assert_no_batch_failures(worker.deliver(jobs_queue.drain()))
    assert store.job(upload["job_id"]).status.value == "failed"  # refused, charged nothing: the file stays
    clock.now += 17 * MINUTES
    _assert_at_cap(api, api_key)
    clock.now = upload_expires_at(clock.now) + 1
    assert post_upload(api, api_key, {"start_job": False}).status == 201


def test_a_job_refused_for_the_keys_balance_keeps_its_file_counted(clocked, clock, jobs_queue, store, accounts):
    api, worker = clocked(1)
    api_key, item = accounts.new_key(1)  # enough to create a job, not to reserve a minute of audio
    queued = api.transcribe(api_key, silent_wav(16_000, 60), path=TRANSCRIPTION_JOBS)
    assert queued.status == 202, queued.text
    assert_no_batch_failures(worker.deliver(jobs_queue.drain()))
    job = store.job(queued.json()["id"])
    assert job.status.value == "failed" and job.error is not None and job.error.code == "insufficient_credits"
    clock.now += 17 * MINUTES
    _assert_at_cap(api, api_key)


def test_a_job_failed_by_our_side_does_not_count_against_the_key(
    load_api, load_worker, fake_runtime, clock, jobs_queue, store, accounts
):
    api = load_api(fake_runtime(200, ANSWER)[0], MAX_OPEN_JOBS_PER_KEY="1")
    busy_worker = load_worker(fake_runtime(503, *BUSY)[0])
    _on_clock(api.module, clock)
    _on_clock(busy_worker.module, clock)
    api_key, item = accounts.new_key(SEEDED)
    upload = post_upload(api, api_key, {"model": "whisper-1"}).json()
    upload_to_s3(upload, silent_wav(16_000, 3))
    assert_no_batch_failures(busy_worker.deliver(jobs_queue.drain(), receive_count=3))  # its last delivery
    job = store.job(upload["job_id"])
    assert job.status.value == "failed" and job.error is not None and job.error.code == "model_unavailable"
    assert post_upload(api, api_key, {"start_job": False}).status == 201
