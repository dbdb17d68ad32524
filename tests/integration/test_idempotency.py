"""Idempotency-Key through the real handler: a retried request gets the first answer back and is billed once.

The results live in the template's IdempotencyTable (powertools Idempotency) in moto, scoped per API key.
"""

from __future__ import annotations

import json
import os
import uuid

import boto3
import pytest
from infery.domain.ids import idempotency_id

from tests.support.api import TRANSCRIPTIONS, assert_error, assert_ok
from tests.support.builders import inference_result, multipart_body, segment, toolbelt_multipart_body
from tests.support.model_replies import MODEL_ERROR_500, MODEL_ERROR_HEADERS, model_answer


def idempotency_key() -> list[tuple[str, str]]:
    return [("Idempotency-Key", f"order-{uuid.uuid4()}")]


def sent_twice(api, api_key, audio, headers, **fields):
    """A request and its retry, both with the Idempotency-Key in ``headers``: the two replies."""
    first = api.transcribe(api_key, audio, headers=headers, **fields)
    return first, api.transcribe(api_key, audio, headers=headers, **fields)


def non_topup_entries(accounts, item) -> list[tuple[str, str]]:
    return sorted((entry["request_id"], entry["kind"]) for entry in accounts.ledger(item) if entry["kind"] != "topup")


@pytest.fixture
def model(fake_runtime, load_api):
    """A handler whose endpoint hears 12 s of audio (3 credits) and counts its calls."""
    url, fake = fake_runtime(200, model_answer(12.0))
    return load_api(url), fake


def test_a_retry_with_the_same_key_gets_the_first_answer_and_is_billed_once(model, accounts, wav):
    api, fake = model
    api_key, item = accounts.new_key(10)
    headers = idempotency_key()
    first, retry = sent_twice(api, api_key, wav, headers, response_format="verbose_json")
    assert_ok(first)
    assert_ok(retry)
    assert first.request_id != retry.request_id
    assert first.header("idempotent-replayed") is None
    assert retry.header("idempotent-replayed") == "true"
    assert retry.header("x-infery-original-request-id") == first.request_id
    assert retry.text == first.text and retry.json()["credits_used"] == 3
    assert retry.header("content-type") == first.header("content-type")
    for name in ("x-infery-credits-used", "x-infery-credits-balance"):
        assert retry.header(name) == first.header(name)
    assert fake.calls == 1
    # charged under the (key, Idempotency-Key) pair, not a gateway request id: a retry after any failure finds it
    charge_id = idempotency_id(item.key_id, headers[0][1])
    assert non_topup_entries(accounts, item) == [(charge_id, "reserve"), (charge_id, "settle")]
    assert accounts.balance(item) == 7 == accounts.ledger_sum(item)


def test_a_replayed_plain_text_answer_keeps_its_format(model, accounts, wav):
    api, fake = model
    api_key, _ = accounts.new_key(10)
    first, retry = sent_twice(api, api_key, wav, idempotency_key(), response_format="srt")
    assert_ok(retry)
    assert retry.header("content-type").startswith("text/plain")
    assert retry.text == first.text and retry.text.startswith("1\n")
    assert fake.calls == 1


def test_a_retry_after_the_first_attempt_spent_the_last_credits_still_gets_its_answer(model, accounts, wav):
    """The retry is answered from the stored result, so an empty balance cannot turn it into a 402."""
    api, fake = model
    api_key, item = accounts.new_key(3)
    headers = idempotency_key()
    first = api.transcribe(api_key, wav, headers=headers)
    assert_ok(first)
    assert accounts.balance(item) == 0
    retry = api.transcribe(api_key, wav, headers=headers)
    assert_ok(retry)
    assert retry.header("idempotent-replayed") == "true" and retry.text == first.text
    assert fake.calls == 1 and accounts.balance(item) == 0 == accounts.ledger_sum(item)
    assert_error(api.transcribe(api_key, wav, headers=idempotency_key()), 402, "insufficient_credits")  # a new one


def test_the_same_request_encoded_differently_is_still_the_same_request(model, accounts, wav):
    """A client's retry need not reproduce the same bytes: multipart boundaries differ, the request does not."""
    api, fake = model
    api_key, item = accounts.new_key(10)
    headers = idempotency_key()
    first = api.transcribe(api_key, wav, headers=headers, language="en")
    content_type, payload = toolbelt_multipart_body(wav, model="whisper-1", language="en")
    assert content_type != multipart_body(wav, model="whisper-1", language="en")[0]  # another boundary
    retry = api.call("POST", TRANSCRIPTIONS, body=payload, content_type=content_type, api_key=api_key, headers=headers)
    assert_ok(retry)
    assert retry.header("idempotent-replayed") == "true" and retry.text == first.text
    assert fake.calls == 1 and accounts.balance(item) == 7


@pytest.mark.parametrize(
    "change",
    [
        {"audio": b"other"},
        {"response_format": "text"},
        {"language": "de"},
        {"model": "whisper-tiny.en"},
        {"path": "/v1/audio/translations"},
    ],
    ids=["other-audio", "other-format", "other-language", "other-model-name", "translation"],
)
def test_the_same_key_for_a_different_request_is_400(model, accounts, wav, change):
    api, fake = model
    api_key, item = accounts.new_key(10)
    headers = idempotency_key()
    first = api.transcribe(api_key, wav, headers=headers)
    assert_ok(first)
    ledger_before = accounts.ledger(item)
    audio = wav + change.pop("audio") if "audio" in change else wav  # still the same WAV, with other bytes
    error = assert_error(
        api.transcribe(api_key, audio, headers=headers, **change),
        400,
        "idempotency_key_reused",
        param="Idempotency-Key",
        error_type="invalid_request_error",
    )
    assert "different request" in error["message"]
    assert fake.calls == 1
    assert accounts.ledger(item) == ledger_before and accounts.balance(item) == 7


def test_a_failed_first_attempt_is_not_kept_and_the_retry_runs(fake_runtime, load_api, accounts, wav):
    failing_url, failing = fake_runtime(424, MODEL_ERROR_500, MODEL_ERROR_HEADERS)
    working_url, working = fake_runtime(200, model_answer(12.0))
    api_key, item = accounts.new_key(10)
    headers = idempotency_key()
    first = load_api(failing_url).transcribe(api_key, wav, headers=headers)
    assert_error(first, 502, "model_error")
    retry = load_api(working_url).transcribe(api_key, wav, headers=headers)
    assert_ok(retry)
    assert retry.header("idempotent-replayed") is None  # it ran: a failure is never replayed
    assert (failing.calls, working.calls) == (1, 1)
    charge_id = idempotency_id(item.key_id, headers[0][1])  # the retry is the pair's second attempt
    assert non_topup_entries(accounts, item) == sorted(
        [(charge_id, "reserve"), (charge_id, "refund"), (f"{charge_id}.2", "reserve"), (f"{charge_id}.2", "settle")]
    )
    assert accounts.balance(item) == 7 == accounts.ledger_sum(item)


def test_a_402_is_not_kept_either_so_the_retry_after_a_top_up_runs(model, accounts, wav):
    api, fake = model
    api_key, item = accounts.new_key(1)
    headers = idempotency_key()
    assert_error(api.transcribe(api_key, wav, headers=headers), 402, "insufficient_credits")
    accounts.credits.top_up(accounts.fresh(item), 9, request_id=f"topup-{uuid.uuid4()}")
    retry = api.transcribe(api_key, wav, headers=headers)
    assert_ok(retry)
    assert retry.header("idempotent-replayed") is None
    assert fake.calls == 1 and accounts.balance(item) == 7


def test_idempotency_keys_are_scoped_to_the_api_key(model, accounts, wav):
    """Two customers who happen to pick the same Idempotency-Key never see each other's results."""
    api, fake = model
    first_key, first_item = accounts.new_key(10)
    second_key, second_item = accounts.new_key(10)
    headers = idempotency_key()
    first = api.transcribe(first_key, wav, headers=headers)
    second = api.transcribe(second_key, wav, headers=headers)
    assert_ok(first)
    assert_ok(second)
    assert second.header("idempotent-replayed") is None
    assert fake.calls == 2
    assert accounts.balance(first_item) == accounts.balance(second_item) == 7
    assert second.header("x-infery-credits-balance") == "7"


def test_without_an_idempotency_key_a_retry_runs_and_is_billed_again(model, accounts, wav):
    api, fake = model
    api_key, item = accounts.new_key(10)
    for _ in range(2):
        reply = api.transcribe(api_key, wav)
        assert_ok(reply)
        assert reply.header("idempotent-replayed") is None
    assert fake.calls == 2 and accounts.balance(item) == 4


def test_a_retry_while_the_first_attempt_runs_is_409(fake_runtime, load_api, accounts, wav):
    """The retry arrives (on another Lambda instance) while the first attempt is still at the model."""
    api_key, item = accounts.new_key(10)
    headers = idempotency_key()
    retries = []
    url, fake = fake_runtime(
        200,
        model_answer(12.0),
        on_request=lambda: retries.append(other_instance.transcribe(api_key, wav, headers=headers)),
    )
    first_instance = load_api(url)
    other_instance = load_api(url)
    first = first_instance.transcribe(api_key, wav, headers=headers)
    assert_ok(first)
    [retry] = retries
    assert_error(retry, 409, "idempotency_key_in_progress", param="Idempotency-Key")
    assert fake.calls == 1
    charge_id = idempotency_id(item.key_id, headers[0][1])
    assert non_topup_entries(accounts, item) == [(charge_id, "reserve"), (charge_id, "settle")]
    assert accounts.balance(item) == 7


@pytest.mark.parametrize(
    "value", ["", "x" * 256, "tab\tinside", "bell\x07"], ids=["empty", "256-characters", "tab", "control-character"]
)
def test_a_malformed_idempotency_key_is_400_before_anything_is_reserved(model, accounts, wav, value):
    api, fake = model
    api_key, item = accounts.new_key(10)
    with accounts.refused_before_the_model(item, 10, fake):
        reply = api.transcribe(api_key, wav, headers=[("Idempotency-Key", value)])
    assert_error(reply, 400, "invalid_idempotency_key", param="Idempotency-Key")


@pytest.mark.parametrize("value", ["k", "x" * 255, "order 42 / retry: é"], ids=["one", "255", "spaces-unicode"])
def test_idempotency_keys_at_the_limits_are_accepted(model, accounts, wav, value):
    api, fake = model
    api_key, item = accounts.new_key(10)
    first, retry = sent_twice(api, api_key, wav, [("Idempotency-Key", value)])
    assert_ok(first)
    assert retry.header("idempotent-replayed") == "true"
    assert fake.calls == 1 and accounts.balance(item) == 7


def test_the_results_are_stored_in_the_templates_idempotency_table(model, accounts, wav, function_environment):
    import boto3

    api, _ = model
    api_key, _ = accounts.new_key(10)
    table = boto3.resource("dynamodb").Table(function_environment["IDEMPOTENCY_TABLE_NAME"])
    before = table.scan(Select="COUNT", ConsistentRead=True)["Count"]
    assert_ok(api.transcribe(api_key, wav, headers=idempotency_key()))
    items = table.scan(ConsistentRead=True)["Items"]
    assert len(items) == before + 1
    newest = max(items, key=lambda item: int(item["expiration"]))
    assert newest["status"] == "COMPLETED" and json.loads(newest["data"])["request_id"]
    assert api_key not in json.dumps(items, default=str)  # never the key itself


def test_records_keep_the_name_they_have_had_since_the_first_deployment(model, accounts, wav):
    """powertools names a record after the function it runs once: the handler module's _execute_once, wherever the
    code lives, so a retry sent across a deployment still finds the first attempt's record."""
    api, _ = model
    api_key, _ = accounts.new_key(10)
    reply = api.transcribe(api_key, wav, headers=idempotency_key())
    assert_ok(reply)
    table = boto3.resource("dynamodb").Table(api.module.wiring.settings.idempotency_table_name)
    [record] = [
        item
        for item in table.scan(ConsistentRead=True)["Items"]
        if json.loads(item.get("data", "{}")).get("request_id") == reply.request_id
    ]
    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "test-func")
    assert record["id"].startswith(f"{function_name}.app._execute_once#")


# --- an Idempotency-Key on every POST, and charged at most once after any failure -------------------


def test_an_answer_lost_after_the_charge_is_replayed_on_retry_without_a_second_charge(
    model, accounts, wav, monkeypatch
):
    """Found by reading the code: the reservation was keyed by the gateway's request id, so when powertools could not
    store the answer after the settle (an answer over 400 KB), the client got a 500 "nothing was charged" after it
    was charged, and its retry was charged again."""
    api, fake = model
    api_key, item = accounts.new_key(10)
    headers = idempotency_key()
    store = api.module.wiring.idempotency_store

    def lost(*_: object, **__: object) -> None:
        raise RuntimeError("the idempotency record could not be written")

    with monkeypatch.context() as patch:
        patch.setattr(store, "save_success", lost)
        first = api.transcribe(api_key, wav, headers=headers, response_format="verbose_json")
    assert_error(first, 500, "answer_not_saved")
    assert "you will not be charged again" in first.json()["error"]["message"]
    assert accounts.balance(item) == 7  # it was charged: the model had answered
    # the record stays "in progress" until the Lambda's timeout has passed; then a retry runs again
    table = boto3.resource("dynamodb").Table(api.module.wiring.settings.idempotency_table_name)
    for record in table.scan(ConsistentRead=True)["Items"]:
        if record.get("status") == "INPROGRESS":
            table.update_item(
                Key={"id": record["id"]},
                UpdateExpression="SET in_progress_expiration = :past",
                ExpressionAttributeValues={":past": 1},
            )

    retry = api.transcribe(api_key, wav, headers=headers, response_format="verbose_json")
    assert_ok(retry)
    assert retry.json()["text"] == "Hello there." and retry.json()["credits_used"] == 3
    assert retry.header("x-infery-credits-used") == "3"
    assert fake.calls == 1  # the stored result, rendered again: the model was not asked twice
    charge_id = idempotency_id(item.key_id, headers[0][1])
    assert non_topup_entries(accounts, item) == [(charge_id, "reserve"), (charge_id, "settle")]
    assert accounts.balance(item) == 7 == accounts.ledger_sum(item)


def test_an_answer_too_large_for_its_record_is_replayed_from_the_stored_result(fake_runtime, load_api, accounts, wav):
    many = [segment(index, index * 0.5, index * 0.5 + 0.5, " " + "word " * 60) for index in range(1200)]
    url, fake = fake_runtime(200, json.loads(inference_result("many words", many, duration=600.0).model_dump_json()))
    api = load_api(url)
    api_key, item = accounts.new_key(1000)
    headers = idempotency_key()
    first = api.transcribe(api_key, wav, headers=headers, response_format="verbose_json")
    assert_ok(first)
    assert len(first.text) > 400_000  # more than a DynamoDB item holds
    retry = api.transcribe(api_key, wav, headers=headers, response_format="verbose_json")
    assert_ok(retry)
    assert retry.header("idempotent-replayed") == "true"
    assert retry.json() == first.json()
    assert fake.calls == 1


def _job_request(api, api_key, wav, headers):
    content_type, payload = multipart_body(wav, filename="meeting.wav", model="whisper-1")
    return api.call(
        "POST",
        "/v1/audio/transcriptions/jobs",
        body=payload,
        content_type=content_type,
        api_key=api_key,
        headers=headers,
    )


def test_the_same_idempotency_key_on_a_job_request_creates_one_job(model, accounts, wav):
    """Found by the security review: the same Idempotency-Key created two jobs and charged twice."""
    api, _ = model
    api_key, item = accounts.new_key(10)
    headers = idempotency_key()
    first = _job_request(api, api_key, wav, headers)
    retry = _job_request(api, api_key, wav, headers)
    assert first.status == retry.status == 202, (first.text, retry.text)
    assert retry.json()["id"] == first.json()["id"]
    assert retry.header("idempotent-replayed") == "true"
    other = _job_request(api, api_key, wav, idempotency_key())
    assert other.json()["id"] != first.json()["id"]  # a new key is a new job


def test_the_same_idempotency_key_on_an_upload_gives_the_same_upload(model, accounts):
    api, _ = model
    api_key, _ = accounts.new_key(10)
    headers = idempotency_key()
    body = json.dumps({"filename": "meeting.mp3", "model": "whisper-1"}).encode()
    first = api.call(
        "POST", "/v1/uploads", body=body, content_type="application/json", api_key=api_key, headers=headers
    )
    retry = api.call(
        "POST", "/v1/uploads", body=body, content_type="application/json", api_key=api_key, headers=headers
    )
    assert first.status == retry.status == 201, (first.text, retry.text)
    assert (retry.json()["id"], retry.json()["job_id"]) == (first.json()["id"], first.json()["job_id"])
    reused = api.call(
        "POST",
        "/v1/uploads",
        body=json.dumps({"filename": "other.mp3"}).encode(),
        content_type="application/json",
        api_key=api_key,
        headers=headers,
    )
    assert_error(reused, 400, "idempotency_key_reused", param="Idempotency-Key")
