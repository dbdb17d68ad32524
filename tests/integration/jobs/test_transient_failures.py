"""Transient endpoint failures: retried through SQS, refunded each time, failed on the last delivery."""

from __future__ import annotations

from infery.domain.jobs import JobStatus
from infery.settings import get_worker_settings

from tests.support.jobs import (
    BUSY,
    SEEDED,
    assert_no_batch_failures,
    drop_and_receive,
    redelivered,
    s3_test_event,
)


def test_a_busy_endpoint_is_retried_by_sqs_and_the_last_delivery_fails_the_job(
    load_worker, fake_runtime, store, jobs_queue, accounts, short_wav, audio_resources
):
    url, model = fake_runtime(503, *BUSY)
    worker = load_worker(url)
    assert get_worker_settings().worker_max_receives == 3
    api_key, item = accounts.new_key(SEEDED)
    messages = drop_and_receive(store, jobs_queue, item, "busy.wav", short_wav)
    message_id = messages[0]["MessageId"]

    # a batch with an innocent message beside it: only the failing one is reported
    response = worker.deliver([*messages, s3_test_event(audio_resources["bucket"])], receive_count=1)
    assert response == {"batchItemFailures": [{"itemIdentifier": message_id}]}
    assert model.calls == 1
    job = store.only_job(item)
    assert job.status is JobStatus.QUEUED and job.lease_until == 0 and job.error is None
    entries = accounts.request_entries(item, job.job_id)
    assert set(entries) == {"reserve", "refund"}
    assert int(entries["refund"]["credits"]) == -int(entries["reserve"]["credits"]) >= 1
    accounts.assert_untouched(item, SEEDED)

    assert redelivered(worker, messages, receive_count=2) == {message_id}  # alone in its batch, as BatchSize is 1
    assert store.only_job(item).status is JobStatus.QUEUED
    accounts.assert_untouched(item, SEEDED)

    assert_no_batch_failures(worker.deliver(messages, receive_count=3))  # the last: failed here, not in the DLQ
    job = store.only_job(item)
    assert job.status is JobStatus.FAILED and job.error is not None and job.error.code
    assert job.attempts == 3
    assert "nothing was charged" in job.error.message
    assert store.results_of(item) == []
    accounts.assert_untouched(item, SEEDED)

    assert_no_batch_failures(worker.deliver(messages, receive_count=4))  # a straggler changes nothing
    assert store.only_job(item).attempts == 3


def test_a_job_retried_after_a_transient_failure_succeeds_once_the_endpoint_recovers(
    load_worker, fake_runtime, model_server_url, store, jobs_queue, accounts, short_wav
):
    url, _ = fake_runtime(503, *BUSY)
    busy_worker = load_worker(url)
    api_key, item = accounts.new_key(SEEDED)
    messages = drop_and_receive(store, jobs_queue, item, "retry.wav", short_wav)
    assert redelivered(busy_worker, messages, receive_count=1) == {messages[0]["MessageId"]}
    assert store.only_job(item).status is JobStatus.QUEUED

    recovered = load_worker(model_server_url)
    assert redelivered(recovered, messages, receive_count=2) == set()
    job = store.only_job(item)
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert store.results_of(item) == [f"results/{item.key_id}/{job.job_id}.json"]
    assert accounts.balance(item) == SEEDED - (job.credits_used or 0) and job.credits_used == 1
    assert [entry for entry in accounts.ledger(item) if entry["kind"] == "settle"] != []
    assert store.open_reservations(item) == []


def test_every_delivery_of_a_job_tries_the_endpoint_and_the_final_error_names_its_failure(
    load_worker, fake_runtime, store, jobs_queue, accounts, short_wav
):
    url, model = fake_runtime(503, *BUSY)
    worker = load_worker(url)
    api_key, item = accounts.new_key(SEEDED)
    messages = drop_and_receive(store, jobs_queue, item, "busy.wav", short_wav)
    assert [redelivered(worker, messages, receive_count) != set() for receive_count in (1, 2, 3)] == [True, True, False]
    assert model.calls == 3
    job = store.only_job(item)
    assert job.error is not None and job.error.code == "model_unavailable"
    accounts.assert_untouched(item, SEEDED)
