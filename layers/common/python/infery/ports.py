"""What the use cases (TranscriptionService, JobService) need from the outside world, as typing Protocols.

The DynamoDB, S3 and SageMaker classes satisfy them on AWS and locally; the unit tests give the use cases
in-memory fakes (tests/unit/fakes.py) that satisfy them too, so refunds, retries and charged-once recovery are
tested without moto or a model server.
"""

from __future__ import annotations

from typing import Any, Protocol

from .async_inference import AsyncNotification, AsyncSubmission
from .credits import LedgerEntry, Reservation, SettledCharge
from .inference import InferenceRequest, InferenceResult
from .jobs import Job, JobError, WebhookAttempt
from .keys import ApiKeyItem
from .storage import StoredObject


class Credits(Protocol):
    def balance(self, key_hash: str) -> int: ...

    def entries_for_request(self, key_id: str, request_id_prefix: str) -> list[LedgerEntry]: ...

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

    def progress_uri(self, key_id: str, inference_id: str) -> str: ...


class Jobs(Protocol):
    def create(self, job: Job) -> bool: ...

    def get(self, job_id: str) -> Job | None: ...

    def list_for_key(self, key_id: str, limit: int = 20) -> tuple[list[Job], bool]: ...

    def claim(self, job_id: str, lease_seconds: int) -> Job | None: ...

    def submitted(self, job_id: str, *, inference_id: str, lease_until: int) -> Job: ...

    def release(self, job_id: str) -> Job: ...

    def succeed(self, job_id: str, *, result_key: str, credits_used: int, audio_seconds: float) -> Job: ...

    def fail(self, job_id: str, error: JobError) -> Job: ...

    def record_webhook_attempt(self, job_id: str, attempt: WebhookAttempt) -> None: ...


class JobQueue(Protocol):
    """Where a job waits for a worker to run it (the jobs queue)."""

    def send(self, job_id: str) -> None: ...


class AudioObjects(Protocol):
    def presigned_upload(self, key_id: str, upload_id: str) -> dict[str, Any]: ...

    def upload_uri(self, key_id: str, upload_id: str) -> str: ...

    def put_upload(self, key_id: str, upload_id: str, audio: bytes) -> StoredObject: ...

    def check_upload(self, key_id: str, upload_id: str) -> str: ...

    def load(self, stored: StoredObject) -> tuple[bytes, str, str]: ...

    def result_key(self, key_id: str, job_id: str) -> str: ...

    def put_result(self, key_id: str, job_id: str, result: InferenceResult) -> str: ...

    def load_result(self, result_key: str) -> InferenceResult: ...
