"""The job use case (infery.job_runner.JobRunner) through in-memory fakes: started, settled or refunded, retried,
and charged exactly once whatever is delivered twice, late or out of order. No AWS, no model server."""

from __future__ import annotations

import io
import struct
import wave

import pytest
from infery.credits import LedgerKind
from infery.errors import InvalidRequest, ModelFailed, ModelUnavailable
from infery.inference import Task
from infery.job_runner import JobRunner, ResubmitJob, RetryLater
from infery.job_views import JobPresenter
from infery.jobs import Job, JobStatus, new_job
from infery.keys import ApiKeyItem, now_iso
from infery.service import TranscriptionService
from infery.settings import Settings
from infery.transcription_request import TranscriptionOptions

from tests.unit.builders import inference_result, segment
from tests.unit.fakes import FakeAsyncEndpoint, FakeAudio, FakeCredits, FakeJobs, FakeKeys

BUCKET = "audio-bucket"
KEY = ApiKeyItem(key_hash="h" * 64, key_id="key_0123456789abcdef", name="tests", credits=100, created_at=now_iso())
HOLD_SECONDS = 9000


def wav(seconds: float, sample_rate: int = 16_000) -> bytes:
    output = io.BytesIO()
    with wave.open(output, "wb") as target:
        target.setnchannels(1)
        target.setsampwidth(2)
        target.setframerate(sample_rate)
        target.writeframes(bytes(int(seconds * sample_rate) * 2))
    return output.getvalue()


def one_hertz_wav() -> bytes:
    data = 4000
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 1, 2, 2, 16)
            + b"data" + struct.pack("<I", data) + bytes(data))


class World:
    def __init__(self, balance: int = 100, audio: bytes | None = None) -> None:
        settings = Settings(keys_table_name="keys", ledger_table_name="ledger", reservations_table_name="holds",
                            rate_limits_table_name="limits", idempotency_table_name="idem",
                            sagemaker_endpoint_name="rt", audio_bucket_name=BUCKET, jobs_table_name="jobs",
                            jobs_queue_url="https://sqs/jobs", sagemaker_async_endpoint_name="async")
        self.credits = FakeCredits(balances={KEY.key_hash: balance})
        self.keys = FakeKeys()
        self.keys.add(KEY.model_copy(update={"credits": balance}))
        self.jobs = FakeJobs()
        self.audio = FakeAudio()
        self.endpoint = FakeAsyncEndpoint()
        self.service = TranscriptionService(settings, self.keys, self.credits, endpoint=None)  # type: ignore[arg-type]
        self.runner = JobRunner(self.service, self.jobs, self.audio, self.keys, endpoint=self.endpoint,
                                presenter=JobPresenter(self.audio), lease_seconds=360, hold_seconds=HOLD_SECONDS,
                                max_attempts=3)
        object_key = f"uploads/{KEY.key_id}/upl_0123456789abcdef0123456789abcdef"
        self.audio.objects[object_key] = wav(12.0) if audio is None else audio
        self.job = new_job(job_id="job_0123456789abcdef0123456789abcdef", key_id=KEY.key_id, key_hash=KEY.key_hash,
                           options=TranscriptionOptions(task=Task.TRANSCRIBE, model="whisper-large-v3"),
                           status=JobStatus.QUEUED, source_uri=f"s3://{BUCKET}/{object_key}")
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


RESULT_12S = inference_result("Hello there.", [segment(0, 0.0, 12.0, " Hello there.")], duration=12.0)


def test_a_job_is_reserved_submitted_then_settled_to_its_real_duration_once():
    world = World()
    started = world.runner.run(world.job.job_id, final_attempt=False)
    assert started is not None and started.status is JobStatus.RUNNING
    assert started.inference_id == world.job.job_id and started.lease_until >= HOLD_SECONDS
    [(inference_id, request)] = world.endpoint.submitted
    assert request.audio_s3_uri and request.audio_s3_etag == "etag-1"  # the version that was checked
    assert request.max_audio_seconds == pytest.approx(12.0 * 1.02 + 0.5)  # no more than the reservation pays for
    assert world.credits.open[inference_id].hold_until_epoch is not None  # the reconciler leaves it alone
    assert world.balance() == 100 - 3  # 12.74 s reserved: 3 credits

    world.endpoint.outcomes[inference_id] = RESULT_12S
    finished = world.runner.complete(world.endpoint.notification(inference_id))
    assert finished is not None and finished.status is JobStatus.SUCCEEDED and finished.credits_used == 3
    assert world.balance() == 97 and world.credits.charged(KEY.key_id) == 3
    assert world.kinds() == [(inference_id, "reserve"), (inference_id, "settle")]
    assert world.audio.results[finished.result_key or ""] == RESULT_12S


def test_a_repeated_notification_changes_nothing():
    world = World()
    world.runner.run(world.job.job_id, final_attempt=False)
    world.endpoint.outcomes[world.job.job_id] = RESULT_12S
    notification = world.endpoint.notification(world.job.job_id)
    world.runner.complete(notification)
    assert world.runner.complete(notification) is None
    assert world.credits.charged(KEY.key_id) == 3 and len(world.credits.entries) == 2


def test_a_transient_model_failure_refunds_and_resubmits_and_the_next_attempt_is_charged_once():
    world = World()
    world.runner.run(world.job.job_id, final_attempt=False)
    world.endpoint.outcomes[world.job.job_id] = ModelFailed("The model failed; nothing was charged.")
    with pytest.raises(ResubmitJob):
        world.runner.complete(world.endpoint.notification(world.job.job_id, succeeded=False))
    assert world.job_now.status is JobStatus.QUEUED and world.balance() == 100

    retried = world.runner.run(world.job.job_id, final_attempt=False)
    assert retried is not None
    second = f"{world.job.job_id}.2"  # a request id is reserved once: the new attempt has its own
    assert retried.inference_id == second
    world.endpoint.outcomes[second] = RESULT_12S
    world.runner.complete(world.endpoint.notification(second))
    assert world.job_now.status is JobStatus.SUCCEEDED
    assert world.credits.charged(KEY.key_id) == 3
    assert world.kinds() == [(world.job.job_id, "reserve"), (world.job.job_id, "refund"),
                             (second, "reserve"), (second, "settle")]


def test_a_late_notification_of_a_given_up_attempt_is_ignored():
    world = World()
    world.runner.run(world.job.job_id, final_attempt=False)
    world.endpoint.outcomes[world.job.job_id] = ModelFailed("boom")
    with pytest.raises(ResubmitJob):
        world.runner.complete(world.endpoint.notification(world.job.job_id, succeeded=False))
    world.runner.run(world.job.job_id, final_attempt=False)
    world.endpoint.outcomes[world.job.job_id] = RESULT_12S  # attempt 1 "succeeds" after all, too late
    assert world.runner.complete(world.endpoint.notification(world.job.job_id)) is None
    assert world.credits.charged(KEY.key_id) == 3  # only attempt 2's reservation, still open
    assert world.job_now.status is JobStatus.RUNNING


def test_on_the_last_attempt_a_transient_failure_fails_the_job_and_refunds_it():
    world = World()
    for attempt in (1, 2, 3):
        world.runner.run(world.job.job_id, final_attempt=False)
        inference_id = world.job_now.inference_id or ""
        world.endpoint.outcomes[inference_id] = ModelFailed("The model failed while transcribing; nothing was charged.")
        if attempt < 3:
            with pytest.raises(ResubmitJob):
                world.runner.complete(world.endpoint.notification(inference_id, succeeded=False))
        else:
            failed = world.runner.complete(world.endpoint.notification(inference_id, succeeded=False))
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error is not None and "tried 3 times" in failed.error.message
    assert world.balance() == 100 and world.credits.charged(KEY.key_id) == 0


def test_a_clients_audio_problem_fails_the_job_at_once_and_refunds_it():
    world = World()
    world.runner.run(world.job.job_id, final_attempt=False)
    world.endpoint.outcomes[world.job.job_id] = InvalidRequest("The audio is longer than its header declares.",
                                                               code="audio_longer_than_declared")
    failed = world.runner.complete(world.endpoint.notification(world.job.job_id, succeeded=False))
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error is not None and failed.error.code == "audio_longer_than_declared"
    assert "tried" not in failed.error.message  # not retried: retrying would fail the same way
    assert world.balance() == 100


def test_a_result_that_cannot_be_stored_is_refunded_not_charged():
    world = World()
    world.runner.run(world.job.job_id, final_attempt=False)
    world.endpoint.outcomes[world.job.job_id] = RESULT_12S
    world.audio.fail_put_result = True
    with pytest.raises(ResubmitJob):
        world.runner.complete(world.endpoint.notification(world.job.job_id))
    assert world.balance() == 100 and world.kinds()[-1] == (world.job.job_id, "refund")


def test_a_crash_after_the_settle_finishes_the_job_on_redelivery_without_charging_again(monkeypatch):
    world = World()
    world.runner.run(world.job.job_id, final_attempt=False)
    world.endpoint.outcomes[world.job.job_id] = RESULT_12S
    real_succeed = world.jobs.succeed

    def crash(*_: object, **__: object) -> Job:
        raise ConnectionError("DynamoDB went away after the settle")

    monkeypatch.setattr(world.jobs, "succeed", crash)
    with pytest.raises(ConnectionError):
        world.runner.complete(world.endpoint.notification(world.job.job_id))
    assert world.balance() == 97  # the settle happened
    monkeypatch.setattr(world.jobs, "succeed", real_succeed)

    finished = world.runner.complete(world.endpoint.notification(world.job.job_id))  # SQS delivers it again
    assert finished is not None and finished.status is JobStatus.SUCCEEDED and finished.credits_used == 3
    assert world.balance() == 97
    assert [kind for _, kind in world.kinds()] == ["reserve", "settle"]


def test_an_endpoint_that_refuses_the_submission_refunds_and_retries_later_then_fails_on_the_last_delivery():
    world = World()
    world.endpoint.refuse_submit = ModelUnavailable("The model endpoint is not available right now.")
    with pytest.raises(RetryLater):
        world.runner.run(world.job.job_id, final_attempt=False)
    assert world.balance() == 100 and world.job_now.status is JobStatus.QUEUED
    failed = world.runner.run(world.job.job_id, final_attempt=True)
    assert failed is not None and failed.status is JobStatus.FAILED and world.balance() == 100


def test_a_key_without_the_credits_fails_the_job_before_anything_is_submitted():
    world = World(balance=2)  # 12 s needs 3
    failed = world.runner.run(world.job.job_id, final_attempt=False)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error is not None and failed.error.code == "insufficient_credits"
    assert world.endpoint.submitted == [] and world.credits.entries == []


def test_a_duration_bomb_fails_the_job_before_any_credit_is_reserved():
    world = World(audio=one_hertz_wav())
    failed = world.runner.run(world.job.job_id, final_attempt=False)
    assert failed is not None and failed.error is not None and failed.error.code == "sample_rate_too_low"
    assert world.endpoint.submitted == [] and world.credits.entries == []


def test_a_job_claimed_by_another_worker_is_left_alone():
    world = World()
    world.runner.run(world.job.job_id, final_attempt=False)
    assert world.runner.run(world.job.job_id, final_attempt=False) is None  # a duplicate job message
    assert len(world.endpoint.submitted) == 1
    assert [kind for _, kind in world.kinds()] == [LedgerKind.RESERVE.value]
