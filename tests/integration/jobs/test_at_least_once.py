"""At-least-once delivery: one object, one job, one result, one charge."""

from __future__ import annotations

import threading
from typing import Any

from infery.domain.jobs import JobStatus

from tests.support.job_stack import (
    Worker,
)
from tests.support.jobs import (
    SEEDED,
    assert_charged_once,
    assert_no_batch_failures,
    drop_and_receive,
)


def assert_one_job_done_once(accounts, store, item):
    """The key's only job succeeded on its first claim, with one result and one charge; the job."""
    job = store.only_job(item)
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 1
    assert store.results_of(item) == [f"results/{item.key_id}/{job.job_id}.json"]
    assert_charged_once(accounts, store, item, job.job_id)
    return job


def test_the_same_s3_event_delivered_twice_is_one_job_and_one_charge(worker, store, jobs_queue, accounts, short_wav):
    api_key, item = accounts.new_key(SEEDED)
    messages = drop_and_receive(store, jobs_queue, item, "standup.wav", short_wav)

    assert_no_batch_failures(worker.deliver(messages))
    first = store.only_job(item)
    ledger_after_first = accounts.ledger(item)
    assert_no_batch_failures(worker.deliver(messages, receive_count=2))  # SQS redelivers; S3 may send twice

    job = assert_one_job_done_once(accounts, store, item)  # claimed once: the second delivery found it finished
    assert job.job_id == first.job_id
    assert job.updated_at == first.updated_at
    assert accounts.ledger(item) == ledger_after_first


def test_a_second_delivery_while_the_first_is_transcribing_is_acknowledged_and_charges_nothing(
    load_worker, model_proxy, store, jobs_queue, accounts, short_wav
):
    """Two Lambda instances get the same S3 event at once: the second arrives while the first holds the job."""
    api_key, item = accounts.new_key(SEEDED)
    messages = drop_and_receive(store, jobs_queue, item, "all-hands.wav", short_wav)
    inference_started, second_delivery_done = threading.Event(), threading.Event()
    invocations: list[None] = []

    def hold(_: bytes) -> None:  # keep the first worker's inference in flight until the second delivery is handled
        invocations.append(None)
        inference_started.set()
        assert second_delivery_done.wait(60)

    model_url = model_proxy(hold)
    first_worker, second_worker = load_worker(model_url), load_worker(model_url)
    first_response: list[dict[str, Any]] = []
    first = threading.Thread(target=lambda: first_response.append(first_worker.deliver(messages)))
    first.start()
    try:
        assert inference_started.wait(60)
        running = store.only_job(item)
        assert running.status is JobStatus.RUNNING and running.lease_until > 0
        second_response = second_worker.deliver(messages)
        assert store.only_job(item).status is JobStatus.RUNNING  # the duplicate took nothing from the first
    finally:
        second_delivery_done.set()
        first.join(120)

    assert_no_batch_failures(second_response)  # acknowledged: the job is in good hands
    assert first_response and first_response[0] == {"batchItemFailures": []}
    assert len(invocations) == 1  # the model ran once
    assert_one_job_done_once(accounts, store, item)


def test_two_deliveries_started_together_make_one_job_and_one_charge(
    load_worker, model_server_url, store, jobs_queue, accounts, short_wav
):
    """Both race from the start: to create the job, then to claim it."""
    api_key, item = accounts.new_key(SEEDED)
    messages = drop_and_receive(store, jobs_queue, item, "race.wav", short_wav)
    workers = [load_worker(model_server_url), load_worker(model_server_url)]
    barrier = threading.Barrier(2)
    responses: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def deliver(worker: Worker) -> None:
        try:
            barrier.wait(30)
            responses.append(worker.deliver(messages))
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=deliver, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert responses == [{"batchItemFailures": []}] * 2
    assert_one_job_done_once(accounts, store, item)
