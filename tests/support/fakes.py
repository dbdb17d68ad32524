"""In-memory stand-ins for the ports of infery.usecases.ports: the use cases run on them without AWS or a model server.

They keep the rules the real stores enforce with conditional writes (a request id is reserved once, a reservation
is closed once, the balance never goes below zero, a job is claimed only while queued or when its lease ran out),
so a use case that breaks one of them fails here as it would on AWS.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from infery.adapters.dynamodb import deserialize, serialize
from infery.domain import keys as key_rules
from infery.domain.async_inference import AsyncNotification, AsyncSubmission
from infery.domain.clock import iso_at, now_iso
from infery.domain.errors import AuthenticationFailed, InvalidRequest, NotFound
from infery.domain.ids import key_id_for
from infery.domain.inference import InferenceRequest, InferenceResult
from infery.domain.jobs import Job, JobError, JobStatus, WebhookAttempt, may_be_claimed
from infery.domain.keys import ApiKeyItem
from infery.domain.ledger import (
    LedgerEntry,
    LedgerKind,
    Reservation,
    ReservationClosed,
    SettledCharge,
    check_note,
    settle,
    take_for_reservation,
)
from infery.domain.parts import JobPart
from infery.domain.shards import check_shard_count, evened, start_shard
from infery.domain.stored_audio import StoredObject

from tests.support.builders import ledger_entry

_clock = itertools.count(1_800_000_000)


@dataclass
class FakeCredits:
    balances: dict[str, int] = field(default_factory=dict)  # key_hash -> available credits (of shard 0)
    entries: list[LedgerEntry] = field(default_factory=list)
    open: dict[str, Reservation] = field(default_factory=dict)
    # key_hash -> the balances of shards 1.. of a sharded key (infery.domain.shards)
    more_shards: dict[str, list[int]] = field(default_factory=dict)

    def balance(self, key_hash: str) -> int:
        if key_hash not in self.balances:
            raise NotFound("This key does not exist.", code="key_not_found")
        return self.balances[key_hash] + sum(self.more_shards.get(key_hash, []))

    def shard_balances(self, key_hash: str) -> list[int]:
        self.balance(key_hash)
        return [self.balances[key_hash], *self.more_shards.get(key_hash, [])]

    def _set_shards(self, key_hash: str, balances: list[int]) -> None:
        self.balances[key_hash] = balances[0]
        if len(balances) > 1:
            self.more_shards[key_hash] = list(balances[1:])
        else:
            self.more_shards.pop(key_hash, None)

    def set_shards(self, key: ApiKeyItem, shards: int) -> ApiKeyItem:
        check_shard_count(shards)
        self._set_shards(key.key_hash, evened([self.balance(key.key_hash)] + [0] * (shards - 1)))
        return key.model_copy(update={"credit_shards": shards, "ledger_parts": max(key.ledger_parts, shards)})

    def rebalance(self, key_hash: str, *, target: int = 0, need: int = 0) -> int:
        balances = self.shard_balances(key_hash)
        self._set_shards(key_hash, evened(balances, target if target < len(balances) else 0, need))
        return self.balance(key_hash)

    def entries_for_request(self, key_id: str, request_id_prefix: str, *, parts: int = 1) -> list[LedgerEntry]:
        # in the ledger table's order: by entry id (request_id#kind), whatever order they were written in
        return sorted(
            (
                entry
                for entry in self.entries
                if entry.key_id == key_id
                and entry.entry_id.startswith(request_id_prefix)
                and (entry.shard or 0) < parts
            ),
            key=lambda entry: entry.entry_id,
        )

    def top_up(self, key: ApiKeyItem, credits: int, *, request_id: str, note: str | None = None) -> int:
        """Add credits (an operator's payment); the balance after. One request_id adds once."""
        if credits <= 0:
            raise ValueError("a top-up adds a positive number of credits")
        check_note(note)
        if not self._has(request_id, LedgerKind.TOPUP):
            self._entry(key.key_hash, key.key_id, LedgerKind.TOPUP, request_id, credits, note=note)
            if key.credit_shards > 1:
                self.rebalance(key.key_hash)
        return self.balance(key.key_hash)

    def _entry(
        self, key: str, key_id: str, kind: LedgerKind, request_id: str, credits: int, shard: int = 0, **fields: Any
    ) -> int:
        """Change the shard's balance and ledger it; the shard's balance after."""
        balances = self.shard_balances(key)
        balances[shard] += credits
        self._set_shards(key, balances)
        self.entries.append(
            ledger_entry(key_id, kind, request_id, credits, balances[shard], now_iso(), shard=shard or None, **fields)
        )
        return balances[shard]

    def _has(self, request_id: str, kind: LedgerKind) -> bool:
        return any(entry.entry_id == f"{request_id}#{kind.value}" for entry in self.entries)

    def reserve(
        self,
        key: ApiKeyItem,
        credits: int,
        *,
        request_id: str,
        model: str,
        hold_seconds: int | None = None,
        covered_seconds: float | None = None,
    ) -> Reservation:
        if self._has(request_id, LedgerKind.RESERVE):
            if request_id in self.open:
                return self.open[request_id]
            raise ReservationClosed(f"Request {request_id} was already reserved and closed.")
        shard = start_shard(request_id, key.credit_shards)
        if key.credit_shards > 1 and self.shard_balances(key.key_hash)[shard] < credits:
            self.rebalance(key.key_hash, target=shard, need=credits)
        available = self.shard_balances(key.key_hash)[shard]
        change = take_for_reservation(available if available >= credits else self.balance(key.key_hash), credits)
        reservation = Reservation.opened(
            key,
            credits,
            request_id=request_id,
            model=model,
            shard=shard,
            created_epoch=next(_clock),
            hold_seconds=hold_seconds,
            covered_seconds=covered_seconds,
        )
        self._entry(key.key_hash, key.key_id, LedgerKind.RESERVE, request_id, change, shard, model=model)
        self.open[request_id] = reservation
        return reservation

    def reservation(self, request_id: str) -> Reservation | None:
        return self.open.get(request_id)

    def _closing_shard(self, reservation: Reservation) -> int:
        """The reservation's shard, or shard 0 when the key has fewer shards now."""
        shard = reservation.shard or 0
        return shard if shard < len(self.shard_balances(reservation.key_hash)) else 0

    def settle(self, reservation: Reservation, credits_used: int, *, audio_seconds: float) -> SettledCharge:
        if self.open.pop(reservation.request_id, None) is None:
            return SettledCharge(billed_credits=credits_used, balance_after=self.balance(reservation.key_hash))
        shard = self._closing_shard(reservation)
        if reservation.shard is not None and credits_used == reservation.credits:
            # as the store: a sharded key's exact reservation is settled without touching (or reading) its shard
            self.entries.append(
                ledger_entry(
                    reservation.key_id,
                    LedgerKind.SETTLE,
                    reservation.request_id,
                    0,
                    None,
                    now_iso(),
                    shard=reservation.shard or None,
                    model=reservation.model,
                    billed_credits=credits_used,
                    audio_seconds=audio_seconds,
                )
            )
            return SettledCharge(billed_credits=credits_used, balance_after=self.balance(reservation.key_hash))
        settlement = settle(reservation.credits, credits_used, self.shard_balances(reservation.key_hash)[shard])
        self._entry(
            reservation.key_hash,
            reservation.key_id,
            LedgerKind.SETTLE,
            reservation.request_id,
            settlement.change,
            shard,
            model=reservation.model,
            billed_credits=settlement.billed_credits,
            audio_seconds=audio_seconds,
            unpaid_credits=settlement.unpaid_credits or None,
        )
        return SettledCharge(
            billed_credits=settlement.billed_credits,
            balance_after=self.balance(reservation.key_hash),
            unpaid_credits=settlement.unpaid_credits,
        )

    def refund(self, reservation: Reservation, *, reason: str) -> int | None:
        if self.open.pop(reservation.request_id, None) is None:
            return None
        self._entry(
            reservation.key_hash,
            reservation.key_id,
            LedgerKind.REFUND,
            reservation.request_id,
            reservation.credits,
            self._closing_shard(reservation),
            model=reservation.model,
            note=reason,
        )
        return self.balance(reservation.key_hash)

    def charged(self, key_id: str) -> int:
        """What the key paid in all: the sum of its reserve, settle and refund entries, negated."""
        return -sum(entry.credits for entry in self.entries if entry.key_id == key_id)


@dataclass
class FakeKeys:
    keys: dict[str, ApiKeyItem] = field(default_factory=dict)  # key_hash -> key

    def add(self, key: ApiKeyItem) -> ApiKeyItem:
        self.keys[key.key_hash] = key
        return key

    def get(self, key_id: str) -> ApiKeyItem:
        for key in self.keys.values():
            if key.key_id == key_id:
                return key
        raise NotFound(f"No key has the id '{key_id}'.", param="key_id", code="key_not_found")

    def get_by_hash(self, key_hash: str) -> ApiKeyItem | None:
        return self.keys.get(key_hash)

    def authenticate(self, authorization: str | None) -> ApiKeyItem:
        """As KeyStore.authenticate: the key's format and checksum, then its row, then whether it may be used."""
        api_key = key_rules.api_key_from_authorization(authorization)
        key = self.keys.get(key_rules.hash_api_key(api_key))
        if key is None:
            raise AuthenticationFailed(f"Incorrect API key provided: {key_rules.mask_api_key(api_key)}.")
        key_rules.ensure_usable(key, key_rules.mask_api_key(api_key))
        return key

    def create(self, name: str, credits: int = 0, api_key: str | None = None) -> tuple[str, ApiKeyItem]:
        """A new key (a generated one unless given), in clear once; KeyStore.create's other options are not kept."""
        api_key = api_key or key_rules.generate_api_key()
        key_rules.check_key_format(api_key)
        key_hash = key_rules.hash_api_key(api_key)
        if key_hash in self.keys:
            raise ValueError("this key exists already")
        key = ApiKeyItem(
            key_hash=key_hash, key_id=key_id_for(key_hash), name=name, credits=credits, created_at=now_iso()
        )
        return api_key, self.add(key)

    def revoke(self, key_id: str) -> ApiKeyItem:
        key = self.get(key_id).model_copy(update={"status": "revoked", "revoked_at": now_iso()})
        return self.add(key)


@dataclass
class FakeJobs:
    jobs: dict[str, Job] = field(default_factory=dict)
    upload_slots: dict[str, tuple[str, int]] = field(default_factory=dict)  # upload id -> (key id, open until)
    # the runner computes leases from time.time(), as the DynamoDB store compares them with it
    now: Callable[[], int] = lambda: int(time.time())

    def create(self, job: Job) -> bool:
        if job.job_id in self.jobs:
            return False
        self.jobs[job.job_id] = job
        return True

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def list_for_key(self, key_id: str, limit: int = 20) -> tuple[list[Job], bool]:
        own = sorted(
            (job for job in self.jobs.values() if job.key_id == key_id), key=lambda job: job.created_at, reverse=True
        )
        return own[:limit], len(own) > limit

    def _update(self, job_id: str, **changes: Any) -> Job:
        # as the store's updates: every change dates the job, unless it sets the date itself
        self.jobs[job_id] = self.jobs[job_id].model_copy(update={"updated_at": now_iso(), **changes})
        return self.jobs[job_id]

    def claim(self, job_id: str, lease_seconds: int, open_until: int) -> Job | None:
        job = self.jobs.get(job_id)
        now = self.now()
        if job is None or not may_be_claimed(job, now):
            return None
        return self._update(
            job_id,
            status=JobStatus.RUNNING,
            lease_until=now + lease_seconds,
            progress=0.05,
            attempts=job.attempts + 1,
            open_until=open_until,
            inference_id=None,
            parts=[],
        )

    def unfinished(self) -> Iterator[Job]:
        yield from (job for job in list(self.jobs.values()) if job.open_key_id is not None)

    def release_if_lease_expired(self, job_id: str, now: int) -> bool:
        job = self.jobs[job_id]
        if job.status is not JobStatus.RUNNING or job.lease_until >= now:
            return False
        self._update(job_id, status=JobStatus.QUEUED, lease_until=0)
        return True

    def requeue_if_still_waiting(self, job_id: str, waiting_since: str, now: int) -> bool:
        job = self.jobs[job_id]
        if job.status is not JobStatus.QUEUED or job.updated_at != waiting_since:
            return False
        self._update(job_id, updated_at=iso_at(now))
        return True

    def submitted(self, job_id: str, *, inference_id: str, lease_until: int, parts: list[JobPart] | None = None) -> Job:
        if self.jobs[job_id].status is not JobStatus.RUNNING:  # as the store's condition: a running job only
            return self.jobs[job_id]
        return self._update(
            job_id, inference_id=inference_id, lease_until=lease_until, progress=0.1, parts=list(parts or [])
        )

    def _running_part(self, job_id: str, inference_id: str, index: int, part_inference_id: str) -> JobPart | None:
        """The part as the store's condition finds it: of the running attempt, under that invocation's id."""
        job = self.jobs.get(job_id)
        if job is None or job.status is not JobStatus.RUNNING or job.inference_id != inference_id:
            return None
        if index >= len(job.parts) or job.parts[index].inference_id != part_inference_id:
            return None
        return job.parts[index]

    def _replace_part(self, job_id: str, part: JobPart, **changes: Any) -> Job:
        parts = list(self.jobs[job_id].parts)
        parts[part.index] = part
        return self._update(job_id, parts=parts, **changes)

    def part_done(
        self,
        job_id: str,
        *,
        inference_id: str,
        part_inference_id: str,
        index: int,
        output_location: str,
        audio_seconds: float,
    ) -> Job | None:
        part = self._running_part(job_id, inference_id, index, part_inference_id)
        if part is None:
            return None
        done = part.model_copy(update={"output_location": output_location, "audio_seconds": round(audio_seconds, 3)})
        return self._replace_part(job_id, done)

    def part_resubmitted(
        self,
        job_id: str,
        *,
        inference_id: str,
        index: int,
        previous_inference_id: str,
        part: JobPart,
        lease_until: int,
    ) -> Job | None:
        if self._running_part(job_id, inference_id, index, previous_inference_id) is None:
            return None
        return self._replace_part(job_id, part, lease_until=lease_until)

    def _is_running(self, job_id: str, attempt: str | None) -> bool:
        job = self.jobs[job_id]
        return job.status is JobStatus.RUNNING and (attempt is None or job.inference_id == attempt)

    def release(self, job_id: str, *, attempt: str | None = None) -> Job:
        if self._is_running(job_id, attempt):
            self._update(job_id, status=JobStatus.QUEUED, lease_until=0)
        return self.jobs[job_id]

    def succeed(self, job_id: str, *, result_key: str, credits_used: int, audio_seconds: float) -> Job:
        return self._update(
            job_id,
            status=JobStatus.SUCCEEDED,
            progress=1.0,
            result_key=result_key,
            credits_used=credits_used,
            audio_seconds=audio_seconds,
            open_key_id=None,
            open_until=None,
        )

    def fail(self, job_id: str, error: JobError, *, attempt: str | None = None) -> Job:
        if attempt is not None and not self._is_running(job_id, attempt):
            return self.jobs[job_id]
        return self._update(job_id, status=JobStatus.FAILED, error=error, open_key_id=None, open_until=None)

    def count_open(self, key_id: str, *, at_most: int) -> int:
        now = self.now()
        open_jobs = sum(1 for job in self.jobs.values() if job.open_key_id == key_id and (job.open_until or 0) > now)
        open_slots = sum(1 for owner, until in self.upload_slots.values() if owner == key_id and until > now)
        return min(open_jobs + open_slots, at_most)

    def hold_upload_slot(self, key_id: str, upload_id: str, open_until: int) -> None:
        self.upload_slots[upload_id] = (key_id, open_until)

    def keep_upload_slot_open(self, key_id: str, upload_id: str, open_until: int) -> bool:
        if self.upload_slots.get(upload_id, ("", 0))[0] != key_id:
            return False
        self.upload_slots[upload_id] = (key_id, open_until)
        return True

    def release_upload_slot(self, key_id: str, upload_id: str) -> bool:
        if self.upload_slots.get(upload_id, ("", 0))[0] != key_id:
            return False
        del self.upload_slots[upload_id]
        return True

    def record_webhook_attempt(self, job_id: str, attempt: WebhookAttempt) -> None:
        self._update(job_id, webhook_attempts=[*self.jobs[job_id].webhook_attempts, attempt])


@dataclass
class FakeQueue:
    """The jobs queue: what was sent, in order."""

    sent: list[str] = field(default_factory=list)

    def send(self, job_id: str) -> None:
        self.sent.append(job_id)


@dataclass
class FakeUploadStream:
    """The UploadSink port: what was written, stored in the fake bucket on commit; ``aborted`` once dropped."""

    audio: FakeAudio
    key_id: str
    upload_id: str
    written: bytearray = field(default_factory=bytearray)
    committed: bool = False
    aborted: bool = False

    def write(self, data: bytes) -> None:
        limit = self.audio.fail_stream_after
        if limit is not None and len(self.written) + len(data) > limit:
            raise OSError("S3 refused the part")
        self.written += data

    def commit(self) -> StoredObject:
        self.committed = True
        return self.audio.put_upload(self.key_id, self.upload_id, bytes(self.written))

    def abort(self) -> None:
        self.aborted = True
        self.written.clear()


@dataclass
class FakeAudio:
    bucket: str = "audio-bucket"
    objects: dict[str, bytes] = field(default_factory=dict)  # object key -> bytes
    results: dict[str, InferenceResult] = field(default_factory=dict)
    fail_put_result: bool = False
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)  # object key -> its user metadata
    # every streamed upload begun, and after how many bytes written a stream's store fails (None: never)
    streams: list[FakeUploadStream] = field(default_factory=list)
    fail_stream_after: int | None = None

    @staticmethod
    def upload_key(key_id: str, upload_id: str) -> str:
        return f"uploads/{key_id}/{upload_id}"

    def presigned_upload(self, key_id: str, upload_id: str) -> dict[str, Any]:
        return {"url": f"https://{self.bucket}.s3.example/", "fields": {"key": self.upload_key(key_id, upload_id)}}

    def upload_uri(self, key_id: str, upload_id: str) -> str:
        return f"s3://{self.bucket}/{self.upload_key(key_id, upload_id)}"

    def put_upload(self, key_id: str, upload_id: str, audio: bytes) -> StoredObject:
        key = self.upload_key(key_id, upload_id)
        # the bucket is versioned and an upload slot's first version is the upload: a later one is never read
        self.objects.setdefault(key, audio)
        return StoredObject(self.bucket, key, key_id, "uploads", upload_id, len(audio))

    def _check(self, key: str) -> bytes:
        """The object's bytes, refused as AudioStore refuses them: 404 when it is not there, 400 when empty."""
        if key not in self.objects:
            raise NotFound(
                "No upload with this id has arrived for this key. Upload the file to the upload_url first.",
                param="upload_id",
                code="upload_not_found",
            )
        if not self.objects[key]:
            raise InvalidRequest("The uploaded file is empty.", param="upload_id", code="empty_file")
        return self.objects[key]

    def check_upload(self, key_id: str, upload_id: str, head_bytes: int) -> tuple[str, bytes]:
        audio = self._check(self.upload_key(key_id, upload_id))
        return self.upload_uri(key_id, upload_id), audio[:head_bytes]

    def load(self, stored: StoredObject) -> tuple[bytes, str, str, str | None]:
        return self._check(stored.key), stored.uri, "etag-1", "version-1"

    def put_rendered(self, key_id: str, job_id: str, name: str, body: bytes, content_type: str, expires_in: int) -> str:
        key = f"results/{key_id}/{job_id}.{name}"
        self.objects[key] = body
        return f"https://{self.bucket}.s3.example/{key}?X-Amz-Expires={expires_in}"

    def object_metadata(self, stored: StoredObject) -> dict[str, str]:
        return dict(self.metadata.get(stored.key, {}))

    def load_job_audio(self, stored: StoredObject) -> tuple[bytes, str, str, str | None]:
        return self.load(stored)

    def stream_upload(self, key_id: str, upload_id: str) -> FakeUploadStream:
        stream = FakeUploadStream(self, key_id, upload_id)
        self.streams.append(stream)
        return stream

    def keep_first_upload(self, stored: StoredObject) -> bool:
        """The slot's first upload's ETag is "etag-1" (as ``load`` says); a later one is deleted."""
        if stored.etag not in ("", "etag-1"):
            return False
        return stored.key in self.objects

    def result_key(self, key_id: str, job_id: str) -> str:
        return f"results/{key_id}/{job_id}.json"

    def put_known_speakers(self, key_id: str, job_id: str, body: bytes) -> str:
        key = f"speakers/{key_id}/{job_id}.json"
        self.objects[key] = body
        return key

    def load_known_speakers(self, object_key: str) -> bytes | None:
        return self.objects.get(object_key)

    def put_result(self, key_id: str, job_id: str, result: InferenceResult) -> str:
        if self.fail_put_result:
            raise OSError("S3 is down")
        self.results[self.result_key(key_id, job_id)] = result
        return self.result_key(key_id, job_id)

    def find_result(self, result_key: str) -> InferenceResult | None:
        return self.results.get(result_key)

    def load_result(self, result_key: str) -> InferenceResult:
        return self.results[result_key]


@dataclass
class FakeRealtimeEndpoint:
    """The real-time endpoint: answers ``answer`` (a result, or an error it raises) and records every request."""

    answer: InferenceResult | Exception
    requests: list[InferenceRequest] = field(default_factory=list)

    def infer(self, request: InferenceRequest) -> InferenceResult:
        self.requests.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@dataclass
class FakeAsyncEndpoint:
    """Records submissions; the test decides each one's outcome and builds the notification SageMaker would send."""

    submitted: list[tuple[str, InferenceRequest]] = field(default_factory=list)
    outcomes: dict[str, InferenceResult | Exception] = field(default_factory=dict)
    refuse_submit: Exception | None = None

    def submit(self, request: InferenceRequest, *, key_id: str, inference_id: str) -> AsyncSubmission:
        if self.refuse_submit is not None:
            raise self.refuse_submit
        self.submitted.append((inference_id, request))
        return AsyncSubmission(inference_id=inference_id, output_location=self.output_location(inference_id))

    def result(self, notification: AsyncNotification) -> InferenceResult:
        return self.output(self.output_location(notification.inference_id))

    def output(self, location: str) -> InferenceResult:
        outcome = self.outcomes[location.removeprefix("s3://b/async-outputs/").removesuffix(".out")]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    @staticmethod
    def output_location(inference_id: str) -> str:
        return f"s3://b/async-outputs/{inference_id}.out"

    def progress_uri(self, key_id: str, inference_id: str) -> str:
        return f"s3://b/progress/{key_id}/{inference_id}.json"

    @classmethod
    def notification(cls, inference_id: str, succeeded: bool = True) -> AsyncNotification:
        return AsyncNotification.model_validate(
            {
                "inferenceId": inference_id,
                "invocationStatus": "Completed" if succeeded else "Failed",
                "eventSource": "aws:sagemaker",
                **({"responseParameters": {"outputLocation": cls.output_location(inference_id)}} if succeeded else {}),
            }
        )


@dataclass
class FakeWebhookSender:
    """Records each notification as (url, body, secret) and answers ``delivered``; one attempt is recorded per
    notification, as the real sender records each of its attempts."""

    sent: list[tuple[str, bytes, str]] = field(default_factory=list)
    delivered: bool = True

    def send(self, url: str, body: bytes, secret: str, *, record: Callable[[WebhookAttempt], None]) -> bool:
        self.sent.append((url, body, secret))
        record(WebhookAttempt(at=now_iso(), status_code=200 if self.delivered else 500))
        return self.delivered


class LowLevelDynamoDB:
    """DynamoDB's low-level client, faked over a fake of a boto3 Table: the client's typed values (``{"S": ...}``)
    become plain ones for the table fake, and its answers typed again, so one table fake serves a store that uses
    the client (KeyStore, RateLimiter) as it would one that used the table."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def __getattr__(self, operation: str) -> Callable[..., dict[str, Any]]:
        method = getattr(self.table, operation)

        def call(**arguments: Any) -> dict[str, Any]:
            arguments.pop("TableName", None)
            for name in ("Key", "Item", "ExpressionAttributeValues", "ExclusiveStartKey"):
                if name in arguments:
                    arguments[name] = deserialize(arguments[name])
            answer = dict(method(**arguments) or {})
            for name in ("Item", "Attributes", "LastEvaluatedKey"):
                if name in answer:
                    answer[name] = serialize(answer[name])
            if "Items" in answer:
                answer["Items"] = [serialize(item) for item in answer["Items"]]
            return answer

        return call
