"""S3 drops into inbox/ become transcribed, stored and charged jobs (the worker, from the S3 event)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from infery.domain.jobs import JobStatus

from tests.support.jobs import (
    SEEDED,
    assert_charged_once,
    assert_no_batch_failures,
    assert_transcript,
    event_for,
    hand_built_message,
    s3_test_event,
)


def test_the_s3_test_event_is_acknowledged_and_starts_nothing(worker, store, accounts, audio_resources):
    api_key, item = accounts.new_key(SEEDED)
    assert_no_batch_failures(worker.deliver([s3_test_event(audio_resources["bucket"])]))
    assert store.jobs_of(item) == []
    accounts.assert_untouched(item, SEEDED)


def test_an_inbox_drop_becomes_a_transcribed_job_charged_once(
    load_worker, model_proxy, store, jobs_queue, accounts, short_wav
):
    inferences: list[dict[str, Any]] = []
    worker = load_worker(model_proxy(lambda body: inferences.append(json.loads(body))))
    api_key, item = accounts.new_key(SEEDED)
    name = "weekly sync 2026-11-24.wav"  # S3 events URL-encode the key: the space arrives as '+'
    object_key = store.drop(item, name, short_wav)
    messages = event_for(jobs_queue.drain(), object_key)

    response = worker.deliver(messages)

    assert_no_batch_failures(response)
    job = store.only_job(item)
    assert job.status is JobStatus.SUCCEEDED, job
    assert job.error is None and job.progress == 1.0 and job.attempts == 1
    assert job.filename == name and job.source_uri == f"s3://{store.bucket}/{object_key}"
    assert job.job_id.startswith("job_")
    assert store.results_of(item) == [f"results/{item.key_id}/{job.job_id}.json"]
    stored_result = json.loads(store.s3.get_object(Bucket=store.bucket, Key=job.result_key)["Body"].read())
    assert_transcript(stored_result["text"])
    assert 1.5 < stored_result["duration"] < 6 and job.audio_seconds == pytest.approx(stored_result["duration"])
    billed = assert_charged_once(accounts, store, item, job.job_id)
    assert job.credits_used == billed == 1  # a 3 s clip: one started 5 s
    assert accounts.request_entries(item, job.job_id)["settle"]["model"] == job.options.model
    # the model read the file from the bucket itself: a 25 MB file would not fit SageMaker's 6 MB request body
    assert len(inferences) == 1
    assert inferences[0]["audio_s3_uri"] == job.source_uri and inferences[0].get("audio") is None


def test_an_inbox_drop_whose_name_has_a_plus_is_transcribed(worker, store, jobs_queue, accounts, short_wav):
    api_key, item = accounts.new_key(SEEDED)
    object_key = store.drop(item, "q1+q2 review.wav", short_wav)
    assert_no_batch_failures(worker.deliver(event_for(jobs_queue.drain(), object_key)))
    job = store.only_job(item)
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert_charged_once(accounts, store, item, job.job_id)


def test_objects_outside_a_known_keys_prefix_start_nothing(worker, store, jobs_queue, accounts, short_wav):
    api_key, item = accounts.new_key(SEEDED)
    ledger_before = accounts.ledger(item)
    strays = [
        f"inbox/key_{'0' * 16}/nobody's.wav",  # a well-formed key id that no key has
        f"inbox/not-a-key-id/{item.key_id}.wav",
        f"inbox/{item.key_id}",  # the prefix itself, no file name
        f"elsewhere/{item.key_id}/file.wav",
    ]  # outside uploads/ and inbox/: S3 sends no event; the worker ignores
    for key in strays:
        store.s3.put_object(Bucket=store.bucket, Key=key, Body=short_wav)
    messages = jobs_queue.drain()
    assert len(messages) == 3  # the template's notification filters on uploads/ and inbox/
    hand_made = hand_built_message(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": store.bucket},
                        "object": {"key": strays[3], "size": len(short_wav), "eTag": "x"},
                    },
                }
            ]
        }
    )
    assert_no_batch_failures(worker.deliver([*messages, hand_made]))
    assert store.jobs_of(item) == []
    assert accounts.ledger(item) == ledger_before
    assert store.results_of(item) == []


def test_a_message_that_is_not_json_fails_alone_and_the_rest_of_the_batch_is_done(worker, audio_resources):
    garbage = hand_built_message("this is not an S3 event")
    test_event = s3_test_event(audio_resources["bucket"])
    response = worker.deliver([garbage, test_event])
    assert response == {"batchItemFailures": [{"itemIdentifier": garbage["MessageId"]}]}  # it goes to the DLQ


def test_a_job_message_for_an_unknown_job_is_acknowledged(worker):
    assert_no_batch_failures(worker.deliver([hand_built_message({"job_id": "job_" + "0" * 32})]))


def test_an_inbox_drop_asks_for_its_options_in_its_s3_metadata(worker, store, jobs_queue, accounts, short_wav):
    api_key, item = accounts.new_key(SEEDED)
    object_key = f"inbox/{item.key_id}/with-options.wav"
    store.s3.put_object(
        Bucket=store.bucket,
        Key=object_key,
        Body=short_wav,
        Metadata={"infery-response-format": "verbose_json", "infery-timestamp-granularities": "word", "mtime": "1"},
    )
    assert_no_batch_failures(worker.deliver(event_for(jobs_queue.drain(), object_key)))
    job = store.only_job(item)
    assert job.status is JobStatus.SUCCEEDED, job
    assert job.options.response_format.value == "verbose_json" and job.options.timestamp_granularities == ["word"]
    stored_result = json.loads(store.s3.get_object(Bucket=store.bucket, Key=job.result_key)["Body"].read())
    assert stored_result["words"], stored_result  # the words were asked of the model


def test_an_inbox_drop_with_an_option_it_cannot_take_fails_listed_and_uncharged(
    worker, store, jobs_queue, accounts, short_wav
):
    api_key, item = accounts.new_key(SEEDED)
    object_key = f"inbox/{item.key_id}/typo.wav"
    store.s3.put_object(Bucket=store.bucket, Key=object_key, Body=short_wav, Metadata={"infery-response-fromat": "srt"})
    assert_no_batch_failures(worker.deliver(event_for(jobs_queue.drain(), object_key)))
    job = store.only_job(item)
    assert job.status is JobStatus.FAILED and job.error is not None
    assert job.error.code == "invalid_inbox_options" and "infery-response-fromat" in job.error.message
    accounts.assert_untouched(item, SEEDED)
