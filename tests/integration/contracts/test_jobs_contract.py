"""The jobs port: FakeJobs and the JobStore on moto move a job through its states alike
(tests/integration/contracts)."""

from __future__ import annotations

import time
import uuid

import pytest
from infery.domain.ids import key_id_for, new_job_id
from infery.domain.jobs import CLAIMABLE_STATUSES, Job, JobError, JobStatus, WebhookAttempt, new_job
from infery.domain.transcription import Task, TranscriptionOptions

LEASE = 300
ERROR = "The audio could not be decoded."


def a_key() -> tuple[str, str]:
    """A key id and hash of their own for each test: the store's table is shared by the session."""
    key_hash = uuid.uuid4().hex * 2
    return key_id_for(key_hash), key_hash


def a_job(status: JobStatus = JobStatus.QUEUED, key: tuple[str, str] | None = None, **fields) -> Job:
    key_id, key_hash = key or a_key()
    return new_job(
        job_id=new_job_id(),
        key_id=key_id,
        key_hash=key_hash,
        options=TranscriptionOptions(task=Task.TRANSCRIBE, model="whisper-1"),
        status=status,
        open_until=int(time.time()) + 3600,
        **fields,
    )


def stored(jobs, job: Job) -> Job:
    assert jobs.create(job)
    found = jobs.get(job.job_id)
    assert found is not None
    return found


def claimed(jobs, job: Job) -> Job:
    running = jobs.claim(stored(jobs, job).job_id, LEASE, int(time.time()) + 2 * LEASE)
    assert running is not None
    return running


def test_a_created_job_reads_back_as_it_was_and_is_created_once(jobs):
    job = a_job(filename="meeting.wav", webhook_url="https://example.com/hook")
    assert jobs.create(job)
    assert jobs.get(job.job_id) == job
    assert not jobs.create(job.model_copy(update={"filename": "other.wav"}))
    assert jobs.get(job.job_id) == job
    assert jobs.get(new_job_id()) is None


@pytest.mark.parametrize("status", sorted(CLAIMABLE_STATUSES))
def test_a_job_is_claimed_while_claimable(jobs, status):
    job = stored(jobs, a_job(status))
    before = time.time()
    running = jobs.claim(job.job_id, LEASE, 1_900_000_000)
    assert running is not None
    assert (running.status, running.attempts, running.progress, running.open_until) == (
        JobStatus.RUNNING,
        1,
        0.05,
        1_900_000_000,
    )
    assert int(before) + LEASE <= running.lease_until <= int(time.time()) + LEASE
    assert running.inference_id is None
    assert jobs.get(job.job_id) == running


def test_a_running_job_is_claimed_again_only_once_its_lease_ran_out(jobs):
    running = claimed(jobs, a_job())
    assert jobs.claim(running.job_id, LEASE, 1_900_000_000) is None
    assert jobs.get(running.job_id) == running
    lost = jobs.claim(stored(jobs, a_job()).job_id, -5, 1_900_000_000)  # a lease already over: its worker is gone
    assert lost is not None
    again = jobs.claim(lost.job_id, LEASE, 1_900_000_000)
    assert again is not None and again.attempts == 2


def test_a_new_claim_forgets_the_last_attempts_inference(jobs):
    running = claimed(jobs, a_job())
    jobs.submitted(running.job_id, inference_id="inf-1", lease_until=0)  # the attempt's lease ran out
    again = jobs.claim(running.job_id, LEASE, 1_900_000_000)
    assert again is not None and again.inference_id is None and again.attempts == 2


def test_an_unknown_job_is_not_claimed(jobs):
    assert jobs.claim(new_job_id(), LEASE, 1_900_000_000) is None


@pytest.mark.parametrize("finish", ["succeed", "fail"])
def test_a_finished_job_is_never_claimed_again_and_is_no_longer_open(jobs, finish):
    running = claimed(jobs, a_job())
    if finish == "succeed":
        done = jobs.succeed(running.job_id, result_key="results/x.json", credits_used=3, audio_seconds=12.5)
        assert (done.status, done.progress, done.result_key, done.credits_used, done.audio_seconds) == (
            JobStatus.SUCCEEDED,
            1.0,
            "results/x.json",
            3,
            12.5,
        )
    else:
        done = jobs.fail(running.job_id, JobError(code="undecodable_audio", message=ERROR))
        assert (done.status, done.error) == (JobStatus.FAILED, JobError(code="undecodable_audio", message=ERROR))
    assert (done.open_key_id, done.open_until) == (None, None)
    assert jobs.get(running.job_id) == done
    assert jobs.claim(running.job_id, LEASE, 1_900_000_000) is None
    assert jobs.release(running.job_id) == done  # a transient failure reported late: the job stays finished
    assert jobs.submitted(running.job_id, inference_id="late", lease_until=1) == done
    assert jobs.get(running.job_id) == done
    assert done.job_id not in {job.job_id for job in jobs.unfinished()}


@pytest.mark.xfail(
    strict=True,
    reason="neither store guards it: succeed and fail write unconditionally, and a job is finished once because "
    "only the worker holding its claim finishes it (a duplicate delivery finds it unclaimable)",
)
def test_a_second_finish_changes_nothing(jobs):
    running = claimed(jobs, a_job())
    done = jobs.succeed(running.job_id, result_key="results/x.json", credits_used=3, audio_seconds=12.5)
    jobs.fail(running.job_id, JobError(code="late", message="a duplicate delivery"))
    assert jobs.get(running.job_id) == done


def test_a_released_job_is_queued_and_claimable_again(jobs):
    running = claimed(jobs, a_job())
    released = jobs.release(running.job_id)
    assert (released.status, released.lease_until) == (JobStatus.QUEUED, 0)
    assert jobs.claim(running.job_id, LEASE, 1_900_000_000) is not None


def test_an_expired_lease_is_released_once(jobs):
    running = claimed(jobs, a_job())
    assert not jobs.release_if_lease_expired(running.job_id, running.lease_until)  # not yet over
    assert jobs.release_if_lease_expired(running.job_id, running.lease_until + 1)
    assert not jobs.release_if_lease_expired(running.job_id, running.lease_until + 1)
    assert jobs.get(running.job_id).status is JobStatus.QUEUED


def test_a_queued_job_is_requeued_only_if_it_still_waits_since_then(jobs):
    job = stored(jobs, a_job())
    assert not jobs.requeue_if_still_waiting(job.job_id, "2001-01-01T00:00:00.000+00:00", 1_900_000_000)
    assert jobs.requeue_if_still_waiting(job.job_id, job.updated_at, 1_900_000_000)
    requeued = jobs.get(job.job_id)
    assert requeued.status is JobStatus.QUEUED and requeued.updated_at != job.updated_at
    assert not jobs.requeue_if_still_waiting(job.job_id, job.updated_at, 1_900_000_001)


def test_every_change_dates_the_job(jobs):
    job = stored(jobs, a_job().model_copy(update={"updated_at": "2001-01-01T00:00:00.000+00:00"}))
    assert job.updated_at == "2001-01-01T00:00:00.000+00:00"
    running = jobs.claim(job.job_id, LEASE, 1_900_000_000)
    assert running is not None and running.updated_at > job.updated_at


def test_submitted_holds_the_lease_for_the_inference_of_a_running_job_only(jobs):
    running = claimed(jobs, a_job())
    submitted = jobs.submitted(running.job_id, inference_id="inf-1", lease_until=1_900_000_000)
    assert (submitted.inference_id, submitted.lease_until, submitted.progress) == ("inf-1", 1_900_000_000, 0.1)
    queued = stored(jobs, a_job())
    assert jobs.submitted(queued.job_id, inference_id="inf-2", lease_until=1_900_000_000) == queued


def test_webhook_attempts_are_appended_in_order(jobs):
    job = stored(jobs, a_job())
    first = WebhookAttempt(at="2026-01-01T00:00:00.000+00:00", status_code=500)
    second = WebhookAttempt(at="2026-01-01T00:00:05.000+00:00", error="timed out")
    jobs.record_webhook_attempt(job.job_id, first)
    jobs.record_webhook_attempt(job.job_id, second)
    assert jobs.get(job.job_id).webhook_attempts == [first, second]


def test_a_keys_jobs_are_listed_newest_first_and_only_its_own(jobs):
    key = a_key()
    created = []
    for index in range(3):
        job = a_job(key=key).model_copy(update={"created_at": f"2026-01-0{index + 1}T00:00:00.000+00:00"})
        created.append(stored(jobs, job))
    stored(jobs, a_job())  # another key's
    listed, more = jobs.list_for_key(key[0], limit=2)
    assert [job.job_id for job in listed] == [created[2].job_id, created[1].job_id] and more
    listed, more = jobs.list_for_key(key[0])
    assert [job.job_id for job in listed] == [job.job_id for job in reversed(created)] and not more
    assert jobs.list_for_key(a_key()[0]) == ([], False)


def test_open_work_counts_unfinished_jobs_and_upload_slots_up_to_the_cap(jobs):
    key = a_key()
    now = int(time.time())
    finished = claimed(jobs, a_job(key=key))
    jobs.succeed(finished.job_id, result_key="r", credits_used=1, audio_seconds=1.0)
    stored(jobs, a_job(key=key))
    jobs.hold_upload_slot(key[0], "upl_" + uuid.uuid4().hex, now + 600)
    jobs.hold_upload_slot(key[0], "upl_" + uuid.uuid4().hex, now - 1)  # expired
    assert jobs.count_open(key[0], at_most=10) == 2
    assert jobs.count_open(key[0], at_most=1) >= 1  # counted up to the cap at least: the store counts whole pages
    assert jobs.count_open(a_key()[0], at_most=10) == 0


def test_an_upload_slot_is_kept_open_or_released_only_by_its_key_and_released_for_good(jobs):
    key, other = a_key(), a_key()
    upload_id = "upl_" + uuid.uuid4().hex
    now = int(time.time())
    jobs.hold_upload_slot(key[0], upload_id, now + 600)
    assert not jobs.keep_upload_slot_open(other[0], upload_id, now + 900)
    assert not jobs.release_upload_slot(other[0], upload_id)
    assert jobs.keep_upload_slot_open(key[0], upload_id, now + 900)
    assert jobs.count_open(key[0], at_most=10) == 1
    assert jobs.release_upload_slot(key[0], upload_id)
    assert jobs.count_open(key[0], at_most=10) == 0
    assert not jobs.release_upload_slot(key[0], upload_id)
    assert not jobs.keep_upload_slot_open(key[0], upload_id, now + 900)
    assert jobs.count_open(key[0], at_most=10) == 0
