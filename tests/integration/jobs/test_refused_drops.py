"""Poisoned and refused drops: the job fails with a clear code, nothing is charged, nothing goes to the DLQ."""

from __future__ import annotations

import pytest
from infery.domain.jobs import JobStatus

from tests.support.jobs import (
    CORRUPT_WAV,
    NOT_AUDIO,
    SEEDED,
    assert_no_batch_failures,
    drop_and_receive,
)


@pytest.mark.parametrize(
    ("audio", "code"),
    [
        pytest.param(NOT_AUDIO, "unsupported_audio_format", id="text-file"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + bytes(2048), "unsupported_audio_format", id="png-image"),
        pytest.param(b"", "empty_file", id="empty-object"),
        pytest.param(CORRUPT_WAV, "undecodable_audio", id="wav-header-then-garbage"),
    ],
)
def test_a_poisoned_drop_fails_its_job_clearly_and_charges_nothing(worker, store, jobs_queue, accounts, audio, code):
    api_key, item = accounts.new_key(SEEDED)
    messages = drop_and_receive(store, jobs_queue, item, "poison.wav", audio)

    for receive_count in (1, 2):  # the same event again must not retry, re-fail or charge anything
        assert_no_batch_failures(worker.deliver(messages, receive_count=receive_count))
        job = store.only_job(item)
        assert job.status is JobStatus.FAILED
        assert job.error is not None and job.error.code == code, job.error
        assert job.error.message and "Traceback" not in job.error.message
        assert job.attempts == 1 and job.result_key is None and job.credits_used is None
    assert store.results_of(item) == []
    accounts.assert_untouched(item, SEEDED)
    charges = [entry for entry in accounts.ledger(item) if entry["kind"] != "topup"]
    if code == "undecodable_audio":  # the model had to try: its reservation came back whole
        assert {entry["kind"] for entry in charges} == {"reserve", "refund"}
    else:  # refused before any reservation
        assert charges == []


def test_a_drop_over_the_job_limit_fails_as_too_large_and_charges_nothing(
    load_worker, fake_runtime, store, jobs_queue, accounts, short_wav
):
    url, model = fake_runtime(200, {"never": "called"})
    worker = load_worker(url, MAX_UPLOAD_BYTES=str(len(short_wav) // 4), MAX_JOB_BYTES=str(len(short_wav) - 1))
    api_key, item = accounts.new_key(SEEDED)
    assert_no_batch_failures(worker.deliver(drop_and_receive(store, jobs_queue, item, "big.wav", short_wav)))
    job = store.only_job(item)
    assert job.status is JobStatus.FAILED and job.error is not None and job.error.code == "audio_too_large"
    assert model.calls == 0
    accounts.assert_untouched(item, SEEDED)


@pytest.mark.parametrize(
    ("credits", "policy", "code"),
    [
        pytest.param(0, {}, "insufficient_credits", id="no-credits"),
        pytest.param(SEEDED, {"allowed_models": ["some-other-model"]}, "model_not_allowed", id="model-not-allowed"),
    ],
)
def test_a_drop_the_key_may_not_pay_for_fails_and_charges_nothing(
    load_worker, fake_runtime, store, jobs_queue, accounts, short_wav, credits, policy, code
):
    url, model = fake_runtime(200, {"never": "called"})
    worker = load_worker(url)
    api_key, item = accounts.new_key(credits, **policy)
    assert_no_batch_failures(worker.deliver(drop_and_receive(store, jobs_queue, item, "a.wav", short_wav)))
    job = store.only_job(item)
    assert job.status is JobStatus.FAILED and job.error is not None and job.error.code == code, job.error
    assert model.calls == 0
    accounts.assert_untouched(item, credits)


def test_a_revoked_keys_drop_fails_and_charges_nothing(
    load_worker, fake_runtime, store, jobs_queue, accounts, short_wav
):
    url, model = fake_runtime(200, {"never": "called"})
    worker = load_worker(url)
    api_key, item = accounts.new_key(SEEDED)
    accounts.revoke(item)
    assert_no_batch_failures(worker.deliver(drop_and_receive(store, jobs_queue, item, "a.wav", short_wav)))
    for job in store.jobs_of(item):  # refusing to create the job at all would be as good
        assert job.status is JobStatus.FAILED and job.error is not None and job.error.code == "revoked_api_key"
    assert model.calls == 0
    accounts.assert_untouched(item, SEEDED)


def test_an_expired_keys_drop_is_not_transcribed_or_charged(worker, store, jobs_queue, accounts, short_wav):
    api_key, item = accounts.new_key(SEEDED, expires_at="2020-01-01T00:00:00Z")
    assert_no_batch_failures(worker.deliver(drop_and_receive(store, jobs_queue, item, "a.wav", short_wav)))
    for job in store.jobs_of(item):
        assert job.status is JobStatus.FAILED and job.error is not None and job.error.code == "expired_api_key"
    accounts.assert_untouched(item, SEEDED)
