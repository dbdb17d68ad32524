"""What the use cases (TranscriptionService, JobService) need from the outside world, as typing Protocols.

The DynamoDB, S3, SageMaker and webhook adapters satisfy them on AWS and locally; the unit tests give the use cases
in-memory fakes (tests/support/fakes.py) that satisfy them too, so refunds, retries and charged-once recovery are
tested without moto or a model server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from infery.domain.async_inference import AsyncNotification, AsyncSubmission
from infery.domain.inference import InferenceRequest, InferenceResult
from infery.domain.jobs import Job, JobError, WebhookAttempt
from infery.domain.keys import ApiKeyItem
from infery.domain.ledger import LedgerEntry, Reservation, SettledCharge
from infery.domain.parts import JobPart
from infery.domain.ranged_audio import AudioBytes
from infery.domain.stored_audio import StoredObject


class Credits(Protocol):
    def balance(self, key_hash: str) -> int: ...

    def entries_for_request(self, key_id: str, request_id_prefix: str, *, parts: int = 1) -> list[LedgerEntry]:
        """``parts``: the key's ``ledger_parts`` (a sharded key's entries are in a partition per shard)."""
        ...

    def reserve(
        self,
        key: ApiKeyItem,
        credits: int,
        *,
        request_id: str,
        model: str,
        hold_seconds: int | None = None,
        covered_seconds: float | None = None,
    ) -> Reservation: ...

    def reservation(self, request_id: str) -> Reservation | None: ...

    def settle(self, reservation: Reservation, credits_used: int, *, audio_seconds: float) -> SettledCharge: ...

    def refund(self, reservation: Reservation, *, reason: str) -> int | None: ...


class Keys(Protocol):
    def get(self, key_id: str) -> ApiKeyItem: ...

    def get_by_hash(self, key_hash: str) -> ApiKeyItem | None: ...


class RealTimeEndpoint(Protocol):
    def infer(self, request: InferenceRequest) -> InferenceResult: ...


class AsyncEndpoint(Protocol):
    def submit(self, request: InferenceRequest, *, key_id: str, inference_id: str) -> AsyncSubmission: ...

    def result(self, notification: AsyncNotification) -> InferenceResult: ...

    def output(self, location: str) -> InferenceResult:
        """The result a successful invocation wrote to ``location`` (its notification's output location)."""
        ...

    def progress_uri(self, key_id: str, inference_id: str) -> str: ...


class Jobs(Protocol):
    def create(self, job: Job) -> bool: ...

    def get(self, job_id: str) -> Job | None: ...

    def list_for_key(self, key_id: str, limit: int = 20) -> tuple[list[Job], bool]: ...

    def claim(self, job_id: str, lease_seconds: int, open_until: int) -> Job | None: ...

    def submitted(
        self, job_id: str, *, inference_id: str, lease_until: int, parts: list[JobPart] | None = None
    ) -> Job: ...

    def part_done(
        self,
        job_id: str,
        *,
        inference_id: str,
        part_inference_id: str,
        index: int,
        output_location: str,
        audio_seconds: float,
    ) -> Job | None: ...

    def part_resubmitted(
        self,
        job_id: str,
        *,
        inference_id: str,
        index: int,
        previous_inference_id: str,
        part: JobPart,
        lease_until: int,
    ) -> Job | None: ...

    def release(self, job_id: str, *, attempt: str | None = None) -> Job: ...

    def unfinished(self) -> Iterator[Job]: ...

    def release_if_lease_expired(self, job_id: str, now: int) -> bool: ...

    def requeue_if_still_waiting(self, job_id: str, waiting_since: str, now: int) -> bool: ...

    def succeed(self, job_id: str, *, result_key: str, credits_used: int, audio_seconds: float) -> Job: ...

    def fail(self, job_id: str, error: JobError, *, attempt: str | None = None) -> Job: ...

    def record_webhook_attempt(self, job_id: str, attempt: WebhookAttempt) -> None: ...

    def count_open(self, key_id: str, *, at_most: int) -> int: ...

    def hold_upload_slot(self, key_id: str, upload_id: str, open_until: int) -> None: ...

    def keep_upload_slot_open(self, key_id: str, upload_id: str, open_until: int) -> bool: ...

    def release_upload_slot(self, key_id: str, upload_id: str) -> bool: ...


class JobQueue(Protocol):
    """Where a job waits for a worker to run it (the jobs queue)."""

    def send(self, job_id: str) -> None: ...


class Results(Protocol):
    """Where a transcription's result is kept (the audio bucket's results/): a charged request can always be
    answered again from it."""

    def result_key(self, key_id: str, job_id: str) -> str: ...

    def put_result(self, key_id: str, job_id: str, result: InferenceResult) -> str: ...

    def find_result(self, result_key: str) -> InferenceResult | None: ...

    def load_result(self, result_key: str) -> InferenceResult: ...

    def put_rendered(self, key_id: str, job_id: str, name: str, body: bytes, content_type: str, expires_in: int) -> str:
        """Store a job's transcript as rendered (``name``: its format) and return a link to download it, valid for
        ``expires_in`` seconds."""
        ...


class UploadSink(Protocol):
    """A file stored into an upload slot as its bytes arrive, never held whole: ``commit`` stores what was written,
    ``abort`` leaves nothing behind."""

    def write(self, data: bytes) -> None: ...

    def commit(self) -> StoredObject: ...

    def abort(self) -> None: ...


class AudioObjects(Results, Protocol):
    def object_metadata(self, stored: StoredObject) -> dict[str, str]:
        """The object's user metadata (S3's x-amz-meta-*, names in lower case without the prefix)."""
        ...

    def presigned_upload(self, key_id: str, upload_id: str) -> dict[str, Any]: ...

    def upload_uri(self, key_id: str, upload_id: str) -> str: ...

    def put_upload(self, key_id: str, upload_id: str, audio: bytes) -> StoredObject: ...

    def check_upload(self, key_id: str, upload_id: str, head_bytes: int) -> tuple[str, bytes]: ...

    def load(self, stored: StoredObject) -> tuple[bytes, str, str, str | None]: ...

    def load_job_audio(self, stored: StoredObject) -> tuple[AudioBytes, str, str, str | None]: ...

    def stream_upload(self, key_id: str, upload_id: str) -> UploadSink: ...

    def keep_first_upload(self, stored: StoredObject) -> bool: ...

    def put_known_speakers(self, key_id: str, job_id: str, body: bytes) -> str: ...

    def load_known_speakers(self, object_key: str) -> bytes | None: ...


class WebhookSender(Protocol):
    """Sends a job's notification, signed with the job's secret; ``record`` is told of every attempt. True once
    the receiver accepted it."""

    def send(self, url: str, body: bytes, secret: str, *, record: Callable[[WebhookAttempt], None]) -> bool: ...


class AudioFetcher(Protocol):
    """Fetches audio sent by URL under the deployment's address rules: the body's bytes, at most ``max_bytes`` of
    them, or one of infery.domain.audio_url's errors (unreachable, too large, address not allowed, too slow...).
    ``fetch_into`` hands the body to ``write`` as it arrives (its size is returned), for a file too large to hold."""

    def fetch(self, url: str, *, max_bytes: int) -> bytes: ...

    def fetch_into(self, url: str, write: Callable[[bytes], object], *, max_bytes: int) -> int: ...
