"""The job use case (infery.usecases.jobs.JobService) through in-memory fakes: created (from an upload, a job request,
an inbox drop), started, settled or refunded, retried through the queue, and charged exactly once whatever is
delivered twice, late or out of order. No AWS, no model server."""

from __future__ import annotations

import json
import time

import pytest
from infery.domain.clock import now_iso
from infery.domain.errors import (
    InsufficientCredits,
    InvalidRequest,
    ModelFailed,
    ModelUnavailable,
    NotFound,
    TooMuchOpenWork,
)
from infery.domain.ids import job_id_for_object, job_id_for_upload
from infery.domain.inference import Task
from infery.domain.jobs import Job, JobError, JobStatus
from infery.domain.keys import ApiKeyItem
from infery.domain.ledger import LedgerKind
from infery.domain.stored_audio import StoredObject
from infery.domain.transcription import (
    JobOptions,
    LoadedAudio,
    TranscriptionRequest,
    UploadRequest,
)
from infery.usecases.jobs import RetryLater

from tests.support.job_world import BUCKET, HOLD_SECONDS, KEY, RESULT_12S, World, wav
from tests.support.speech import one_hertz_wav


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
    resubmitted = world.runner.complete(world.endpoint.notification(world.job.job_id, succeeded=False))
    assert resubmitted is not None and resubmitted.status is JobStatus.QUEUED and world.balance() == 100
    assert world.queue.sent == [world.job.job_id]  # a new job message starts the next attempt

    retried = world.runner.run(world.job.job_id, final_attempt=False)
    assert retried is not None
    second = f"{world.job.job_id}.2"  # a request id is reserved once: the new attempt has its own
    assert retried.inference_id == second
    world.endpoint.outcomes[second] = RESULT_12S
    world.runner.complete(world.endpoint.notification(second))
    assert world.job_now.status is JobStatus.SUCCEEDED
    assert world.credits.charged(KEY.key_id) == 3
    assert world.kinds() == [
        (world.job.job_id, "reserve"),
        (world.job.job_id, "refund"),
        (second, "reserve"),
        (second, "settle"),
    ]


def test_a_late_notification_of_a_given_up_attempt_is_ignored():
    world = World()
    world.runner.run(world.job.job_id, final_attempt=False)
    world.endpoint.outcomes[world.job.job_id] = ModelFailed("boom")
    world.runner.complete(world.endpoint.notification(world.job.job_id, succeeded=False))
    assert world.queue.sent == [world.job.job_id]
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
        outcome = world.runner.complete(world.endpoint.notification(inference_id, succeeded=False))
        assert outcome is not None and outcome.status is (JobStatus.QUEUED if attempt < 3 else JobStatus.FAILED)
        failed = outcome
    assert len(world.queue.sent) == 2  # resubmitted after attempts 1 and 2, not after the last
    assert failed.error is not None and "tried 3 times" in failed.error.message
    assert world.balance() == 100 and world.credits.charged(KEY.key_id) == 0


def test_a_clients_audio_problem_fails_the_job_at_once_and_refunds_it():
    world = World()
    world.runner.run(world.job.job_id, final_attempt=False)
    world.endpoint.outcomes[world.job.job_id] = InvalidRequest(
        "The audio is longer than its header declares.", code="audio_longer_than_declared"
    )
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
    resubmitted = world.runner.complete(world.endpoint.notification(world.job.job_id))
    assert resubmitted is not None and resubmitted.status is JobStatus.QUEUED and world.queue.sent == [world.job.job_id]
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


# --- creation: the three doors a job comes in by -----------------------------------------------------------------

OTHER = ApiKeyItem(key_hash="o" * 64, key_id="key_fedcba9876543210", name="other", credits=100, created_at=now_iso())


def test_an_upload_with_a_job_waits_for_its_file_and_its_arrival_runs_it_to_a_signed_webhook():
    # Given a key that asks for an upload whose job reports to a webhook
    world = World()
    upload = UploadRequest(
        job=JobOptions(task=Task.TRANSCRIBE, model="whisper-1", webhook_url="https://hooks.example/infery"),
        filename="talk.wav",
    )
    created = world.runner.create_upload(KEY, upload)
    # Then a job waits for the file, under the upload's own id, with a secret of its own
    assert created.job is not None and created.job.job_id == job_id_for_upload(created.upload_id)
    assert created.job.status is JobStatus.AWAITING_UPLOAD and created.job.webhook_secret
    assert created.presigned_post["fields"]["key"] == f"uploads/{KEY.key_id}/{created.upload_id}"
    assert world.queue.sent == []  # nothing runs before the file is there
    # When the file arrives
    world.audio.put_upload(KEY.key_id, created.upload_id, wav(12.0))
    arrived = StoredObject(
        BUCKET, f"uploads/{KEY.key_id}/{created.upload_id}", KEY.key_id, "uploads", created.upload_id, 0, "etag-1"
    )
    job_id = world.runner.job_for_object(arrived)
    assert job_id == created.job.job_id
    started = world.runner.run(job_id, final_attempt=False)
    assert started is not None and started.status is JobStatus.RUNNING
    world.endpoint.outcomes[job_id] = RESULT_12S
    finished = world.runner.complete(world.endpoint.notification(job_id))
    # Then it is charged once and its webhook is told, signed with the job's secret
    assert finished is not None and finished.status is JobStatus.SUCCEEDED and world.credits.charged(KEY.key_id) == 3
    [(url, body, secret)] = world.webhooks.sent
    assert url == "https://hooks.example/infery" and secret == created.job.webhook_secret
    assert json.loads(body)["status"] == "succeeded" and json.loads(body)["id"] == job_id


def test_an_upload_without_a_job_starts_nothing_when_it_arrives():
    world = World()
    created = world.runner.create_upload(
        KEY, UploadRequest(start_job=False, job=JobOptions(task=Task.TRANSCRIBE, model="whisper-1"))
    )
    assert created.job is None
    arrived = StoredObject(
        BUCKET, f"uploads/{KEY.key_id}/{created.upload_id}", KEY.key_id, "uploads", created.upload_id, 0
    )
    assert world.runner.job_for_object(arrived) is None


def test_a_job_with_its_audio_stores_it_and_is_queued_once():
    world = World()
    request = TranscriptionRequest(
        task=Task.TRANSCRIBE, model="whisper-1", audio=LoadedAudio.inline(wav(12.0)), filename="meeting.wav"
    )
    job = world.runner.create_job(KEY, request)
    assert job.status is JobStatus.QUEUED and world.queue.sent == [job.job_id]
    assert job.source_uri is not None and job.source_uri.startswith(f"s3://{BUCKET}/uploads/{KEY.key_id}/upl_")
    assert world.balance() == 100  # charged when it runs, not before


def test_a_job_may_name_a_model_alias_and_runs_on_the_deployed_model():
    world = World()
    request = TranscriptionRequest(task=Task.TRANSCRIBE, model="gpt-4o-transcribe", audio=LoadedAudio.inline(wav(12.0)))
    job = world.runner.create_job(KEY, request)
    assert job.options.model == "gpt-4o-transcribe"  # as the client named it
    world.runner.run(job.job_id, final_attempt=False)
    assert [reservation.model for reservation in world.credits.open.values()] == ["whisper-large-v3"]


def test_admission_takes_a_model_alias_and_refuses_an_unknown_name():
    world = World()
    world.runner.admit(KEY, "gpt-4o-mini-transcribe", LoadedAudio.inline(wav(2.0)))
    with pytest.raises(InvalidRequest) as refused:
        world.runner.admit(KEY, "gpt-5-transcribe", LoadedAudio.inline(wav(2.0)))
    assert (refused.value.param, refused.value.code) == ("model", "model_not_found")


def test_a_job_naming_an_upload_that_has_not_arrived_is_404_and_creates_nothing():
    world = World()
    request = TranscriptionRequest(task=Task.TRANSCRIBE, model="whisper-1", upload_id="upl_" + "a" * 32)
    with pytest.raises(NotFound):
        world.runner.create_job(KEY, request)
    assert world.queue.sent == [] and list(world.jobs.jobs) == [world.job.job_id]


def test_an_inbox_drop_becomes_one_job_per_version_of_the_file():
    world = World()
    dropped = StoredObject(BUCKET, f"inbox/{KEY.key_id}/call.wav", KEY.key_id, "inbox", "call.wav", 10, "v1")
    job_id = world.runner.job_for_object(dropped)
    assert job_id == job_id_for_object(BUCKET, dropped.key, "v1")
    assert world.runner.job_for_object(dropped) == job_id  # delivered twice: the same job
    assert world.jobs.jobs[job_id].options.model == "whisper-large-v3"  # the deployment's default model
    rewritten = StoredObject(BUCKET, dropped.key, KEY.key_id, "inbox", "call.wav", 10, "v2")
    assert world.runner.job_for_object(rewritten) != job_id


def test_a_drop_under_an_unknown_keys_prefix_starts_nothing():
    world = World()
    dropped = StoredObject(BUCKET, f"inbox/{OTHER.key_id}/call.wav", OTHER.key_id, "inbox", "call.wav", 10, "v1")
    assert world.runner.job_for_object(dropped) is None
    assert list(world.jobs.jobs) == [world.job.job_id]


def test_admission_refuses_what_could_only_fail_in_the_worker():
    world = World()
    with pytest.raises(InvalidRequest, match="does not exist"):
        world.runner.admit(KEY, "whisper-9")
    with pytest.raises(InsufficientCredits):
        world.runner.admit(KEY.model_copy(update={"credits": 0}), "whisper-1")
    with pytest.raises(InvalidRequest) as refused:
        world.runner.admit(KEY, "whisper-1", LoadedAudio.inline(one_hertz_wav()))
    assert refused.value.code == "sample_rate_too_low"
    world.runner.admit(KEY, "whisper-1", LoadedAudio.inline(wav(1.0)))


def test_a_sharded_key_read_from_an_empty_shard_is_admitted_on_its_total_and_refused_with_it():
    world = World(balance=0)
    sharded = KEY.model_copy(update={"credit_shards": 2, "credits": 0, "shard": 1})
    world.credits.more_shards[KEY.key_hash] = [0]
    with pytest.raises(InsufficientCredits) as refused:
        world.runner.admit(sharded, "whisper-1")
    assert refused.value.headers == {"x-infery-credits-balance": "0"}
    world.credits.balances[KEY.key_hash] = 5  # on the other shard
    world.runner.admit(sharded, "whisper-1")


@pytest.mark.parametrize("job_id", ["job_0123456789abcdef0123456789abcdef", "job_x", "job_" + "0" * 5000])
def test_a_job_is_seen_only_by_its_own_key(job_id):
    world = World()
    with pytest.raises(NotFound) as refused:
        world.runner.own_job(OTHER, job_id)
    assert refused.value.code == "job_not_found" and len(refused.value.message) < 80
    if job_id == world.job.job_id:
        assert world.runner.own_job(KEY, job_id) == world.job_now
        assert world.runner.list_jobs(KEY, 10) == ([world.job_now], False)
        assert world.runner.list_jobs(OTHER, 10) == ([], False)


def test_a_later_upload_to_a_used_slot_starts_nothing():
    world = World()
    created = world.runner.create_upload(KEY, UploadRequest(job=JobOptions(task=Task.TRANSCRIBE, model="whisper-1")))
    world.audio.put_upload(KEY.key_id, created.upload_id, wav(3.0))
    object_key = f"uploads/{KEY.key_id}/{created.upload_id}"
    later = StoredObject(BUCKET, object_key, KEY.key_id, "uploads", created.upload_id, 0, "etag-2")
    assert world.runner.job_for_object(later) is None
    first = StoredObject(BUCKET, object_key, KEY.key_id, "uploads", created.upload_id, 0, "etag-1")
    assert created.job is not None and world.runner.job_for_object(first) == created.job.job_id


def test_a_key_holds_at_most_its_cap_of_open_uploads_and_jobs():
    world = World()
    world.runner.max_open_work = 2
    upload = UploadRequest(start_job=False, job=JobOptions(task=Task.TRANSCRIBE, model="whisper-1"))
    world.runner.admit(KEY, "whisper-1")
    world.runner.create_upload(KEY, upload)
    world.runner.admit(KEY, "whisper-1")
    job = world.runner.create_job(
        KEY, TranscriptionRequest(task=Task.TRANSCRIBE, model="whisper-1", audio=LoadedAudio.inline(wav(2.0)))
    )
    with pytest.raises(TooMuchOpenWork) as refused:
        world.runner.admit(KEY, "whisper-1")
    assert refused.value.status_code == 429 and refused.value.code == "too_many_open_jobs"
    world.runner.admit(OTHER, "whisper-1")  # another key's cap is its own
    # a finished job frees its place, and so does an upload slot whose presigned POST expired
    world.jobs.fail(job.job_id, JobError(code="x", message="x"))
    world.runner.admit(KEY, "whisper-1")
    world.jobs.now = lambda: int(time.time()) + world.runner.upload_expiry_seconds + 61
    world.runner.create_job(
        KEY, TranscriptionRequest(task=Task.TRANSCRIBE, model="whisper-1", audio=LoadedAudio.inline(wav(2.0)))
    )
    world.runner.admit(KEY, "whisper-1")


def test_a_finished_jobs_webhook_is_rendered_from_its_result_in_hand_and_a_get_reads_it_from_storage(monkeypatch):
    world = World()
    request = TranscriptionRequest(
        task=Task.TRANSCRIBE,
        model="whisper-1",
        audio=LoadedAudio.inline(wav(12.0)),
        webhook_url="https://hooks.example/infery",
    )
    job = world.runner.create_job(KEY, request)
    world.runner.run(job.job_id, final_attempt=False)
    world.endpoint.outcomes[job.job_id] = RESULT_12S
    reads: list[str] = []
    stored = world.audio.load_result
    monkeypatch.setattr(world.audio, "load_result", lambda result_key: reads.append(result_key) or stored(result_key))
    finished = world.runner.complete(world.endpoint.notification(job.job_id))
    assert finished is not None and finished.result_key
    [(_, body, _)] = world.webhooks.sent
    assert json.loads(body)["result"] == {"text": "Hello there.", "credits_used": 3}
    assert reads == []  # the worker that just stored the result renders it, without reading it back
    assert world.runner.presenter.view(finished)["result"] == json.loads(body)["result"]
    assert reads == [finished.result_key]  # a GET of the finished job reads it from storage
