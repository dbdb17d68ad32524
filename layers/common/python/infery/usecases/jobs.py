"""The job use case: one owner for a job's whole life, from the request that creates it to its webhook.

1. Created, by one of three doors, never anywhere else:
   - ``create_upload`` (POST /v1/uploads): a presigned upload slot, and a job that waits for its file;
   - ``create_job`` (POST /v1/audio/{transcriptions,translations}/jobs): the audio stored (or an arrived upload
     named), the job queued;
   - ``job_for_object`` (S3 says a file arrived): the waiting job of an upload, or a new job for a file dropped
     into a key's inbox/.
2. Run (``run``, a job message from the jobs queue): claim the job, check its audio, reserve its credits, submit
   it to the asynchronous endpoint, and hold the job's lease until the outcome can no longer arrive.
3. Completed (``complete``, the endpoint's notification): settle the credits from the real duration and store the
   result, or refund them; a transient failure goes back on the queue while attempts remain, the rest fail the job.
4. Notified (``_notify``): the job's webhook, signed with the job's own secret.

A job runs in two steps (2 and 3) because the model may take longer than any one function invocation. Each step is
idempotent: a repeated message or notification changes nothing that was already done, and a job is charged once.
The API reads jobs through ``own_job`` and ``list_jobs`` and shows them through the presenter (job_views.py). Credits
are reserved, settled and refunded as for a synchronous request (charging.py); what an upload is: uploads.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from infery.domain import audio_url
from infery.domain.async_inference import AsyncNotification
from infery.domain.errors import (
    AuthenticationFailed,
    InferyError,
    InsufficientCredits,
    InternalError,
    InvalidRequest,
    NotFound,
    TooMuchOpenWork,
)
from infery.domain.ids import (
    JOB_ID_PATTERN,
    attempt_id,
    job_id_for_object,
    job_id_for_upload,
    job_id_of_attempt,
    new_job_id,
    new_upload_id,
    parse_part_inference_id,
    part_inference_id,
    upload_id_for_fetch,
)
from infery.domain.inbox import inbox_options
from infery.domain.inference import AudioPart, InferenceRequest, InferenceResult, Task
from infery.domain.jobs import Job, JobError, JobStatus, new_job
from infery.domain.keys import ApiKeyItem, ensure_usable
from infery.domain.ledger import LedgerEntry, LedgerKind
from infery.domain.parts import MAX_PART_SUBMISSIONS, JobPart, gaps_between, part_budget_seconds, plan_parts, stitch
from infery.domain.stored_audio import StoredObject, parse_object_key
from infery.domain.transcription import (
    LoadedAudio,
    TranscriptionOptions,
    TranscriptionRequest,
    UploadRequest,
)
from infery.observability import logger
from infery.usecases import charging, known_speakers
from infery.usecases.audio_by_url import AudioByUrl
from infery.usecases.charging import TranscriptionTerms, refund_reason
from infery.usecases.job_views import JobPresenter
from infery.usecases.ports import AsyncEndpoint, AudioObjects, Credits, JobQueue, Jobs, Keys, WebhookSender
from infery.usecases.uploads import UPLOAD_HEAD_BYTES, NewUpload, check_upload_head, upload_expires_at


class RetryLater(Exception):
    """A failure of ours that may pass (endpoint busy, S3 hiccup): the message goes back to the queue."""


@dataclass
class JobService:
    terms: TranscriptionTerms
    credits: Credits
    jobs: Jobs
    store: AudioObjects
    keys: Keys
    queue: JobQueue
    endpoint: AsyncEndpoint
    presenter: JobPresenter
    webhooks: WebhookSender
    lease_seconds: int
    # how long a submitted attempt holds its lease and its reservation (queue wait + run + grace)
    hold_seconds: int
    max_attempts: int = 3
    # how many jobs and upload slots a key may have open at once (a cap on the work and storage one key can hold)
    max_open_work: int = 100
    upload_expiry_seconds: int = 900
    clock: Callable[[], float] = time.time
    # fetches a job's audio sent by URL when the job runs (streamed into the bucket), at most this many bytes (a
    # job's size limit)
    audio_by_url: AudioByUrl | None = None
    max_fetch_bytes: int = 25 * 1000 * 1000
    # a job longer than this runs as parts (domain/parts.py), their cuts looked for this far around their edges
    part_seconds: float = 1800.0
    part_search_seconds: float = 30.0

    def _open_until_running(self) -> int:
        """Until when a queued or running job counts as open work if it never finishes: all its attempts' time."""
        return int(self.clock()) + self.max_attempts * self.hold_seconds

    def _open_until_uploaded(self) -> int:
        """Until when an upload slot (and the job that waits for it) counts as open work while nothing arrives: its
        presigned POST's expiry, and a minute for the arrival's event. A file that arrives keeps a slot without a
        job open until the file expires (``job_for_object``), unless a billed use releases it (``upload_used``)."""
        return int(self.clock()) + self.upload_expiry_seconds + 60

    # --- 1. created --------------------------------------------------------------------------------------------

    def admit(self, key: ApiKeyItem, requested_model: str, audio: LoadedAudio | None = None) -> None:
        """Refuse, before anything is stored, what could only fail later in the worker: an unknown model, a balance
        under the smallest charge a request can have (402), audio whose header says 1 Hz or ten hours."""
        model = self.terms.catalog.resolve(requested_model)
        minimum = max(1, self.terms.pricing.credits_for(0, model))
        # a sharded key was read from one shard: its total decides, read only when that shard alone is short
        balance = self.credits.balance(key.key_hash) if key.credits < minimum and key.credit_shards > 1 else key.credits
        if balance < minimum:
            raise InsufficientCredits(
                f"This key's balance is {balance} credits; an upload or a job needs at least {minimum}. Top up "
                "the key's credits to continue.",
                headers={"x-infery-credits-balance": str(balance)},
            )
        if audio is not None:
            self.terms.check_audio_limits(audio)
        open_work = self.jobs.count_open(key.key_id, at_most=self.max_open_work)
        if open_work >= self.max_open_work:
            raise TooMuchOpenWork(
                f"This key has {self.max_open_work} uploads and jobs open, the most it may have at once. Wait for "
                "some jobs to finish, or transcribe files already uploaded (an unused upload counts until it "
                "expires), then try again.",
                headers={"retry-after": "30"},
            )

    def create_upload(self, key: ApiKeyItem, upload: UploadRequest) -> NewUpload:
        """A presigned POST into the key's own prefix; unless start_job is false, a job that runs on arrival."""
        upload_id = new_upload_id()
        presigned_post = self.store.presigned_upload(key.key_id, upload_id)
        if not upload.start_job:
            self.jobs.hold_upload_slot(key.key_id, upload_id, self._open_until_uploaded())
            return NewUpload(upload_id, presigned_post, None)
        job = new_job(
            job_id=job_id_for_upload(upload_id),
            key_id=key.key_id,
            key_hash=key.key_hash,
            options=upload.job.options(),
            status=JobStatus.AWAITING_UPLOAD,
            source_uri=self.store.upload_uri(key.key_id, upload_id),
            upload_id=upload_id,
            filename=upload.filename,
            webhook_url=upload.job.webhook_url,
            open_until=self._open_until_uploaded(),
        )
        self.jobs.create(job)
        return NewUpload(upload_id, presigned_post, job)

    def create_job(self, key: ApiKeyItem, request: TranscriptionRequest) -> Job:
        """A queued job for the request's audio: stored now (inline audio), the upload it names (404 unless that
        upload has arrived), or a URL the worker fetches when the job runs (this request must not wait for it)."""
        source_uri: str | None = None
        if request.audio is not None:
            source_uri = self.store.put_upload(key.key_id, new_upload_id(), request.audio.whole).uri
        elif request.url is None:
            assert request.upload_id is not None  # a request has its audio or names an upload
            source_uri, head = self.store.check_upload(key.key_id, request.upload_id, UPLOAD_HEAD_BYTES)
            check_upload_head(self.terms, head)
        job_id = new_job_id()
        options, speakers_key = known_speakers.store(self.store, key.key_id, job_id, request.options())
        job = new_job(
            job_id=job_id,
            key_id=key.key_id,
            key_hash=key.key_hash,
            options=options,
            status=JobStatus.QUEUED,
            source_uri=source_uri,
            source_url=request.url,
            upload_id=request.upload_id,
            filename=request.filename,
            webhook_url=request.webhook_url,
            open_until=self._open_until_running(),
            known_speakers_key=speakers_key,
        )
        self.jobs.create(job)
        self.queue.send(job.job_id)
        return job

    def job_for_object(self, stored: StoredObject) -> str | None:
        """The job an arriving object belongs to (created for inbox drops), or None when none should run."""
        if stored.area == "uploads":
            if not self.store.keep_first_upload(stored):
                return None  # the slot's presigned POST sent again: that upload was deleted, the first one stands
            job_id = job_id_for_upload(stored.name)
            if self.jobs.get(job_id) is not None:
                return job_id
            # an upload made without a job (for a sync call or a later job request) starts nothing; its file sits in
            # the bucket unbilled until it is used or expires, and its slot counts as the key's open work as long
            self.jobs.keep_upload_slot_open(stored.key_id, stored.name, upload_expires_at(self.clock()))
            return None
        try:
            key = self.keys.get(stored.key_id)
        except InferyError:
            logger.warning("object under the prefix of an unknown key", extra={"object_key": stored.key})
            return None
        job_id = job_id_for_object(stored.bucket, stored.key, stored.etag)
        refused: InvalidRequest | None = None
        try:
            options = inbox_options(self.store.object_metadata(stored), self.terms.catalog.default_model)
        except InvalidRequest as error:
            # the job is listed, failed with the reason (in the one write that creates it: never left queued with
            # options nobody asked for), and charged nothing
            options, refused = TranscriptionOptions(task=Task.TRANSCRIBE, model=self.terms.catalog.default_model), error
        job = new_job(
            job_id=job_id,
            key_id=key.key_id,
            key_hash=key.key_hash,
            options=options,
            status=JobStatus.QUEUED if refused is None else JobStatus.FAILED,
            source_uri=stored.uri,
            filename=stored.name,
            open_until=self._open_until_running() if refused is None else None,
        )
        if refused is not None:
            job = job.model_copy(
                update={"error": JobError(code=refused.code or "invalid_inbox_options", message=refused.message)}
            )
        self.jobs.create(job)
        return job_id if refused is None else None

    def upload_used(self, key_id: str, upload_id: str) -> None:
        """A billed transcription of the upload (a sync call, a job that succeeded): its slot stops counting as
        the key's open work. Not done for a failed use: a file refused as it is could otherwise be parked unbilled.
        A failure here is logged, not raised: the client was charged and has its answer; the slot then counts
        until the file expires."""
        try:
            self.jobs.release_upload_slot(key_id, upload_id)
        except Exception:
            logger.exception("an upload slot could not be released", extra={"upload_id": upload_id})

    # --- read by its key ---------------------------------------------------------------------------------------

    def own_job(self, key: ApiKeyItem, job_id: str) -> Job:
        """The key's job; 404 for a job of another key, as for one that does not exist."""
        # an id of another shape is no job: not looked up (a DynamoDB key past 2 KB would fail the read)
        job = self.jobs.get(job_id) if JOB_ID_PATTERN.fullmatch(job_id) else None
        if job is None or job.key_id != key.key_id:
            shown = job_id if len(job_id) <= 40 else job_id[:40] + "..."
            raise NotFound(f"No job with id '{shown}'.", param="job_id", code="job_not_found")
        return job

    def list_jobs(self, key: ApiKeyItem, limit: int) -> tuple[list[Job], bool]:
        """The key's most recent jobs, newest first, and whether it has older ones."""
        return self.jobs.list_for_key(key.key_id, limit)

    # --- 2. run ------------------------------------------------------------------------------------------------

    def run(self, job_id: str, *, final_attempt: bool) -> Job | None:
        """Start the job on the asynchronous endpoint. Raises RetryLater for a transient failure unless this is
        the final attempt; a job that cannot start is failed (and refunded) here."""
        job = self.jobs.claim(job_id, self.lease_seconds, self._open_until_running())
        if job is None:
            return None  # finished already, or another worker holds a live lease: a duplicate delivery
        try:
            self._refund_open_attempts(job, before=job.attempts)
            return self._start(job)
        except Exception as error:
            # a job re-driven by the reconciler comes with a fresh message: its attempts bound it as well
            return self._failed(job, error, retry=not final_attempt and job.attempts < self.max_attempts)

    def _start(self, job: Job) -> Job:
        key = self._key(job)
        if job.source_uri is None and job.source_url is None:
            raise InvalidRequest("The job has no audio.", code="missing_audio")
        # audio sent by URL goes where the job's attempts find it: fetched by the first, read by the others
        source_uri = job.source_uri or self.store.upload_uri(job.key_id, upload_id_for_fetch(job.job_id))
        bucket, _, object_key = source_uri.removeprefix("s3://").partition("/")
        stored = parse_object_key(bucket, object_key, 0)  # as stored on the job: already decoded
        if stored is None or stored.key_id != job.key_id:
            raise InvalidRequest("The job's audio is outside its key's prefix.", code="invalid_source")
        earlier_settle = self._earlier_settle(job, key.ledger_parts)
        if earlier_settle is not None:
            # an earlier attempt was charged, then crashed before marking the job: finish it, never charge again
            result_key = self.store.result_key(job.key_id, job.job_id)
            result = self.store.load_result(result_key)
            finished = self.jobs.succeed(
                job.job_id,
                result_key=result_key,
                audio_seconds=result.duration,
                credits_used=earlier_settle.billed_credits or 0,
            )
            self._succeeded(finished, result)
            return finished
        audio = self._audio(job, stored)
        if self._uncut(job):
            self._check_one_invocation(audio)
        options = known_speakers.load(self.store, job.options, job.known_speakers_key)
        # the attempt's id: its credits are reserved under it, and its notification names it; the settle check
        # keeps the job charged once across attempts
        inference_id = attempt_id(job.job_id, job.attempts)
        reservation = charging.reserve(
            self.credits,
            self.terms,
            key,
            job.options.model,
            audio,
            request_id=inference_id,
            hold_seconds=lambda covered: self._hold_seconds(job, covered),
            diarize=job.options.diarize,
        )
        hold_seconds = self._hold_seconds(job, reservation.covered_seconds or 0.0)
        try:
            request = charging.inference_request(
                options,
                audio,
                reservation,
                progress_s3_uri=self.endpoint.progress_uri(job.key_id, inference_id),
            )
            covered = reservation.covered_seconds or 0.0
            plan = self._plan(job, covered)
            parts = [
                JobPart(
                    index=index, start=part.start, end=part.end, inference_id=part_inference_id(inference_id, index)
                )
                for index, part in enumerate(plan)
            ]
            # recorded before it is submitted: the attempt's notification may come back before a slow write would
            # (DynamoDB throttling, retried), and a notification the job does not name is of an attempt given up
            submitted = self.jobs.submitted(
                job.job_id, inference_id=inference_id, lease_until=int(self.clock()) + hold_seconds, parts=parts
            )
            if not parts:
                self.endpoint.submit(request, key_id=job.key_id, inference_id=inference_id)
            for part in parts:
                self._submit_part(job, request, part, covered)
            return submitted
        except BaseException as failure:
            charging.refund(self.credits, reservation, failure)
            raise

    @staticmethod
    def _uncut(job: Job) -> bool:
        """Speakers are labelled over the whole file by one model run: a job that asks for them is never cut."""
        return job.options.diarize or job.known_speakers_key is not None

    def _check_one_invocation(self, audio: LoadedAudio) -> None:
        """A job that is not cut must fit what one invocation transcribes: refused before any credit is held."""
        declared = self.terms.check_audio_limits(audio, diarize=True)
        if declared is not None and declared > self.terms.max_audio_seconds:
            raise InvalidRequest(
                f"The audio lasts {charging.minutes(declared)}; a job that asks for speakers is transcribed by one "
                f"model run, which takes at most {charging.minutes(self.terms.max_audio_seconds)}. Nothing was "
                "charged. Send it without speakers (it then runs in parts), or in shorter files.",
                param="file",
                code="audio_too_long",
            )

    def _plan(self, job: Job, covered_seconds: float) -> list[AudioPart]:
        """The parts the attempt runs as (none: one invocation)."""
        if self._uncut(job):
            return []
        return plan_parts(covered_seconds, self.part_seconds, self.part_search_seconds)

    def _hold_seconds(self, job: Job, covered_seconds: float) -> int:
        """How long an attempt holds its lease and credits: one invocation's queue wait and run; a job in parts may
        see one round of its parts submitted again, and holds them that much longer."""
        return self.hold_seconds * (MAX_PART_SUBMISSIONS if self._plan(job, covered_seconds) else 1)

    def _submit_part(self, job: Job, request: InferenceRequest, part: JobPart, covered_seconds: float) -> None:
        """One part of the attempt's request on the endpoint: its stretch of the audio, what that stretch may cost,
        and its own progress report."""
        audio_part = AudioPart(start=part.start, end=part.end, search_seconds=self.part_search_seconds)
        self.endpoint.submit(
            request.model_copy(
                update={
                    "part": audio_part,
                    "max_audio_seconds": part_budget_seconds(audio_part, covered_seconds),
                    "progress_s3_uri": self.endpoint.progress_uri(job.key_id, part.inference_id),
                }
            ),
            key_id=job.key_id,
            inference_id=part.inference_id,
        )

    def _audio(self, job: Job, stored: StoredObject) -> LoadedAudio:
        """The job's audio as stored, fetched first when it was sent by URL (before any credit is reserved: a fetch
        that fails charges nothing)."""
        if job.source_uri is None and job.source_url is not None:
            if self.audio_by_url is None:
                raise InternalError("This worker cannot fetch audio by URL.")
            return self.audio_by_url.fetch_once(stored, job.source_url, max_bytes=self.max_fetch_bytes)
        # up to a job's size, never read whole: its head and tail say what it is and how long it plays
        return LoadedAudio.stored(*self.store.load_job_audio(stored))

    # --- 3. completed ------------------------------------------------------------------------------------------

    def complete(self, notification: AsyncNotification) -> Job | None:
        """Finish the job whose asynchronous invocation ended: settle and store, or refund and fail (or, for a
        transient failure while attempts remain, put the job back on the queue). A part's end is recorded, and the
        job finished once its last part is in."""
        if parse_part_inference_id(notification.inference_id) is not None:
            return self._complete_part(notification)
        job = self.jobs.get(job_id_of_attempt(notification.inference_id))
        if job is None or job.status is not JobStatus.RUNNING or job.inference_id != notification.inference_id:
            logger.info(
                "notification for no running attempt ignored", extra={"inference_id": notification.inference_id}
            )
            if job is not None:  # an attempt given up is never charged: what it still holds goes back
                self._refund_attempt(notification.inference_id, "the attempt was given up")
            return None  # a repeated notification, or one of an attempt that was given up
        try:
            result = self.endpoint.result(notification)
            finished = self._settle(job, result)
        except Exception as error:
            if self._earlier_settle(job) is not None:
                raise  # charged already (crashed after the settle): a redelivery finishes the job
            # the job moves on first, then the attempt's credits go back: should the refund fail, the notification's
            # redelivery finds an attempt given up and refunds it then; the other order would leave a refunded
            # attempt running, which a redelivery could only fail
            outcome = self._failed(
                job, error, retry=job.attempts < self.max_attempts, resubmit=True, attempt=job.inference_id
            )
            self._refund_attempt(notification.inference_id, error)
            return outcome
        self._succeeded(finished, result)
        return finished

    def _complete_part(self, notification: AsyncNotification) -> Job | None:
        parsed = parse_part_inference_id(notification.inference_id)
        assert parsed is not None
        attempt_inference_id, index = parsed
        job = self.jobs.get(job_id_of_attempt(attempt_inference_id))
        part = self._running_part(job, attempt_inference_id, index, notification.inference_id)
        if job is None or part is None:
            logger.info("notification for no running part ignored", extra={"inference_id": notification.inference_id})
            if job is not None and job.inference_id != attempt_inference_id:
                # a part of an attempt given up: never charged, what it still holds goes back
                self._refund_attempt(attempt_inference_id, "the attempt was given up")
            return None
        try:
            # read now, so a result that cannot be read is a failure of this part alone
            result = self.endpoint.result(notification)
            location = notification.response_parameters.output_location
            assert location is not None  # a result was read from it
        except Exception as error:
            return self._part_failed(job, part, error)
        recorded = self.jobs.part_done(
            job.job_id,
            inference_id=attempt_inference_id,
            part_inference_id=part.inference_id,
            index=index,
            output_location=location,
            audio_seconds=result.duration,
        )
        if recorded is None or not all(each.done for each in recorded.parts):
            return recorded
        return self._finish_parts(recorded)

    @staticmethod
    def _running_part(job: Job | None, attempt_inference_id: str, index: int, inference_id: str) -> JobPart | None:
        if job is None or job.status is not JobStatus.RUNNING or job.inference_id != attempt_inference_id:
            return None
        part = job.parts[index] if index < len(job.parts) else None
        return part if part is not None and part.inference_id == inference_id else None

    def _part_failed(self, job: Job, part: JobPart, error: Exception) -> Job | None:
        """A part that failed for a reason of ours is submitted again alone while it may be; any other failure ends
        the attempt as a whole job's failure would (the attempt's credits go back, the job is retried or failed)."""
        transient = not isinstance(error, InferyError) or error.status_code >= 500
        if transient and part.submissions < MAX_PART_SUBMISSIONS:
            again = part.model_copy(
                update={
                    "submissions": part.submissions + 1,
                    "inference_id": part_inference_id(job.inference_id or "", part.index, part.submissions + 1),
                }
            )
            try:
                request = self._part_request(job)
                updated = self.jobs.part_resubmitted(
                    job.job_id,
                    inference_id=job.inference_id or "",
                    index=part.index,
                    previous_inference_id=part.inference_id,
                    part=again,
                    lease_until=int(self.clock()) + self.hold_seconds,
                )
                if updated is None:
                    return None  # another delivery of this notification submitted it again already
                self._submit_part(updated, request, again, request.max_audio_seconds or 0.0)
                logger.warning(
                    "a part of a job failed and was submitted again",
                    extra={"job_id": job.job_id, "part": part.index, "error": type(error).__name__},
                )
                return updated
            except Exception as resubmit_error:
                error = resubmit_error
        assert job.inference_id is not None
        outcome = self._failed(
            job, error, retry=transient and job.attempts < self.max_attempts, resubmit=True, attempt=job.inference_id
        )
        self._refund_attempt(job.inference_id, error)
        return outcome

    def _part_request(self, job: Job) -> InferenceRequest:
        """The attempt's request again, for a part submitted anew: the audio as the attempt checked and priced it
        (the object's version), and what its reservation covers."""
        assert job.inference_id is not None
        reservation = self.credits.reservation(job.inference_id)
        if reservation is None:
            raise InvalidRequest(
                "The job's credit reservation was released before it finished; nothing was charged.",
                code="job_expired",
            )
        source_uri = job.source_uri or self.store.upload_uri(job.key_id, upload_id_for_fetch(job.job_id))
        bucket, _, object_key = source_uri.removeprefix("s3://").partition("/")
        stored = parse_object_key(bucket, object_key, 0)
        assert stored is not None  # checked when the attempt started
        audio = LoadedAudio.stored(*self.store.load_job_audio(stored))
        return charging.inference_request(job.options, audio, reservation)

    def _finish_parts(self, job: Job) -> Job | None:
        """Every part is in: their results joined in order, stored, and the job settled once. Each result was read
        once already, when its part ended: a read that fails now (S3 throttled) is raised, and the notification's
        redelivery finishes the job, every part's work kept. A failure to store or settle is the attempt's, as a
        whole job's."""
        results = [self.endpoint.output(part.output_location or "") for part in job.parts]
        try:
            gaps = gaps_between(results)
            if any(abs(gap) > 0.05 for gap in gaps):
                logger.error("the parts of a job do not meet at their cuts", extra={"job_id": job.job_id, "gaps": gaps})
            result = stitch(results)
            finished = self._settle(job, result)
        except Exception as error:
            if self._earlier_settle(job) is not None:
                raise  # charged already (crashed after the settle): a redelivery finishes the job
            assert job.inference_id is not None
            outcome = self._failed(
                job, error, retry=job.attempts < self.max_attempts, resubmit=True, attempt=job.inference_id
            )
            self._refund_attempt(job.inference_id, error)
            return outcome
        self._succeeded(finished, result)
        return finished

    def _succeeded(self, job: Job, result: InferenceResult) -> None:
        """A job charged and done: the upload it named (if any) was used, and its webhook is sent."""
        if job.upload_id is not None:
            self.upload_used(job.key_id, job.upload_id)
        self._notify(job, result)

    def _settle(self, job: Job, result: InferenceResult) -> Job:
        assert job.inference_id is not None  # a running job was submitted under its attempt's id
        reservation = self.credits.reservation(job.inference_id)
        if reservation is None:
            earlier_settle = self._earlier_settle(job)
            if earlier_settle is None:
                raise InvalidRequest(
                    "The job's credit reservation was released before it finished (it ran past "
                    "its time limit); nothing was charged.",
                    code="job_expired",
                )
            # settled by an earlier delivery that crashed before marking the job
            return self.jobs.succeed(
                job.job_id,
                result_key=self.store.result_key(job.key_id, job.job_id),
                credits_used=earlier_settle.billed_credits or 0,
                audio_seconds=result.duration,
            )
        outcome = charging.settle(
            self.credits,
            self.terms.pricing,
            reservation,
            job.options,
            result,
            before_settle=lambda stored: self.store.put_result(job.key_id, job.job_id, stored),
        )
        return self.jobs.succeed(
            job.job_id,
            result_key=self.store.result_key(job.key_id, job.job_id),
            credits_used=outcome.credits_used,
            audio_seconds=outcome.audio_seconds,
        )

    def _failed(
        self, job: Job, error: Exception, *, retry: bool, resubmit: bool = False, attempt: str | None = None
    ) -> Job | None:
        """A transient failure of ours goes back to the queue while attempts remain; the rest fail the job.

        ``resubmit``: the attempt failed on the endpoint's side after its job message was taken off the queue, so
        a new job message starts the next attempt; otherwise the message itself is retried (RetryLater).
        ``attempt``: only while this attempt runs (a notification handled late must not end the next attempt)."""
        transient = not isinstance(error, InferyError) or error.status_code >= 500
        if transient and retry:
            released = self.jobs.release(job.job_id, attempt=attempt)
            if attempt is not None and (released.status is not JobStatus.QUEUED or released.inference_id != attempt):
                return None  # another attempt runs now: it is not this failure's to end
            if resubmit:
                self.queue.send(job.job_id)
                return released
            raise RetryLater(str(error)) from error
        if isinstance(error, InferyError) and transient:
            job_error = JobError(
                code=error.code or "error",
                message=f"{error.message} The job was tried {job.attempts} times; send it again later.",
            )
        elif isinstance(error, InferyError):
            job_error = JobError(code=error.code or "error", message=error.message)
        else:
            logger.exception("job failed unexpectedly", extra={"job_id": job.job_id})
            job_error = JobError(code="internal_error", message="The job failed on our side; nothing was charged.")
        self._refund_open_attempts(job, before=job.attempts + 1)
        finished = self.jobs.fail(job.job_id, job_error, attempt=attempt)
        if attempt is not None and (finished.status is not JobStatus.FAILED or finished.inference_id != attempt):
            return None  # another attempt runs now: it is not this failure's to end
        if isinstance(error, InferyError) and not transient:
            self._count_refused_upload(finished)
        self._notify(finished)
        return finished

    def _count_refused_upload(self, job: Job) -> None:
        """A job refused for its client's reason (the file, the key's balance) leaves its uploaded file in the
        bucket, unbilled: the upload counts as the key's open work until the file expires, as an unused one does,
        so refused jobs cannot park files without bound. A failure of ours does not count against the key."""
        source_uri = job.source_uri
        if source_uri is None and job.source_url is not None and job.error is not None:
            # audio fetched by URL and then refused is parked as an upload's is; a fetch that failed stored nothing
            if job.error.code not in audio_url.FETCH_ERROR_CODES:
                source_uri = self.store.upload_uri(job.key_id, upload_id_for_fetch(job.job_id))
        if source_uri is None:
            return
        bucket, _, object_key = source_uri.removeprefix("s3://").partition("/")
        stored = parse_object_key(bucket, object_key, 0)
        if stored is not None and stored.area == "uploads" and stored.key_id == job.key_id:
            self.jobs.hold_upload_slot(job.key_id, stored.name, upload_expires_at(self.clock()))

    def _refund_attempt(self, inference_id: str, failure: BaseException | str) -> None:
        """Give back what the attempt still holds. A failure is raised, not logged: the message that asked for it
        comes back, and the job does not move on while an attempt it gave up holds credits."""
        reservation = self.credits.reservation(inference_id)
        if reservation is not None:
            self.credits.refund(reservation, reason=refund_reason(failure))

    def _refund_open_attempts(self, job: Job, *, before: int) -> None:
        """Refund what attempts 1 .. before-1 still hold: an attempt whose own refund failed (DynamoDB throttled)
        is given back when the job next moves, not hours later by the reconciler when its hold ends."""
        for attempt in range(1, before):
            self._refund_attempt(attempt_id(job.job_id, attempt), "an earlier attempt of the job was given up")

    def _earlier_settle(self, job: Job, parts: int | None = None) -> LedgerEntry | None:
        """``parts``: the key's ledger partitions (a sharded key's attempts are ledgered in their shards'); read
        from the key when not given."""
        if parts is None:
            key = self.keys.get_by_hash(job.key_hash)
            parts = key.ledger_parts if key else 1
        entries = self.credits.entries_for_request(job.key_id, job.job_id, parts=parts)
        return next((entry for entry in entries if entry.kind is LedgerKind.SETTLE), None)

    def _key(self, job: Job) -> ApiKeyItem:
        key = self.keys.get_by_hash(job.key_hash)
        if key is None:
            raise AuthenticationFailed("The key that owns this job no longer exists; nothing was charged.")
        ensure_usable(key, key.key_id)
        return key

    # --- 4. notified -------------------------------------------------------------------------------------------

    def _notify(self, job: Job, result: InferenceResult | None = None) -> None:
        """The job's webhook; a finished job's body is rendered from ``result``, the one just stored."""
        if not job.webhook_url or not job.webhook_secret:
            return
        body = json.dumps(self.presenter.view(job, result=result)).encode()
        delivered = self.webhooks.send(
            job.webhook_url,
            body,
            job.webhook_secret,
            record=lambda attempt: self.jobs.record_webhook_attempt(job.job_id, attempt),
        )
        if not delivered:
            logger.warning("webhook not delivered", extra={"job_id": job.job_id})
