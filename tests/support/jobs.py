"""What the jobs tests share besides fixtures: constants, and helpers that deliver, read and assert."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any
from urllib.parse import quote_plus

import requests
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from tests.support.api import (
    Api,
    Reply,
)
from tests.support.job_stack import (
    JobsQueue,
    Store,
    Worker,
)
from tests.support.speech import word_recall

UPLOADS = "/v1/uploads"
TRANSCRIPTION_JOBS = "/v1/audio/transcriptions/jobs"
SEEDED = 50
SHORT_WORDS = ("quick", "brown", "fox", "lazy", "dog")
BUSY = ({"message": "The endpoint is busy."}, {"x-amzn-ErrorType": "ServiceUnavailable"})
NOT_AUDIO = b"This is a plain text file that someone dropped into the batch folder by mistake.\n" * 40
TEXT_CONTENT_TYPES = {"text": "text/plain", "srt": "text/plain", "vtt": "text/plain"}
# a WAV header, then bytes that are no audio: accepted by the API, refused by the model
CORRUPT_WAV = b"RIFF" + (4000).to_bytes(4, "little") + b"WAVEfmt " + bytes(range(256)) * 16


def hand_built_message(body: dict[str, Any] | str, receive_count: int = 1) -> dict[str, Any]:
    """An SQS message as receive_message returns it, for bodies no S3 event produces."""
    return {
        "MessageId": str(uuid.uuid4()),
        "ReceiptHandle": uuid.uuid4().hex,
        "Body": body if isinstance(body, str) else json.dumps(body),
        "Attributes": {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": "1795600000000"},
    }


def s3_test_event(bucket: str) -> dict[str, Any]:
    """What S3 sends once when a bucket's notification is configured."""
    return hand_built_message(
        {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-25T11:00:00.000Z", "Bucket": bucket}
    )


def event_for(messages: list[dict[str, Any]], object_key: str) -> list[dict[str, Any]]:
    """The S3 event messages (from moto's notification) about ``object_key``; exactly one is expected."""
    found = [
        message
        for message in messages
        if any(
            record["s3"]["object"]["key"] == quote_plus(object_key)
            for record in json.loads(message["Body"]).get("Records", [])
        )
    ]
    assert len(found) == 1, [message["Body"] for message in messages]
    assert json.loads(found[0]["Body"])["Records"][0]["eventName"].startswith("ObjectCreated:")
    return found


def drop_and_receive(store: Store, queue: JobsQueue, item: Any, name: str, audio: bytes) -> list[dict[str, Any]]:
    """Drop a file into the key's inbox/ and take the S3 event message its arrival put on the queue."""
    object_key = store.drop(item, name, audio)
    return event_for(queue.drain(), object_key)


def redelivered(worker: Worker, messages: list[dict[str, Any]], receive_count: int) -> set[str]:
    """The ids of the messages SQS will deliver again: those in batchItemFailures, or all of them when the handler
    raised (powertools raises BatchProcessingError when every record of the batch failed; the event source mapping
    then retries the whole batch)."""
    try:
        response = worker.deliver(messages, receive_count=receive_count)
    except BatchProcessingError:
        return {message["MessageId"] for message in messages}
    return {failure["itemIdentifier"] for failure in response["batchItemFailures"]}


def assert_no_batch_failures(response: dict[str, Any]) -> None:
    assert response == {"batchItemFailures": []}, response


def assert_charged_once(accounts: Any, store: Store, item: Any, request_id: str, seeded: int = SEEDED) -> int:
    """One reserve and one settle, both for ``request_id``, nothing else charged; returns the credits billed."""
    charges = [entry for entry in accounts.ledger(item) if entry["kind"] != "topup"]
    assert {entry["request_id"] for entry in charges} == {request_id}, charges
    entries = accounts.request_entries(item, request_id)
    assert set(entries) == {"reserve", "settle"}, entries
    assert entries["reserve"]["entry_id"] == f"{request_id}#reserve"
    billed = int(entries["settle"]["billed_credits"])
    assert billed >= 1
    assert accounts.balance(item) == seeded - billed
    assert accounts.ledger_sum(item) == seeded - billed
    assert store.open_reservations(item) == []
    return billed


def post_upload(api: Api, api_key: str | None, body: dict[str, Any] | None = None) -> Reply:
    payload = b"" if body is None else json.dumps(body).encode()
    return api.call(
        "POST", UPLOADS, body=payload, content_type="application/json" if body is not None else None, api_key=api_key
    )


def get_job(api: Api, api_key: str | None, job_id: str, *, result: bool = False, query: str = "") -> Reply:
    resource = "/v1/jobs/{job_id}/result" if result else "/v1/jobs/{job_id}"
    path = f"/v1/jobs/{job_id}" + ("/result" if result else "") + query
    return api.call("GET", path, api_key=api_key, resource=resource)


def upload_to_s3(upload: dict[str, Any], audio: bytes, filename: str = "meeting.wav") -> None:
    """What a client does with POST /v1/uploads' answer: a form POST of the fields and the file to upload_url."""
    answer = requests.post(upload["upload_url"], data=upload["fields"], files={"file": (filename, audio)}, timeout=30)
    assert answer.status_code in (200, 201, 204), answer.text


def decoded_policy(upload: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(upload["fields"]["policy"]))


def assert_transcript(text: str) -> None:
    assert word_recall(text, SHORT_WORDS) >= 0.8, text


def create_job_with_webhook(api: Api, api_key: str, audio: bytes, webhook_url: str, **fields: Any) -> dict[str, Any]:
    reply = api.transcribe(api_key, audio, path=TRANSCRIPTION_JOBS, webhook_url=webhook_url, **fields)
    assert reply.status == 202, reply.text
    created = reply.json()
    assert created["status"] == "queued" and created["webhook_secret"].startswith("whsec_")
    return created
