"""The jobs table keeps a running job's parts (infery.adapters.job_store against moto): each part's end recorded
under a condition on the running attempt and that part's invocation, so a late or repeated notification changes
nothing it should not, and the write that completes the set sees every part done."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from infery.adapters.job_store import JobStore
from infery.domain.inference import Task
from infery.domain.jobs import JobError, JobStatus, new_job
from infery.domain.parts import JobPart
from infery.domain.transcription import TranscriptionOptions


@pytest.fixture(autouse=True)
def close_the_jobs_made(store: Any) -> Iterator[None]:
    """The table is the session's: a job left running would be another test's stuck job."""
    yield
    jobs = JobStore(store.jobs_table)
    for job_id in MADE:
        jobs.fail(job_id, JobError(code="test_over", message="closed by the test that made it"))
    MADE.clear()


MADE: list[str] = []


def running_job_in_parts(store: Any, count: int = 3) -> tuple[JobStore, str, list[JobPart]]:
    """A new running job whose attempt runs as ``count`` parts."""
    job_id = "job_" + secrets.token_hex(16)
    MADE.append(job_id)
    jobs = JobStore(store.jobs_table)
    jobs.create(
        new_job(
            job_id=job_id,
            key_id="key_0123456789abcdef",
            key_hash="h" * 64,
            options=TranscriptionOptions(task=Task.TRANSCRIBE, model="whisper-1"),
            status=JobStatus.QUEUED,
            source_uri="s3://bucket/uploads/key_0123456789abcdef/upl_0123456789abcdef0123456789abcdef",
            open_until=int(time.time()) + 3600,
        )
    )
    assert jobs.claim(job_id, 360, int(time.time()) + 3600) is not None
    parts = [
        JobPart(
            index=index,
            start=index * 600.5 or None,
            end=None if index == count - 1 else (index + 1) * 600.5,
            inference_id=f"{job_id}~p{index}",
        )
        for index in range(count)
    ]
    jobs.submitted(job_id, inference_id=job_id, lease_until=int(time.time()) + 9000, parts=parts)
    return jobs, job_id, parts


def done(jobs: JobStore, job_id: str, part: JobPart, attempt: str | None = None) -> Any:
    return jobs.part_done(
        job_id,
        inference_id=attempt or job_id,
        part_inference_id=part.inference_id,
        index=part.index,
        output_location=f"s3://bucket/async-outputs/{part.inference_id}.out",
        audio_seconds=600.25,
    )


def test_parts_are_stored_with_the_attempt_and_each_end_recorded_once_the_last_write_sees_all(store):
    jobs, job_id, parts = running_job_in_parts(store)
    assert [part.inference_id for part in jobs.get(job_id).parts] == [part.inference_id for part in parts]
    after_first = done(jobs, job_id, parts[2])
    assert after_first is not None and [part.done for part in after_first.parts] == [False, False, True]
    assert after_first.parts[2].audio_seconds == 600.25 and after_first.parts[1].start == 600.5
    assert done(jobs, job_id, parts[2]) is not None  # the same notification again: recorded again, nothing else moves
    done(jobs, job_id, parts[0])
    last = done(jobs, job_id, parts[1])
    assert last is not None and all(part.done for part in last.parts)


def test_a_notification_of_another_attempt_or_of_a_part_submitted_again_records_nothing(store):
    jobs, job_id, parts = running_job_in_parts(store)
    assert done(jobs, job_id, parts[0], attempt=f"{job_id}.2") is None
    again = parts[1].model_copy(update={"inference_id": f"{job_id}~p1r2", "submissions": 2})
    moved = jobs.part_resubmitted(
        job_id,
        inference_id=job_id,
        index=1,
        previous_inference_id=parts[1].inference_id,
        part=again,
        lease_until=int(time.time()) + 20_000,
    )
    assert moved is not None and moved.parts[1].inference_id == again.inference_id and moved.parts[1].submissions == 2
    assert moved.lease_until > int(time.time()) + 10_000
    # the invocation given up, late, and a second resubmission by a repeated failure notification: both refused
    assert done(jobs, job_id, parts[1]) is None
    assert (
        jobs.part_resubmitted(
            job_id,
            inference_id=job_id,
            index=1,
            previous_inference_id=parts[1].inference_id,
            part=again,
            lease_until=0,
        )
        is None
    )
    assert done(jobs, job_id, again) is not None


def test_a_new_claim_forgets_the_last_attempts_parts(store):
    jobs, job_id, parts = running_job_in_parts(store)
    jobs.release(job_id)
    claimed = jobs.claim(job_id, 360, int(time.time()) + 3600)
    assert claimed is not None and claimed.parts == [] and claimed.inference_id is None
    assert done(jobs, job_id, parts[0]) is None


def test_a_release_or_a_fail_for_another_attempt_changes_nothing(store):
    jobs, job_id, _ = running_job_in_parts(store)
    assert jobs.release(job_id, attempt=f"{job_id}.2").status is JobStatus.RUNNING
    refused = jobs.fail(job_id, JobError(code="x", message="late"), attempt=f"{job_id}.2")
    assert refused.status is JobStatus.RUNNING and refused.error is None and refused.open_key_id is not None
    released = jobs.release(job_id, attempt=job_id)
    assert released.status is JobStatus.QUEUED
    # a queued job is no running attempt: a late failure of that attempt does not fail it
    assert jobs.fail(job_id, JobError(code="x", message="late"), attempt=job_id).status is JobStatus.QUEUED
    jobs.claim(job_id, 360, int(time.time()) + 3600)
    jobs.submitted(job_id, inference_id=f"{job_id}.2", lease_until=int(time.time()) + 9000)
    failed = jobs.fail(job_id, JobError(code="x", message="refused"), attempt=f"{job_id}.2")
    assert failed.status is JobStatus.FAILED and failed.open_key_id is None
