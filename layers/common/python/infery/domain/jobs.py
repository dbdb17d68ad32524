"""A transcription job: what it holds, what its owner sees of it, and the states it goes through.

    awaiting_upload -> queued -> running -> succeeded
                          ^         |  \\-> failed
                          +---------+ (a crashed worker's lease ran out, or the model asked to retry)

A job is claimed only while queued or awaiting its upload, or running with a lease that ran out
(``may_be_claimed``; the job store makes its claim conditional on it), so a duplicate delivery finds the job
taken. Only the worker holding the claim finishes it, and the job is charged under its own id, once.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from infery.domain.clock import now_iso
from infery.domain.ids import new_webhook_secret
from infery.domain.parts import JobPart
from infery.domain.transcription import TranscriptionOptions

JOB_RETENTION_SECONDS = 30 * 24 * 3600


# What a job's owner never sees: the key hash, the webhook secret, where things are stored, the bookkeeping
JOB_PRIVATE_FIELDS = frozenset(
    {
        "job_id",  # shown as "id"
        "key_hash",
        "webhook_secret",
        "lease_until",
        "result_key",
        "source_uri",
        "source_url",  # a presigned URL is a credential: never shown back, nor sent in a webhook
        "known_speakers_key",
        "inference_id",
        "parts",  # shown as the progress they add up to
        "open_key_id",
        "open_until",
    }
)


class JobStatus(StrEnum):
    AWAITING_UPLOAD = "awaiting_upload"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class JobError(BaseModel):
    code: str
    message: str


class WebhookAttempt(BaseModel):
    at: str
    status_code: int | None = None
    error: str | None = None


class Job(BaseModel):
    job_id: str
    key_id: str
    key_hash: str
    status: JobStatus
    progress: float = 0.0
    options: TranscriptionOptions
    source_uri: str | None = None
    # audio sent by URL: fetched by the worker when the job runs (into the bucket, where source_uri would point)
    source_url: str | None = None
    upload_id: str | None = None
    filename: str | None = None
    # the bucket's object holding the known speakers' samples (usecases/known_speakers.py), not the item
    known_speakers_key: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_attempts: list[WebhookAttempt] = Field(default_factory=list)
    error: JobError | None = None
    result_key: str | None = None
    credits_used: int | None = None
    audio_seconds: float | None = None
    attempts: int = 0
    lease_until: int = 0
    # the asynchronous invocation running this attempt (also the id its credits are reserved under)
    inference_id: str | None = None
    # a long job's attempt runs as parts, each its own invocation (empty: the attempt is one invocation)
    parts: list[JobPart] = Field(default_factory=list)
    # while the job is open (not finished): its key, and until when it counts against the key's open-work cap
    open_key_id: str | None = None
    open_until: int | None = None
    created_at: str
    updated_at: str
    expires_at: int

    def public_view(self) -> dict[str, Any]:
        """What GET /v1/jobs/{id} shows: no key hash, no secret, no lease bookkeeping."""
        view = self.model_dump(
            mode="json",
            exclude=set(JOB_PRIVATE_FIELDS),
        )
        return {"id": self.job_id, "object": "transcription.job", **view}


def new_job(
    *,
    job_id: str,
    key_id: str,
    key_hash: str,
    options: TranscriptionOptions,
    status: JobStatus,
    source_uri: str | None = None,
    source_url: str | None = None,
    upload_id: str | None = None,
    filename: str | None = None,
    webhook_url: str | None = None,
    open_until: int | None = None,
    known_speakers_key: str | None = None,
) -> Job:
    """A new job; ``open_until``: until when it counts as its key's open work if it never finishes."""
    now = now_iso()
    return Job(
        job_id=job_id,
        key_id=key_id,
        key_hash=key_hash,
        status=status,
        options=options,
        source_uri=source_uri,
        source_url=source_url,
        upload_id=upload_id,
        filename=filename,
        known_speakers_key=known_speakers_key,
        webhook_url=webhook_url,
        webhook_secret=new_webhook_secret() if webhook_url else None,
        open_key_id=key_id if open_until is not None else None,
        open_until=open_until,
        created_at=now,
        updated_at=now,
        expires_at=int(time.time()) + JOB_RETENTION_SECONDS,
    )


# A worker may claim a job in these states, or a running one whose lease ran out (its worker crashed).
CLAIMABLE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.AWAITING_UPLOAD})


def may_be_claimed(job: Job, now: int) -> bool:
    """Whether a worker may take ``job`` at ``now`` (epoch seconds); the job store's claim is conditional on this."""
    return job.status in CLAIMABLE_STATUSES or (job.status is JobStatus.RUNNING and job.lease_until < now)
