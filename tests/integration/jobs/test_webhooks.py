"""Signed webhooks: one per finished job, retried with backoff, every attempt recorded."""

from __future__ import annotations

import json

from infery.adapters import webhook_sender as webhooks
from infery.domain import webhook_signature

from local_stack.processes import free_port
from tests.support.api import (
    assert_ok,
)
from tests.support.jobs import (
    CORRUPT_WAV,
    SEEDED,
    assert_charged_once,
    assert_no_batch_failures,
    assert_transcript,
    create_job_with_webhook,
    event_for,
    get_job,
    post_upload,
    upload_to_s3,
)


def test_a_finished_job_posts_one_signed_webhook(
    jobs_api, worker, store, jobs_queue, accounts, short_wav, webhook_receiver, webhook_sleeps
):
    receiver = webhook_receiver()
    api_key, item = accounts.new_key(SEEDED)
    created = create_job_with_webhook(jobs_api, api_key, short_wav, receiver.url, response_format="verbose_json")
    secret = created["webhook_secret"]

    assert_no_batch_failures(worker.deliver(jobs_queue.drain()))  # the job message, and the S3 event of its audio

    assert len(receiver.requests) == 1 and webhook_sleeps == []
    request = receiver.requests[0]
    assert request["path"] == "/hooks/infery?source=it"
    assert request["headers"]["Content-Type"] == "application/json"
    body, signature = request["body"], request["headers"][webhook_signature.SIGNATURE_HEADER]
    assert webhook_signature.verify(body, signature, secret)
    notification = json.loads(body)
    assert notification["id"] == created["id"] and notification["status"] == "succeeded"
    assert_transcript(notification["result"]["text"])
    assert notification["result"]["segments"]  # rendered in the job's response_format, verbose_json
    assert secret not in body.decode() and "key_hash" not in notification and "webhook_secret" not in notification

    # a forged or replayed notification does not verify
    timestamp = int(signature.split(",")[0].removeprefix("t="))
    tampered = body.replace(b'"succeeded"', b'"failed"')
    assert tampered != body and not webhook_signature.verify(tampered, signature, secret)
    assert not webhook_signature.verify(body + b" ", signature, secret)
    assert not webhook_signature.verify(body, signature, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert not webhook_signature.verify(body, signature, "whsec_" + "x" * 43)
    assert not webhook_signature.verify(
        body, signature, secret, now=timestamp + webhook_signature.DEFAULT_TOLERANCE_SECONDS + 1
    )
    assert not webhook_signature.verify(body, signature.split(",")[0], secret)  # no v1
    assert not webhook_signature.verify(body, "garbage", secret)
    forged = webhook_signature.sign(body, secret, timestamp)
    assert not webhook_signature.verify(
        body, forged[:-1] + ("1" if forged[-1] == "0" else "0"), secret
    )  # one digit off

    job = get_job(jobs_api, api_key, created["id"]).json()
    assert [attempt["status_code"] for attempt in job["webhook_attempts"]] == [200]
    assert "webhook_secret" not in job
    assert_charged_once(accounts, store, item, created["id"])


def test_an_uploads_webhook_is_signed_with_the_secret_post_uploads_returned(
    jobs_api, worker, store, jobs_queue, accounts, short_wav, webhook_receiver, webhook_sleeps
):
    receiver = webhook_receiver()
    api_key, item = accounts.new_key(SEEDED)
    upload = post_upload(jobs_api, api_key, {"webhook_url": receiver.url}).json()
    other_secret = post_upload(jobs_api, api_key, {"webhook_url": receiver.url}).json()["webhook_secret"]
    secret = upload["webhook_secret"]
    assert secret.startswith("whsec_") and other_secret != secret  # one secret per job
    assert "webhook_secret" not in get_job(jobs_api, api_key, upload["job_id"]).json()
    upload_to_s3(upload, short_wav)
    assert_no_batch_failures(worker.deliver(event_for(jobs_queue.drain(), upload["fields"]["key"])))

    assert len(receiver.requests) == 1
    body, signature = receiver.requests[0]["body"], receiver.requests[0]["headers"][webhook_signature.SIGNATURE_HEADER]
    assert webhook_signature.verify(body, signature, secret)
    assert not webhook_signature.verify(body, signature, other_secret)
    assert json.loads(body)["id"] == upload["job_id"] and json.loads(body)["status"] == "succeeded"
    assert_charged_once(accounts, store, item, upload["job_id"])


def test_a_webhook_refused_twice_is_retried_with_backoff_and_every_attempt_is_recorded(
    jobs_api, worker, store, jobs_queue, accounts, short_wav, webhook_receiver, webhook_sleeps
):
    receiver = webhook_receiver(500, 500)
    api_key, item = accounts.new_key(SEEDED)
    created = create_job_with_webhook(jobs_api, api_key, short_wav, receiver.url)

    assert_no_batch_failures(worker.deliver(jobs_queue.drain()))

    assert len(receiver.requests) == 3
    assert webhook_sleeps == list(webhooks.RETRY_DELAYS_SECONDS[:2])
    for request in receiver.requests:  # each attempt signed afresh, over the same notification
        assert webhook_signature.verify(
            request["body"], request["headers"][webhook_signature.SIGNATURE_HEADER], created["webhook_secret"]
        )
        assert request["body"] == receiver.requests[0]["body"]
    reply = get_job(jobs_api, api_key, created["id"])
    assert_ok(reply)
    job = reply.json()
    assert job["status"] == "succeeded"
    assert [attempt["status_code"] for attempt in job["webhook_attempts"]] == [500, 500, 200]
    assert all(attempt["at"] for attempt in job["webhook_attempts"])
    assert_charged_once(accounts, store, item, created["id"])


def test_a_webhook_that_never_answers_is_given_up_without_failing_the_job(
    jobs_api, worker, store, jobs_queue, accounts, webhook_sleeps
):
    """A failed job notifies too; an unreachable receiver costs the attempts and nothing else."""
    unreachable = f"http://127.0.0.1:{free_port()}/hook"
    api_key, item = accounts.new_key(SEEDED)
    created = create_job_with_webhook(jobs_api, api_key, CORRUPT_WAV, unreachable)  # a WAV header: accepted

    assert_no_batch_failures(worker.deliver(jobs_queue.drain()))  # not retried through SQS for the webhook

    job = get_job(jobs_api, api_key, created["id"]).json()
    assert job["status"] == "failed" and job["error"]["code"] == "undecodable_audio"
    attempts = job["webhook_attempts"]
    assert len(attempts) == 1 + len(webhooks.RETRY_DELAYS_SECONDS)
    assert all(attempt.get("status_code") is None and attempt["error"] for attempt in attempts)
    assert webhook_sleeps == list(webhooks.RETRY_DELAYS_SECONDS)
    accounts.assert_untouched(item, SEEDED)
