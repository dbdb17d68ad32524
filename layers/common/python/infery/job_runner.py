"""The worker's use case: turn an arriving S3 object or a queued job into a finished, charged-once job."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .credits import LedgerEntry, LedgerKind
from .errors import AuthenticationFailed, Conflict, InferyError, InvalidRequest
from .formats import render_transcript
from .jobs import Job, JobError, JobStatus, JobStore, job_id_for_object, job_id_for_upload, new_job
from .keys import ApiKeyItem, KeyStore, ensure_usable
from .observability import logger
from .service import TranscriptionService
from .storage import AudioStore, StoredObject, parse_object_key
from .transcription_request import ResponseFormat, TranscriptionOptions, TranscriptionRequest
from .webhooks import deliver


class RetryLater(Exception):
    """A failure of ours that may pass (endpoint busy, S3 hiccup): the message goes back to the queue."""


@dataclass
class JobRunner:
    service: TranscriptionService
    jobs: JobStore
    store: AudioStore
    keys: KeyStore
    lease_seconds: int
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
        options = TranscriptionOptions(task="transcribe", model=self.service.catalog.default_model,
                                       response_format=ResponseFormat.JSON)
        self.jobs.create(new_job(job_id=job_id, key_id=key.key_id, key_hash=key.key_hash, options=options,
                                 status=JobStatus.QUEUED, source_uri=stored.uri, filename=stored.name))
        return job_id

    def run(self, job_id: str, *, final_attempt: bool) -> Job | None:
        """Process the job once. Raises RetryLater for a transient failure unless this is the final attempt."""
        job = self.jobs.claim(job_id, self.lease_seconds)
        if job is None:
            return None  # finished already, or another worker holds a live lease: a duplicate delivery
        try:
            finished = self._transcribe(job)
        except InferyError as error:
            if error.status_code >= 500 and not final_attempt:
                self.jobs.release(job_id)
                raise RetryLater(error.message) from error
            finished = self.jobs.fail(job_id, JobError(code=error.code or "error", message=error.message))
        except Exception as error:
            logger.exception("job failed unexpectedly", extra={"job_id": job_id})
            if not final_attempt:
                self.jobs.release(job_id)
                raise RetryLater(str(error)) from error
            finished = self.jobs.fail(job_id, JobError(code="internal_error",
                                                       message="The job failed on our side; nothing was charged."))
        self._notify(finished)
        return finished

    def _transcribe(self, job: Job) -> Job:
        key = self._key(job)
        if job.source_uri is None:
            raise InvalidRequest("The job has no audio.", code="missing_audio")
        bucket, _, object_key = job.source_uri.removeprefix("s3://").partition("/")
        stored = parse_object_key(bucket, object_key, 0)  # as stored on the job: already decoded
        if stored is None or stored.key_id != job.key_id:
            raise InvalidRequest("The job's audio is outside its key's prefix.", code="invalid_source")
        result_key = self._result_key(job)
        earlier_settle = self._earlier_settle(job)
        if earlier_settle is not None:
            # an earlier attempt was charged, then crashed before marking the job: finish it, never charge again
            result = self.store.load_result(result_key)
            return self.jobs.succeed(job.job_id, result_key=result_key, audio_seconds=result.duration,
                                     credits_used=earlier_settle.billed_credits or 0)
        audio, uri = self.store.load(stored)
        request = TranscriptionRequest(**job.options.model_dump(), filename=job.filename).with_stored_audio(audio, uri)
        self.jobs.set_progress(job.job_id, 0.2)
        outcome = self.service.transcribe(
            key, request, request_id=self._credit_request_id(job),
            before_settle=lambda result: self.store.put_result(job.key_id, job.job_id, result))
        return self.jobs.succeed(job.job_id, result_key=result_key, credits_used=outcome.credits_used,
                                 audio_seconds=outcome.audio_seconds)

    @staticmethod
    def _credit_request_id(job: Job) -> str:
        """The first attempt's credits go under the job id; an attempt after a refunded one needs an id of its own
        (a request id is reserved once), and the settle check above keeps the job charged once across them."""
        return job.job_id if job.attempts <= 1 else f"{job.job_id}.{job.attempts}"

    def _earlier_settle(self, job: Job) -> LedgerEntry | None:
        if job.attempts <= 1:
            return None
        entries = self.service.credits.entries_for_request(job.key_id, job.job_id)
        return next((entry for entry in entries if entry.kind is LedgerKind.SETTLE), None)

    def _key(self, job: Job) -> ApiKeyItem:
        key = self.keys.get_by_hash(job.key_hash)
        if key is None:
            raise AuthenticationFailed("The key that owns this job no longer exists; nothing was charged.")
        ensure_usable(key, key.key_id)
        return key

    def _result_key(self, job: Job) -> str:
        return self.store.result_key(job.key_id, job.job_id)

    def _notify(self, job: Job) -> None:
        if not job.webhook_url or not job.webhook_secret:
            return
        body = json.dumps(self.job_view(job)).encode()
        delivered = deliver(job.webhook_url, body, job.webhook_secret,
                            record=lambda attempt: self.jobs.record_webhook_attempt(job.job_id, attempt),
                            allow_private_addresses=self.allow_private_webhooks)
        if not delivered:
            logger.warning("webhook not delivered", extra={"job_id": job.job_id})

    def job_view(self, job: Job, response_format: ResponseFormat | None = None) -> dict:
        """The job as the API shows it, with its result rendered in the job's (or the asked) format."""
        view = job.public_view()
        if job.status is JobStatus.SUCCEEDED and job.result_key:
            view["result"] = self.render_result(job, response_format).body
        return view

    def render_result(self, job: Job, response_format: ResponseFormat | None = None):
        if job.status is not JobStatus.SUCCEEDED or not job.result_key:
            raise Conflict(f"The job is {job.status.value}; it has no result yet.", code="job_not_finished")
        options = job.options.model_copy(update={"response_format": response_format or job.options.response_format})
        return render_transcript(self.store.load_result(job.result_key), options.response_format, task=options.task,
                                 credits_used=job.credits_used or 0, include_words=options.word_timestamps)
