"""Every collaborator of the functions, the operator's tool and the local stack, built from the settings.

The one place that constructs AWS clients, stores, endpoints and use cases; handlers and tests ask it. Each is
built on its first use and kept (a cached property), not at import: a function's cold start pays only for what
its first request needs (GET /v1/models builds no S3, SQS or SageMaker client), and a test can replace one
(``wiring.rate_limiter = ...``) before anything uses it.

One class per function, each taking that function's settings (infery.settings) and adding to the one before:
``AccountsWiring`` (the operator's tool), ``ReconcilerWiring``, ``WorkerWiring`` and ``Wiring`` (the public API,
which uses them all). A collaborator lives on the first class whose settings hold what it is built from, so a
function that asks for one its settings cannot build is a type error (mypy), not a missing variable at run time.

A boto3 client reads its endpoint (AWS_ENDPOINT_URL_*) from the environment when it is built, that is, on first
use. A function's environment never changes after its cold start, so that is the environment it started with.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

# The module of each collaborator is imported by the property that builds it, on first use, as the collaborator
# itself is built: importing the wiring imports none of them (the job modules, audio probing, the pydantic models
# of the requests), so a function's cold start imports only what its requests use.
if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig

    from infery.adapters.async_endpoint import AsyncWhisperEndpoint
    from infery.adapters.audio_bucket import AudioStore
    from infery.adapters.credit_store import CreditStore
    from infery.adapters.job_queue import SqsJobQueue
    from infery.adapters.job_store import JobStore
    from infery.adapters.key_store import KeyStore
    from infery.adapters.rate_limits import RateLimiter
    from infery.adapters.realtime_endpoint import WhisperEndpoint
    from infery.adapters.webhook_sender import HttpWebhookSender
    from infery.settings import AccountTables, ApiSettings, JobsSettings, JobTables
    from infery.usecases.audio_by_url import AudioByUrl
    from infery.usecases.charging import ModelCatalog, TranscriptionTerms
    from infery.usecases.job_views import JobPresenter
    from infery.usecases.jobs import JobService
    from infery.usecases.transcribe import TranscriptionService

# Submitting a job is quick; a retry of the submit must not queue the audio twice (the inference id guards it).
_JOB_SUBMIT_READ_TIMEOUT_SECONDS = 30
_CONNECT_TIMEOUT_SECONDS = 3


def _sagemaker_runtime(*, read_timeout: float) -> Any:
    """A SageMaker runtime client the SDK never retries: a retried invocation could run (and charge) twice."""
    return boto3.client(
        "sagemaker-runtime",
        config=Config(
            read_timeout=read_timeout, connect_timeout=_CONNECT_TIMEOUT_SECONDS, retries={"total_max_attempts": 1}
        ),
    )


def stack_outputs(stack_name: str) -> dict[str, str]:
    """A deployed CloudFormation stack's outputs (the operator's tool finds its tables there)."""
    stacks = boto3.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    return {output["OutputKey"]: output["OutputValue"] for output in stacks[0].get("Outputs", [])}


class AccountsWiring:
    """The keys and their credits: what the operator's tool and the local stack's seeding need."""

    def __init__(self, tables: AccountTables) -> None:
        self.tables = tables

    @cached_property
    def dynamodb_client(self) -> Any:
        return boto3.client("dynamodb")

    @cached_property
    def dynamodb(self) -> Any:
        """The DynamoDB resource (tables that read and write plain Python values): the job store's. Keys, credits and
        rate limits use the low-level client, so a sync request builds no resource (nor its second client)."""
        return boto3.resource("dynamodb")

    @cached_property
    def keys(self) -> KeyStore:
        from infery.adapters.key_store import KeyStore

        return KeyStore(self.dynamodb_client, self.tables.keys_table_name)

    @cached_property
    def credits(self) -> CreditStore:
        from infery.adapters.credit_store import CreditStore

        return CreditStore(
            self.dynamodb_client,
            self.tables.keys_table_name,
            self.tables.ledger_table_name,
            self.tables.reservations_table_name,
        )


class ReconcilerWiring(AccountsWiring):
    """The accounts, the jobs and their queue: what the reconciler uses."""

    def __init__(self, settings: JobTables) -> None:
        super().__init__(settings)
        self.settings = settings

    @cached_property
    def sqs(self) -> Any:
        return boto3.client("sqs")

    @cached_property
    def job_store(self) -> JobStore:
        from infery.adapters.job_store import JobStore

        return JobStore(self.dynamodb.Table(self.settings.jobs_table_name))

    @cached_property
    def job_queue(self) -> SqsJobQueue:
        from infery.adapters.job_queue import SqsJobQueue

        return SqsJobQueue(self.sqs, self.settings.jobs_queue_url)


class WorkerWiring(ReconcilerWiring):
    """The jobs' use case and all it is built from: what the worker uses."""

    settings: JobsSettings

    def __init__(self, settings: JobsSettings) -> None:
        super().__init__(settings)
        self.settings = settings

    # --- AWS clients -------------------------------------------------------------------------------------------

    @cached_property
    def s3(self) -> Any:
        # Signature version 4 for presigned POSTs too: boto3 signs them with version 2 in us-east-1 by default, which
        # S3 refuses for buckets created since June 2020 (a new deployment's bucket)
        return boto3.client("s3", config=Config(signature_version="s3v4"))

    @cached_property
    def sagemaker_runtime_for_jobs(self) -> Any:
        """For submitting jobs to the asynchronous endpoint: quick calls, never retried by the SDK."""
        return _sagemaker_runtime(read_timeout=_JOB_SUBMIT_READ_TIMEOUT_SECONDS)

    # --- stores, endpoints, the queue --------------------------------------------------------------------------

    @cached_property
    def audio_store(self) -> AudioStore:
        from infery.adapters.audio_bucket import AudioStore

        return AudioStore(
            self.s3,
            self.settings.audio_bucket_name,
            max_upload_bytes=self.settings.max_upload_bytes,
            upload_expiry_seconds=self.settings.upload_expiry_seconds,
            max_job_bytes=self.settings.max_job_bytes,
        )

    @cached_property
    def async_endpoint(self) -> AsyncWhisperEndpoint:
        from infery.adapters.async_endpoint import AsyncWhisperEndpoint

        return AsyncWhisperEndpoint(
            self.sagemaker_runtime_for_jobs,
            self.s3,
            self.settings.sagemaker_async_endpoint_name,
            self.settings.audio_bucket_name,
            invocation_timeout_seconds=self.settings.async_invocation_timeout_seconds,
            request_ttl_seconds=self.settings.async_request_ttl_seconds,
        )

    @cached_property
    def webhook_sender(self) -> HttpWebhookSender:
        from infery.adapters.webhook_sender import HttpWebhookSender

        return HttpWebhookSender(
            allow_private_addresses=self.settings.webhook_allow_private_addresses,
            allow_http=self.settings.webhook_allow_http,
        )

    def _audio_by_url(self, timeout_seconds: float) -> AudioByUrl:
        """Audio sent by URL, fetched under the webhooks' address rules (one setting for where infery connects)."""
        from infery.adapters.audio_fetcher import HttpAudioFetcher
        from infery.usecases.audio_by_url import AudioByUrl

        fetcher = HttpAudioFetcher(
            allow_private_addresses=self.settings.webhook_allow_private_addresses,
            allow_http=self.settings.webhook_allow_http,
            connect_timeout_seconds=self.settings.audio_url_connect_timeout_seconds,
            timeout_seconds=timeout_seconds,
        )
        return AudioByUrl(fetcher, self.audio_store)

    @cached_property
    def job_audio_by_url(self) -> AudioByUrl:
        """A job's audio sent by URL, fetched by the worker when the job runs."""
        return self._audio_by_url(self.settings.audio_url_job_timeout_seconds)

    # --- use cases ---------------------------------------------------------------------------------------------

    @cached_property
    def catalog(self) -> ModelCatalog:
        """The models this deployment serves (GET /v1/models reads it without building the rest)."""
        from infery.usecases.charging import ModelCatalog

        return ModelCatalog(self.settings.default_model, self.settings.model_aliases)

    @cached_property
    def terms(self) -> TranscriptionTerms:
        """The models, prices and audio limits both use cases apply, as plain values."""
        from infery.domain.pricing import Pricing
        from infery.usecases.charging import TranscriptionTerms

        return TranscriptionTerms(
            catalog=self.catalog,
            pricing=Pricing(
                seconds_per_credit=self.settings.seconds_per_credit,
                min_credits_per_request=self.settings.min_credits_per_request,
                model_prices=self.settings.model_prices,
                diarization_seconds_per_credit=self.settings.diarization_seconds_per_credit,
            ),
            max_audio_seconds=self.settings.max_audio_seconds,
            max_job_audio_seconds=self.settings.max_job_audio_seconds,
            max_sync_audio_seconds=self.settings.max_sync_audio_seconds,
            min_audio_sample_rate=self.settings.min_audio_sample_rate,
        )

    @cached_property
    def job_presenter(self) -> JobPresenter:
        from infery.adapters.async_endpoint import ProgressReader
        from infery.usecases.job_views import JobPresenter

        return JobPresenter(self.audio_store, model_progress=ProgressReader(self.s3, self.settings.audio_bucket_name))

    @cached_property
    def job_service(self) -> JobService:
        from infery.usecases.jobs import JobService

        return JobService(
            self.terms,
            self.credits,
            self.job_store,
            self.audio_store,
            self.keys,
            self.job_queue,
            self.async_endpoint,
            self.job_presenter,
            self.webhook_sender,
            lease_seconds=self.settings.worker_lease_seconds,
            hold_seconds=self.settings.async_job_hold_seconds,
            max_attempts=self.settings.worker_max_receives,
            max_open_work=self.settings.max_open_jobs_per_key,
            upload_expiry_seconds=self.settings.upload_expiry_seconds,
            audio_by_url=self.job_audio_by_url,
            max_fetch_bytes=self.settings.max_job_bytes,
            part_seconds=self.settings.job_part_seconds,
            part_search_seconds=self.settings.job_part_search_seconds,
        )


class Wiring(WorkerWiring):
    """Everything: what the public API uses, the job use case's collaborators and the synchronous calls' own."""

    settings: ApiSettings

    def __init__(self, settings: ApiSettings) -> None:
        super().__init__(settings)
        self.settings = settings

    # --- synchronous calls ------------------------------------------------------------------------------------

    @cached_property
    def sagemaker_runtime(self) -> Any:
        """For real-time inference. Never retried by the SDK: a retry would run (and risk charging) the audio
        twice; it gives up before API Gateway does, so our 504 reaches the client before the gateway's."""
        return _sagemaker_runtime(read_timeout=self.settings.endpoint_timeout_seconds)

    @cached_property
    def realtime_endpoint(self) -> WhisperEndpoint:
        from infery.adapters.realtime_endpoint import WhisperEndpoint

        return WhisperEndpoint(self.sagemaker_runtime, self.settings.sagemaker_endpoint_name)

    @cached_property
    def transcription(self) -> TranscriptionService:
        from infery.usecases.transcribe import TranscriptionService

        return TranscriptionService(
            self.terms,
            self.credits,
            self.realtime_endpoint,
            self.audio_store,
            max_sync_diarized_audio_seconds=self.settings.max_sync_diarized_audio_seconds,
        )

    @cached_property
    def audio_by_url(self) -> AudioByUrl:
        """A sync call's audio sent by URL, fetched inside the API's time limit."""
        return self._audio_by_url(self.settings.audio_url_timeout_seconds)

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        from infery.adapters.rate_limits import RateLimiter

        return RateLimiter(self.dynamodb_client, self.settings.rate_limits_table_name)

    # --- Idempotency-Key (powertools) --------------------------------------------------------------------------

    @cached_property
    def idempotency_config(self) -> IdempotencyConfig:
        """A retried request with the same Idempotency-Key (per key) gets the first answer back, charged once."""
        from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

        return IdempotencyConfig(
            event_key_jmespath="[key_id, idempotency_key]",
            payload_validation_jmespath="request_sha256",
            expires_after_seconds=self.settings.idempotency_ttl_seconds,
        )

    @cached_property
    def idempotency_store(self) -> DynamoDBPersistenceLayer:
        from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

        return DynamoDBPersistenceLayer(
            table_name=self.settings.idempotency_table_name, boto3_client=self.dynamodb_client
        )
