"""Media whose header says it cannot be transcribed is refused before any credit is held, on every path: a WAV
that says 0 bits per sample (400 undecodable_audio) and a WebM whose audio track says 1 Hz (400
sample_rate_too_low). The sync call and job creation answer the 400 themselves; a file that arrives in the bucket
fails its job in the worker, once, before anything is reserved. The model is never called."""

from __future__ import annotations

import pytest
from infery.domain.jobs import JobStatus

from tests.support.api import assert_error
from tests.support.jobs import (
    SEEDED,
    TRANSCRIPTION_JOBS,
    assert_no_batch_failures,
    drop_and_receive,
    event_for,
    post_upload,
    upload_to_s3,
)
from tests.support.media_headers import webm_declaring, zero_bit_wav

BAD_MEDIA = [
    pytest.param(zero_bit_wav(), "bad.wav", "undecodable_audio", id="wav-0-bits-per-sample"),
    pytest.param(webm_declaring(1.0), "bad.webm", "sample_rate_too_low", id="webm-1-hz"),
]


@pytest.fixture
def never_called(fake_runtime):
    """A model endpoint that fails the test if anything reaches it."""
    url, model = fake_runtime(500, {"error": "must not be called", "code": "internal"})
    yield url
    assert model.calls == 0, "refused media reached the model"


def _assert_nothing_charged(accounts, item) -> None:
    accounts.assert_untouched(item, SEEDED)
    assert [entry for entry in accounts.ledger(item) if entry["kind"] != "topup"] == []


@pytest.mark.parametrize(("audio", "filename", "code"), BAD_MEDIA)
def test_the_sync_call_refuses_it_before_reserving(never_called, load_api, accounts, audio, filename, code):
    api_key, item = accounts.new_key(SEEDED)
    reply = load_api(never_called).transcribe(api_key, audio, filename=filename)
    assert_error(reply, 400, code, param="file", error_type="invalid_request_error")
    _assert_nothing_charged(accounts, item)


@pytest.mark.parametrize(("audio", "filename", "code"), BAD_MEDIA)
def test_job_creation_refuses_it_before_storing_or_queueing(
    never_called, load_api, store, jobs_queue, accounts, audio, filename, code
):
    api_key, item = accounts.new_key(SEEDED)
    reply = load_api(never_called).transcribe(api_key, audio, path=TRANSCRIPTION_JOBS, filename=filename)
    assert_error(reply, 400, code, param="file", error_type="invalid_request_error")
    assert store.jobs_of(item) == [] and store.objects(f"uploads/{item.key_id}/") == []
    assert jobs_queue.drain() == []
    _assert_nothing_charged(accounts, item)


@pytest.mark.parametrize(("audio", "filename", "code"), BAD_MEDIA)
def test_a_dropped_file_fails_its_job_once_before_reserving(
    never_called, load_worker, store, jobs_queue, accounts, audio, filename, code
):
    worker = load_worker(never_called)
    api_key, item = accounts.new_key(SEEDED)
    messages = drop_and_receive(store, jobs_queue, item, filename, audio)
    for receive_count in (1, 2):  # delivered again: not retried, not charged
        assert_no_batch_failures(worker.deliver(messages, receive_count=receive_count))
        job = store.only_job(item)
        assert job.status is JobStatus.FAILED and job.error is not None and job.error.code == code, job.error
        assert job.attempts == 1
    assert jobs_queue.drain() == []
    _assert_nothing_charged(accounts, item)


@pytest.mark.parametrize(("audio", "filename", "code"), BAD_MEDIA)
def test_an_uploads_job_fails_once_before_reserving(
    never_called, load_api, load_worker, store, jobs_queue, accounts, audio, filename, code
):
    api, worker = load_api(never_called), load_worker(never_called)
    api_key, item = accounts.new_key(SEEDED)
    upload = post_upload(api, api_key, {"model": "whisper-1"}).json()
    upload_to_s3(upload, audio, filename)
    arrival = event_for(jobs_queue.drain(), f"uploads/{item.key_id}/{upload['id']}")
    assert_no_batch_failures(worker.deliver(arrival, receive_count=1))
    job = store.job(upload["job_id"])
    assert job.status is JobStatus.FAILED and job.error is not None and job.error.code == code, job.error
    assert job.attempts == 1
    _assert_nothing_charged(accounts, item)


def test_the_models_refusal_of_a_jobs_audio_ends_the_job_at_once_refunded(
    monkeypatch, model_proxy, load_worker, store, jobs_queue, accounts
):
    """Were the API's header check to miss such a file, the model's 400 is final: one run, no retry, all refunded."""
    monkeypatch.setattr("infery.usecases.charging.check_decodable", lambda audio, audio_format: None)
    runs: list[bytes] = []
    worker = load_worker(model_proxy(runs.append))
    api_key, item = accounts.new_key(SEEDED)
    messages = drop_and_receive(store, jobs_queue, item, "bad.wav", zero_bit_wav())
    for receive_count in (1, 2):
        assert_no_batch_failures(worker.deliver(messages, receive_count=receive_count))
    assert jobs_queue.drain() == []  # nothing sent again for another attempt
    job = store.only_job(item)
    assert job.status is JobStatus.FAILED and job.error is not None and job.error.code == "undecodable_audio"
    assert job.attempts == 1 and len(runs) == 1
    accounts.assert_untouched(item, SEEDED)
    assert {entry["kind"] for entry in accounts.ledger(item) if entry["kind"] != "topup"} == {"reserve", "refund"}


@pytest.mark.parametrize(("audio", "filename", "code"), BAD_MEDIA)
def test_a_job_request_naming_an_upload_refuses_it_before_queueing(
    never_called, load_api, store, jobs_queue, accounts, audio, filename, code
):
    api = load_api(never_called)
    api_key, item = accounts.new_key(SEEDED)
    upload = post_upload(api, api_key, {"start_job": False}).json()
    upload_to_s3(upload, audio, filename)
    jobs_queue.drain()  # the arrival's event
    reply = api.transcribe(api_key, None, path=TRANSCRIPTION_JOBS, upload_id=upload["id"])
    assert_error(reply, 400, code, param="file", error_type="invalid_request_error")
    assert store.jobs_of(item) == [] and jobs_queue.drain() == []
    _assert_nothing_charged(accounts, item)
