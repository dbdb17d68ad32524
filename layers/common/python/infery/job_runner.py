"""The worker's use case: turn an arriving S3 object or a queued job into a finished, charged-once job.

A job runs in two steps, because the model may take longer than any one function invocation:
1. ``run`` (a job message): claim the job, check its audio, reserve its credits, submit it to the
   asynchronous endpoint, and hold the job's lease until the outcome can no longer arrive;
2. ``complete`` (the endpoint's notification): settle the credits from the real duration and store the
   result, or refund them, then notify the job's webhook.
Each step is idempotent: a repeated message or notification changes nothing that was already done.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from .async_inference import AsyncNotification
from .credits import LedgerEntry, LedgerKind
from .errors import AuthenticationFailed, InferyError, InvalidRequest
from .inference import InferenceResult, Task
from .job_views import JobPresenter
from .jobs import Job, JobError, JobStatus, job_id_for_object, job_id_for_upload, new_job
from .keys import ApiKeyItem, ensure_usable
from .observability import logger
from .ports import AsyncEndpoint, AudioObjects, Jobs, Keys
from .service import TranscriptionService
from .storage import StoredObject, parse_object_key
from .transcription_request import ResponseFormat, TranscriptionOptions, TranscriptionRequest
from .webhooks import deliver


class RetryLater(Exception):
    """A failure of ours that may pass (endpoint busy, S3 hiccup): the message goes back to the queue."""


@dataclass
class JobRunner:
    service: TranscriptionService
    jobs: Jobs
    store: AudioObjects
    keys: Keys
    endpoint: AsyncEndpoint
    presenter: JobPresenter
    lease_seconds: int
    # how long a submitted attempt holds its lease and its reservation (queue wait + run + grace)
    hold_seconds: int
    max_attempts: int = 3
    allow_private_webhooks: bool = False

    def job_for_object(self, stored: StoredObject) -> str | None:
        """The job an arriving object belongs to (created for inbox drops), or None when none should run."""
        if stored.area == "uploads":
            job_id = job_id_for_upload(stored.name)
            # an upload made without a job (for a sync call or a later job request) starts nothing
            return job_id if self.jobs.get(job_id) is not None else None
        try:
            key = self.keys.get(stored.key_id)
        except InferyError:
            logger.warning("object under the prefix of an unknown key", extra={"object_key": stored.key})
            return None
        job_id = job_id_for_object(stored.bucket, stored.key, stored.etag)
        options = TranscriptionOptions(task=Task.TRANSCRIBE, model=self.service.catalog.default_model,
                                       response_format=ResponseFormat.JSON)
        self.jobs.create(new_job(job_id=job_id, key_id=key.key_id, key_hash=key.key_hash, options=options,
                                 status=JobStatus.QUEUED, source_uri=stored.uri, filename=stored.name))
        return job_id

    def run(self, job_id: str, *, final_attempt: bool) -> Job | None:
        """Start the job on the asynchronous endpoint. Raises RetryLater for a transient failure unless this is
        the final attempt; a job that cannot start is failed (and refunded) here."""
        job = self.jobs.claim(job_id, self.lease_seconds)
        if job is None:
            return None  # finished already, or another worker holds a live lease: a duplicate delivery
        try:
            return self._start(job)
        except Exception as error:
            return self._failed(job, error, retry=not final_attempt)

    def complete(self, notification: AsyncNotification) -> Job | None:
        """Finish the job whose asynchronous invocation ended: settle and store, or refund and fail."""
        job = self.jobs.get(job_id_of_inference(notification.inference_id))
        if job is None or job.status is not JobStatus.RUNNING or job.inference_id != notification.inference_id:
            logger.info("notification for no running attempt ignored",
                        extra={"inference_id": notification.inference_id})
            return None  # a repeated notification, or one of an attempt that was given up
        try:
            result = self.endpoint.result(notification)
            finished = self._settle(job, result)
        except Exception as error:
            reservation = self.service.credits.reservation(notification.inference_id)
            if reservation is not None:
                self.service.refund(reservation, error)
            if self._earlier_settle(job) is not None:
                raise  # charged already (crashed after the settle): a redelivery finishes the job
            return self._failed(job, error, retry=job.attempts < self.max_attempts, resubmit=True)
        self._notify(finished)
        return finished

    def _start(self, job: Job) -> Job:
        key = self._key(job)
        if job.source_uri is None:
            raise InvalidRequest("The job has no audio.", code="missing_audio")
        bucket, _, object_key = job.source_uri.removeprefix("s3://").partition("/")
        stored = parse_object_key(bucket, object_key, 0)  # as stored on the job: already decoded
        if stored is None or stored.key_id != job.key_id:
            raise InvalidRequest("The job's audio is outside its key's prefix.", code="invalid_source")
        earlier_settle = self._earlier_settle(job)
        if earlier_settle is not None:
            # an earlier attempt was charged, then crashed before marking the job: finish it, never charge again
            result_key = self.store.result_key(job.key_id, job.job_id)
            result = self.store.load_result(result_key)
            finished = self.jobs.succeed(job.job_id, result_key=result_key, audio_seconds=result.duration,
                                         credits_used=earlier_settle.billed_credits or 0)
            self._notify(finished)
            return finished
        request = TranscriptionRequest(**job.options.model_dump(), filename=job.filename).with_stored_audio(
            *self.store.load(stored))
        inference_id = self._inference_id(job)
        reservation = self.service.reserve(key, request, request_id=inference_id, hold_seconds=self.hold_seconds)
        try:
            self.endpoint.submit(self.service.inference_request(
                request, reservation, progress_s3_uri=self.endpoint.progress_uri(job.key_id, inference_id)),
                key_id=job.key_id, inference_id=inference_id)
            return self.jobs.submitted(job.job_id, inference_id=inference_id,
                                       lease_until=int(time.time()) + self.hold_seconds)
        except BaseException as failure:
            self.service.refund(reservation, failure)
            raise

    def _settle(self, job: Job, result: InferenceResult) -> Job:
        assert job.inference_id is not None
        reservation = self.service.credits.reservation(job.inference_id)
        if reservation is None:
            earlier_settle = self._earlier_settle(job)
            if earlier_settle is None:
                raise InvalidRequest("The job's credit reservation was released before it finished (it ran past "
                                     "its time limit); nothing was charged.", code="job_expired")
            # settled by an earlier delivery that crashed before marking the job
            return self.jobs.succeed(job.job_id, result_key=self.store.result_key(job.key_id, job.job_id),
                                     credits_used=earlier_settle.billed_credits or 0, audio_seconds=result.duration)
        outcome = self.service.settle(
            reservation, job.options, result,
            before_settle=lambda stored: self.store.put_result(job.key_id, job.job_id, stored))
        return self.jobs.succeed(job.job_id, result_key=self.store.result_key(job.key_id, job.job_id),
                                 credits_used=outcome.credits_used, audio_seconds=outcome.audio_seconds)

    def _failed(self, job: Job, error: Exception, *, retry: bool, resubmit: bool = False) -> Job | None:
        """A transient failure of ours goes back to the queue while attempts remain; the rest fail the job."""
        transient = not isinstance(error, InferyError) or error.status_code >= 500
        if transient and retry:
            self.jobs.release(job.job_id)
            if resubmit:
                raise ResubmitJob(job.job_id) from error
            raise RetryLater(str(error)) from error
        if isinstance(error, InferyError) and transient:
            job_error = JobError(code=error.code or "error",
                                 message=f"{error.message} The job was tried {job.attempts} times; "
                                         "send it again later.")
        elif isinstance(error, InferyError):
            job_error = JobError(code=error.code or "error", message=error.message)
        else:
            logger.exception("job failed unexpectedly", extra={"job_id": job.job_id})
            job_error = JobError(code="internal_error", message="The job failed on our side; nothing was charged.")
        finished = self.jobs.fail(job.job_id, job_error)
        self._notify(finished)
        return finished

    @staticmethod
    def _inference_id(job: Job) -> str:
        """The attempt's id: its credits are reserved under it, and its notification names it. The first attempt
        uses the job id; a later one needs its own (a request id is reserved once), and the settle check keeps
        the job charged once across them."""
        return job.job_id if job.attempts <= 1 else f"{job.job_id}.{job.attempts}"

    def _earlier_settle(self, job: Job) -> LedgerEntry | None:
        entries = self.service.credits.entries_for_request(job.key_id, job.job_id)
        return next((entry for entry in entries if entry.kind is LedgerKind.SETTLE), None)

    def _key(self, job: Job) -> ApiKeyItem:
        key = self.keys.get_by_hash(job.key_hash)
        if key is None:
            raise AuthenticationFailed("The key that owns this job no longer exists; nothing was charged.")
        ensure_usable(key, key.key_id)
        return key

    def _notify(self, job: Job) -> None:
        if not job.webhook_url or not job.webhook_secret:
            return
        body = json.dumps(self.presenter.view(job)).encode()
        delivered = deliver(job.webhook_url, body, job.webhook_secret,
                            record=lambda attempt: self.jobs.record_webhook_attempt(job.job_id, attempt),
                            allow_private_addresses=self.allow_private_webhooks)
        if not delivered:
            logger.warning("webhook not delivered", extra={"job_id": job.job_id})


class ResubmitJob(RetryLater):
    """The endpoint failed a job transiently after it was submitted: the job goes back on the jobs queue."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} is resubmitted")
        self.job_id = job_id


def job_id_of_inference(inference_id: str) -> str:
    return inference_id.split(".", 1)[0]
