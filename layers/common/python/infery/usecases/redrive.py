"""Jobs stuck in the queue: a queued job whose message was lost (or never sent) is queued again.

The reconciler runs this on its schedule; the store's conditions make a run that races a worker harmless.
"""

from __future__ import annotations

from infery.domain.clock import parse_timestamp
from infery.domain.jobs import Job, JobStatus
from infery.usecases.ports import JobQueue, Jobs


def redrive_stuck_jobs(jobs: Jobs, queue: JobQueue, *, now: int, queued_grace_seconds: int) -> list[Job]:
    """Queue again the jobs no worker will move any more, and return them: a running job whose lease ran out (its
    worker crashed, or a failure could not even be recorded: DynamoDB throttled it too) and a queued job that
    waited longer than the grace period (its message went to the dead-letter queue, or a backlog holds it). Each
    one's next claim counts an attempt, so a job that keeps failing ends failed and refunded after its attempts; the
    reconciler runs this. A queued job sent again waits a whole grace period before the next send: behind a backlog
    every run would otherwise add another message for each waiting job to the queue that is already behind."""
    redriven = []
    for job in jobs.unfinished():
        if job.status is JobStatus.RUNNING:
            # the row just read says whether its lease ran out; the conditional write settles a race with its worker
            stuck = job.lease_until < now and jobs.release_if_lease_expired(job.job_id, now)
        else:
            stuck = (
                job.status is JobStatus.QUEUED
                and parse_timestamp(job.updated_at).timestamp() < now - queued_grace_seconds
                and jobs.requeue_if_still_waiting(job.job_id, job.updated_at, now)
            )
        if stuck:
            queue.send(job.job_id)  # a duplicate of a message still on its way is harmless: one claim wins
            redriven.append(job)
    return redriven
