"""Settings per function, read from the environment once per cold start and validated.

Each function reads only what it uses: ``ApiSettings`` (functions/transcribe), ``WorkerSettings`` (functions/worker)
and ``ReconcilerSettings`` (functions/reconciler) are composed of small pieces (the tables, the bucket, pricing, the
models, the jobs, the webhooks), so a function neither needs nor validates a variable it never reads. template.yaml
gives each function the variables of its model (tests/unit/test_settings.py holds them together); the local stack
builds each function's environment from the same template.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cache
from typing import Any, Self, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from infery.domain.pricing import ModelPrice

MIB = 1024 * 1024
# Raw audio the sync path takes. Base64 makes it 4/3 larger; 4 MiB -> 5.6 MB keeps both the Lambda request
# (6,291,456 bytes) and the SageMaker body (6 MB) under their hard limits. The CLI sends larger files as jobs.
DEFAULT_MAX_SYNC_AUDIO_BYTES = 4 * MIB
# OpenAI's newer transcription models, answered by the deployed Whisper unless the operator says otherwise
DEFAULT_MODEL_ALIASES = {
    "gpt-4o-transcribe": "whisper-1",
    "gpt-4o-mini-transcribe": "whisper-1",
    # the default model with speaker diarization beside it (infery.domain.diarization)
    "gpt-4o-transcribe-diarize": "whisper-1",
}


class EnvironmentSettings(BaseModel):
    """A pydantic model filled from environment variables named after its fields, in any case (``KEYS_TABLE_NAME``
    for ``keys_table_name``); a value that is a list or a mapping is given as JSON.

    Plain pydantic rather than pydantic-settings: that package's import alone added about a quarter of
    ``import boto3``'s time to every function's cold start (benchmarks/cold_start.py), for these few lines.
    """

    model_config = ConfigDict(extra="ignore")

    @classmethod
    def from_environment(cls, environment: Mapping[str, str] | None = None) -> Self:
        variables = {
            name.lower(): value for name, value in (os.environ if environment is None else environment).items()
        }
        return cls.model_validate({name: variables[name] for name in cls.model_fields if name in variables})


# --- the pieces ------------------------------------------------------------------------------------------------


class AccountTables(EnvironmentSettings):
    """The tables of keys and credits: all the operator's tool needs (it has no function's environment)."""

    keys_table_name: str = Field(description="DynamoDB table of API keys and their credit balances")
    ledger_table_name: str = Field(description="DynamoDB table of every credit change")
    reservations_table_name: str = Field(description="DynamoDB table of credits held by requests in flight")


class JobTables(AccountTables):
    """The accounts, the jobs and their queue: what every function reads (the reconciler no more)."""

    jobs_table_name: str = Field(description="DynamoDB table of transcription jobs")
    jobs_queue_url: str = Field(description="SQS queue the worker reads (S3 events and job requests)")


class PricingSettings(EnvironmentSettings):
    """The models served and what they cost."""

    default_model: str = "whisper-large-v3"
    # Other names of the default model (whisper-1, OpenAI's, always is one), each with the name it stands for: the
    # default model or another alias. OpenAI's newer models by default, so clients that ask for them get Whisper.
    # A JSON list (the older form) names aliases of the default model; empty (template.yaml's default, short
    # enough for the function version's description) is the default.
    model_aliases: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_MODEL_ALIASES))

    seconds_per_credit: float = Field(default=5.0, gt=0)
    min_credits_per_request: int = Field(default=1, ge=0)
    # JSON, e.g. {"whisper-large-v3": {"seconds_per_credit": 2.5, "min_credits_per_request": 2}}
    model_prices: dict[str, ModelPrice] = Field(default_factory=dict)
    # speaker diarization's surcharge: one more credit per started this many seconds of audio it is asked for
    diarization_seconds_per_credit: float = Field(default=10.0, gt=0)

    @field_validator("model_aliases", "model_prices", mode="before")
    @classmethod
    def _json_from_the_environment(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return dict(DEFAULT_MODEL_ALIASES)
        value = json.loads(value) if isinstance(value, str) else value
        if isinstance(value, list | tuple):  # the older form: names of the default model
            return {name: "whisper-1" for name in value if name != "whisper-1"}
        return value


class AudioLimits(EnvironmentSettings):
    """What audio is taken at all, checked before any credit is reserved."""

    # The most one model invocation decodes: the model container has the same limit (WHISPER_MAX_AUDIO_SECONDS). A
    # synchronous call stays far below it (max_sync_audio_seconds); a job longer than job_part_seconds runs in parts.
    max_audio_seconds: float = Field(default=4 * 3600.0, gt=0)
    # A synchronous call refuses longer audio before reserving (template.yaml's MaxSyncAudioSeconds): the model
    # must finish it within endpoint_timeout_seconds, or the call times out, is refunded, and the work was free.
    max_sync_audio_seconds: float = Field(default=300.0, gt=0)
    # No file may last longer (template.yaml's MaxJobAudioSeconds), refused before any credit is reserved; a job
    # past JobPartSeconds runs in parts.
    max_job_audio_seconds: float = Field(default=10 * 3600.0, gt=0)
    # Below this a header lies (1 Hz turns 4 KB into 2,000 s) or the speech is not intelligible.
    min_audio_sample_rate: int = Field(default=8_000, gt=0)


class TranscriptionSettings(PricingSettings, AudioLimits):
    """What the transcription use case reads: the models, their prices and the audio they take."""


class RealTimeModel(EnvironmentSettings):
    """The SageMaker endpoint of synchronous calls."""

    sagemaker_endpoint_name: str = Field(description="SageMaker endpoint running the Whisper container")
    # Below API Gateway's 29 s integration timeout, so our 504 reaches the client before the gateway's.
    endpoint_timeout_seconds: float = Field(default=27.0, gt=0)


class AsyncModel(EnvironmentSettings):
    """The SageMaker endpoint of jobs (asynchronous inference: same model and container, no 60 s limit)."""

    sagemaker_async_endpoint_name: str = Field(description="SageMaker asynchronous endpoint that runs jobs")
    # An asynchronous invocation may run this long (SageMaker's maximum is 3,600 s) ...
    async_invocation_timeout_seconds: int = Field(default=3600, ge=60, le=3600)
    # ... after waiting this long at most in the endpoint's queue (RequestTTLSeconds, 60 to 21,600 s).
    async_request_ttl_seconds: int = Field(default=3600, ge=60, le=21600)


class AudioBucket(EnvironmentSettings):
    """The bucket of uploads, batch drops and results, and what an upload may be."""

    audio_bucket_name: str = Field(description="S3 bucket of uploads, batch drops (inbox/) and job results")
    # What a synchronous call reads of an upload (whole, in the API function); past it, a 413 names jobs.
    max_upload_bytes: int = Field(default=25 * 1000 * 1000, gt=0)
    # How long a presigned upload URL stays valid.
    upload_expiry_seconds: int = Field(default=900, gt=0, le=7 * 24 * 3600)
    # What a job's file may weigh, uploaded (the presigned POST's limit), fetched by URL or dropped (template.yaml's
    # MaxJobBytes); the worker reads its head and tail, and the model reads it from the bucket by ranges, never whole.
    max_job_bytes: int = Field(default=1_000_000_000, gt=0)


class ReservationGrace(EnvironmentSettings):
    # A reservation still open after this long belongs to a crashed request: the reconciler gives it back.
    # Longer than Lambda's 15-minute maximum, so no running request ever loses its reservation.
    reservation_grace_seconds: int = Field(default=1200, ge=900)


class Webhooks(EnvironmentSettings):
    """What a webhook URL may point at. A deployment allows neither; the local stack allows both, because its
    receivers run on the developer's machine."""

    # Loopback, private and link-local addresses (SSRF otherwise), on any port: a local receiver listens where it can.
    webhook_allow_private_addresses: bool = False
    # Plain http:// URLs (a deployment sends https only).
    webhook_allow_http: bool = False


class AudioUrls(EnvironmentSettings):
    """How long audio sent by URL may take to fetch (where it may come from: the webhooks' rules, Webhooks)."""

    # to connect, and between two reads of the answer
    audio_url_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    # the whole fetch of a sync call, redirects included: inside the API's time limit, leaving the model most of it
    audio_url_timeout_seconds: float = Field(default=10.0, gt=0)
    # the whole fetch of a job, streamed into the bucket by the worker, whose run is limited to 300 s: the rest is for
    # claiming, checking, reserving and submitting. A 1 GB file must arrive at 4.2 MB/s or more (the local stack
    # streams about 80 MB/s into moto); a slower source is url_timeout, with nothing stored or charged.
    audio_url_job_timeout_seconds: float = Field(default=240.0, gt=0)


class JobsSettings(JobTables, AudioBucket, TranscriptionSettings, AsyncModel, ReservationGrace, Webhooks, AudioUrls):
    """What the job use case reads: the worker runs jobs, the API creates them."""

    # A worker that crashed lets another take its job after this long (longer than the worker's timeout).
    worker_lease_seconds: int = Field(default=360, gt=0)
    # The queue's maxReceiveCount: on the last delivery a failing job is failed (and refunded), not retried.
    worker_max_receives: int = Field(default=3, ge=1)
    # How many uploads (not yet expired) and jobs (not yet finished) one key may have open at once; one more is 429.
    max_open_jobs_per_key: int = Field(default=100, ge=1)
    # A job longer than this runs as parts of about this length, in parallel across the asynchronous endpoint's
    # instances (each invocation is limited to an hour), cut at pauses and stitched back in order.
    job_part_seconds: float = Field(default=1800.0, ge=10)

    @property
    def job_part_search_seconds(self) -> float:
        """How far either side of a part's nominal edge its cut is looked for: a pause within 30 s, less for short
        parts (the local stack's tests), so a part is always longer than its two searches."""
        return min(30.0, self.job_part_seconds / 6)

    @property
    def async_job_hold_seconds(self) -> int:
        """How long a submitted job's lease and reservation last: its queue wait and run, with a grace period
        (after it the reconciler gives the credits back and another worker may resubmit the job)."""
        return self.async_request_ttl_seconds + self.async_invocation_timeout_seconds + self.reservation_grace_seconds


# --- each function's settings ----------------------------------------------------------------------------------


class ApiSettings(JobsSettings, RealTimeModel):
    """What the public API (functions/transcribe) reads: the jobs' settings, and the synchronous calls' own."""

    rate_limits_table_name: str = Field(description="DynamoDB table of per-key request counters")
    idempotency_table_name: str = Field(description="DynamoDB table of Idempotency-Key results (powertools)")
    # Requests per minute for keys without a limit of their own; 0 turns the limit off.
    default_rate_limit_per_minute: int = Field(default=600, ge=0)
    # How long a result is replayed for a retried Idempotency-Key.
    idempotency_ttl_seconds: int = Field(default=24 * 3600, gt=0)
    # Raw audio the sync path takes (template.yaml's MaxSyncAudioBytes).
    max_sync_audio_bytes: int = Field(default=DEFAULT_MAX_SYNC_AUDIO_BYTES, gt=0)
    # A synchronous call that asks for speakers refuses longer audio (template.yaml's MaxSyncDiarizedAudioSeconds):
    # diarization runs after Whisper within the same 27 s, and on a CPU it takes 2-7 times Whisper's time. 30 s:
    # benchmarks/diarization.py's slowest recording ran at 1.3 audio seconds per second with diarization (35 s in
    # 27 s); a 35.6 s three-voice call took 11-14 s on 2 busy cores.
    max_sync_diarized_audio_seconds: float = Field(default=30.0, gt=0)
    # After this long (from API Gateway's requestTimeEpoch) the gateway has answered 504 "nothing was charged"
    # and stopped waiting: a request still running then is refunded, never settled. A little under its 29 s.
    api_deadline_seconds: float = Field(default=28.5, gt=0)


class WorkerSettings(JobsSettings):
    """What the worker (functions/worker) reads: the jobs' settings, nothing of the synchronous API's."""


class ReconcilerSettings(JobTables, ReservationGrace):
    """What the reconciler (functions/reconciler) reads: the tables, the queue and its two grace periods."""

    # A queued job that waited this long is sent to the queue again (its message went to the dead-letter queue, or
    # a backlog holds it), and waits this long again before the next send. At least as long as a worker may run, as
    # the reservations' grace, so a job a worker is still starting is not sent again.
    queued_job_grace_seconds: int = Field(default=1200, ge=900)


@cache
def get_settings(model: type[EnvironmentSettings]) -> EnvironmentSettings:
    """The model read from the process's environment, once per model (a function's environment never changes)."""
    return model.from_environment()  # the required values come from the environment


def get_api_settings() -> ApiSettings:
    return cast(ApiSettings, get_settings(ApiSettings))


def get_worker_settings() -> WorkerSettings:
    return cast(WorkerSettings, get_settings(WorkerSettings))


def get_reconciler_settings() -> ReconcilerSettings:
    return cast(ReconcilerSettings, get_settings(ReconcilerSettings))
