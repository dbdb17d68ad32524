"""Jobs that no worker will move any more, found and queued again by the reconciler (functions/reconciler/app.py):
a worker that died holding a job's lease, a job whose message was lost. Against moto and the real model server.

The reconciler is called with a ``now`` in the future instead of waiting for leases to run out."""

from __future__ import annotations

import json
import time

from infery.adapters.job_store import JobStore
from infery.domain.jobs import JobStatus

from tests.support.jobs import SEEDED, TRANSCRIPTION_JOBS, assert_no_batch_failures, post_upload

LEASE_SECONDS = 360
GRACE_SECONDS = 1200


def queued_job(api, api_key, short_wav, jobs_queue) -> tuple[str, list]:
    reply = api.transcribe(api_key, short_wav, path=TRANSCRIPTION_JOBS)
    assert reply.status == 202, reply.text
    return reply.json()["id"], jobs_queue.drain()


def test_a_job_whose_worker_died_holding_it_is_queued_again_and_finishes_charged_once(
    jobs_api, load_reconciler, load_worker, model_server_url, store, jobs_queue, accounts, short_wav
):
    api_key, item = accounts.new_key(SEEDED)
    job_id, _lost = queued_job(jobs_api, api_key, short_wav, jobs_queue)
    # a worker claims the job and dies before it can submit, fail or hand it back
    dead = JobStore(store.jobs_table).claim(job_id, LEASE_SECONDS, int(time.time()) + 3 * LEASE_SECONDS)
    assert dead is not None and dead.status is JobStatus.RUNNING and dead.inference_id is None
    reconciler = load_reconciler()

    assert reconciler.redrive_stuck_jobs(now=time.time()) == 0  # its lease is live: the worker may still be at it
    assert jobs_queue.drain() == [] and store.job(job_id).status is JobStatus.RUNNING

    assert reconciler.redrive_stuck_jobs(now=time.time() + LEASE_SECONDS + 60) == 1
    assert store.job(job_id).status is JobStatus.QUEUED
    messages = jobs_queue.drain()
    assert [json.loads(message["Body"])["job_id"] for message in messages] == [job_id]

    worker = load_worker(model_server_url)
    assert_no_batch_failures(worker.deliver(messages, receive_count=1))
    job = store.job(job_id)
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert job.attempts == 2 and job.credits_used == 1
    assert accounts.balance(item) == SEEDED - 1 == accounts.ledger_sum(item)
    assert store.open_reservations(item) == []
    assert reconciler.redrive_stuck_jobs(now=time.time() + 10 * GRACE_SECONDS) == 0  # finished: left alone


def test_a_queued_job_whose_message_was_lost_is_queued_again_after_the_grace_period(
    jobs_api, load_reconciler, store, jobs_queue, accounts, short_wav
):
    api_key, item = accounts.new_key(SEEDED)
    job_id, _lost = queued_job(jobs_api, api_key, short_wav, jobs_queue)
    # an upload slot without a job is open work too: the reconciler passes over it
    upload = post_upload(jobs_api, api_key, {"start_job": False})
    assert upload.status == 201, upload.text
    reconciler = load_reconciler()

    assert reconciler.redrive_stuck_jobs(now=time.time() + GRACE_SECONDS - 60) == 0  # still within the grace
    first_run = time.time() + GRACE_SECONDS + 60
    assert reconciler.redrive_stuck_jobs(now=first_run) >= 1
    assert job_id in [json.loads(message["Body"])["job_id"] for message in jobs_queue.drain()]
    assert store.job(job_id).status is JobStatus.QUEUED
    accounts.assert_untouched(item, SEEDED)  # nothing is reserved before a worker runs it

    # still queued at the next runs (a backlog holds its message): not sent again until a whole grace has passed
    assert job_id not in sent_by(reconciler, jobs_queue, now=first_run + 300)
    assert job_id not in sent_by(reconciler, jobs_queue, now=first_run + GRACE_SECONDS - 60)
    assert sent_by(reconciler, jobs_queue, now=first_run + GRACE_SECONDS + 60).count(job_id) == 1


def sent_by(reconciler, jobs_queue, *, now: float) -> list[str]:
    """The jobs one reconciler run at ``now`` sent to the queue."""
    reconciler.redrive_stuck_jobs(now=now)
    return [json.loads(message["Body"])["job_id"] for message in jobs_queue.drain()]


def test_a_queued_job_waits_out_its_own_grace_period_not_the_reservations(
    jobs_api, load_reconciler, jobs_queue, accounts, short_wav
):
    api_key, _ = accounts.new_key(SEEDED)
    job_id, _lost = queued_job(jobs_api, api_key, short_wav, jobs_queue)
    reconciler = load_reconciler(QUEUED_JOB_GRACE_SECONDS=str(3 * GRACE_SECONDS))
    assert reconciler.settings.reservation_grace_seconds == GRACE_SECONDS
    assert job_id not in sent_by(reconciler, jobs_queue, now=time.time() + GRACE_SECONDS + 60)
    assert job_id in sent_by(reconciler, jobs_queue, now=time.time() + 3 * GRACE_SECONDS + 60)
