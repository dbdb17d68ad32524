"""The use cases over in-memory fakes, for the unit tests: a key, the deployment's terms (its models, prices and
audio limits, as the default settings give them), and ``World``, one queued job of 12 s and the job use case."""

from __future__ import annotations

from infery.domain.clock import now_iso
from infery.domain.inference import Task
from infery.domain.jobs import Job, JobStatus, new_job
from infery.domain.keys import ApiKeyItem
from infery.domain.pricing import Pricing
from infery.domain.transcription import TranscriptionOptions
from infery.settings import DEFAULT_MODEL_ALIASES
from infery.usecases.charging import ModelCatalog, TranscriptionTerms
from infery.usecases.job_views import JobPresenter
from infery.usecases.jobs import JobService

from tests.support.builders import inference_result, segment
from tests.support.fakes import (
    FakeAsyncEndpoint,
    FakeAudio,
    FakeCredits,
    FakeJobs,
    FakeKeys,
    FakeQueue,
    FakeWebhookSender,
)
from tests.support.speech import silent_wav

BUCKET = "audio-bucket"
KEY = ApiKeyItem(key_hash="h" * 64, key_id="key_0123456789abcdef", name="tests", credits=100, created_at=now_iso())
HOLD_SECONDS = 9000
RESULT_12S = inference_result("Hello there.", [segment(0, 0.0, 12.0, " Hello there.")], duration=12.0)


def wav(seconds: float) -> bytes:
    return silent_wav(16_000, seconds)


def deployment_terms(*, max_sync_audio_seconds: float = 300.0) -> TranscriptionTerms:
    """The terms a deployment with the default settings offers: 1 credit per started 5 s, at least 1."""
    return TranscriptionTerms(
        catalog=ModelCatalog("whisper-large-v3", DEFAULT_MODEL_ALIASES),
        pricing=Pricing(seconds_per_credit=5.0, min_credits_per_request=1),
        max_audio_seconds=4 * 3600.0,
        max_sync_audio_seconds=max_sync_audio_seconds,
        min_audio_sample_rate=8_000,
    )


class World:
    """One queued job of 12 s on a key, and the job use case over fakes. ``endpoint``: another fake endpoint;
    ``open_until``: the job counts as open work (the reconciler's ``unfinished`` finds it)."""

    def __init__(
        self,
        balance: int = 100,
        audio: bytes | None = None,
        endpoint: FakeAsyncEndpoint | None = None,
        open_until: int | None = None,
    ) -> None:
        self.credits = FakeCredits(balances={KEY.key_hash: balance})
        self.keys = FakeKeys()
        self.keys.add(KEY.model_copy(update={"credits": balance}))
        self.jobs = FakeJobs()
        self.audio = FakeAudio(bucket=BUCKET)
        self.queue = FakeQueue()
        self.endpoint = endpoint or FakeAsyncEndpoint()
        self.webhooks = FakeWebhookSender()
        self.runner = JobService(
            deployment_terms(),
            self.credits,
            self.jobs,
            self.audio,
            self.keys,
            self.queue,
            self.endpoint,
            presenter=JobPresenter(self.audio),
            webhooks=self.webhooks,
            lease_seconds=360,
            hold_seconds=HOLD_SECONDS,
            max_attempts=3,
        )
        object_key = f"uploads/{KEY.key_id}/upl_0123456789abcdef0123456789abcdef"
        self.audio.objects[object_key] = wav(12.0) if audio is None else audio
        self.job = new_job(
            job_id="job_0123456789abcdef0123456789abcdef",
            key_id=KEY.key_id,
            key_hash=KEY.key_hash,
            options=TranscriptionOptions(task=Task.TRANSCRIBE, model="whisper-large-v3"),
            status=JobStatus.QUEUED,
            source_uri=f"s3://{BUCKET}/{object_key}",
            open_until=open_until,
        )
        self.jobs.create(self.job)

    @property
    def job_now(self) -> Job:
        job = self.jobs.get(self.job.job_id)
        assert job is not None
        return job

    def balance(self) -> int:
        return self.credits.balance(KEY.key_hash)

    def kinds(self) -> list[tuple[str, str]]:
        return [(entry.request_id, entry.kind.value) for entry in self.credits.entries]
