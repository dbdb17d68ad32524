"""The transcribe Lambda handler end to end inside one process: DynamoDB on moto, the real Whisper server."""

from __future__ import annotations

import json
import math
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from infery.errors import InsufficientCredits

from tests.speech import word_recall
from tests.unit.builders import json_body, multipart_body

ROOT = Path(__file__).resolve().parents[2]
ERROR_FIELDS = {"message", "type", "param", "code"}


def header(response: dict, name: str) -> str | None:
    values = {key.lower(): value for key, value in (response.get("multiValueHeaders") or {}).items()}
    values.update({key.lower(): [value] for key, value in (response.get("headers") or {}).items()})
    found = values.get(name.lower())
    return found[0] if found else None


def body(response: dict) -> dict:
    return json.loads(response["body"])


def assert_error(response: dict, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert response["statusCode"] == status, response["body"]
    assert header(response, "x-request-id")
    error = body(response)["error"]
    assert set(error) == ERROR_FIELDS and error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


@pytest.fixture
def api(load_api, model_server_url):
    return load_api(model_server_url)


@pytest.fixture(scope="module")
def wav(speech_files) -> bytes:
    return speech_files["wav"].read_bytes()


def transcribe(api, api_key, audio, path="/v1/audio/transcriptions", **fields):
    content_type, payload = multipart_body(audio, **{"model": "whisper-1", **fields})
    return api.call("POST", path, body=payload, content_type=content_type, api_key=api_key)


def test_a_transcription_is_charged_once_with_a_ledger_entry(api, accounts, wav):
    api_key, item = accounts.new_key(100)
    response = transcribe(api, api_key, wav)
    assert response["statusCode"] == 200, response["body"]
    result = body(response)
    assert word_recall(result["text"]) >= 0.7, result["text"]
    assert result["credits_used"] == 3 and header(response, "x-infery-credits-used") == "3"
    assert accounts.balance(item) == 97 == int(header(response, "x-infery-credits-balance"))
    [charge] = accounts.ledger(item, "charge")
    assert (int(charge["credits"]), int(charge["balance_after"]), charge["model"]) == (-3, 97, "whisper-tiny.en")
    assert math.ceil(float(charge["audio_seconds"]) / 5) == 3
    assert sum(int(entry["credits"]) for entry in accounts.ledger(item)) == accounts.balance(item)


def test_json_base64_mp3_with_word_timestamps(api, accounts, speech_files):
    api_key, item = accounts.new_key(100)
    content_type, payload = json_body(speech_files["mp3"].read_bytes(), model="whisper-1",
                                      response_format="verbose_json", timestamp_granularities=["word"])
    response = api.call("POST", "/v1/audio/transcriptions", body=payload, content_type=content_type,
                        api_key=api_key)
    assert response["statusCode"] == 200, response["body"]
    result = body(response)
    assert result["task"] == "transcribe" and result["language"] == "en" and result["segments"]
    starts = [word["start"] for word in result["words"]]
    assert starts == sorted(starts) and len(starts) >= 20
    assert accounts.balance(item) == 100 - result["credits_used"]


@pytest.mark.parametrize("response_format", ["text", "srt", "vtt"])
def test_text_formats_are_plain_text_and_still_report_credits(api, accounts, wav, response_format):
    api_key, _ = accounts.new_key(100)
    response = transcribe(api, api_key, wav, response_format=response_format)
    assert response["statusCode"] == 200
    assert header(response, "content-type").startswith("text/plain")
    assert header(response, "x-infery-credits-used") == "3"
    assert word_recall(response["body"]) >= 0.7


def test_translation_and_models(api, accounts, wav):
    api_key, item = accounts.new_key(100)
    response = transcribe(api, api_key, wav, path="/v1/audio/translations")
    assert response["statusCode"] == 200 and word_recall(body(response)["text"]) >= 0.7
    assert accounts.balance(item) == 97
    models = body(api.call("GET", "/v1/models", api_key=api_key))
    assert [model["id"] for model in models["data"]] == ["whisper-tiny.en", "whisper-1"]
    assert body(api.call("GET", "/v1/models/whisper-1", api_key=api_key))["id"] == "whisper-1"
    assert_error(api.call("GET", "/v1/models/whisper-9", api_key=api_key), 404, "model_not_found")


@pytest.mark.parametrize(("api_key", "code"), [
    (None, "missing_api_key"),
    ("not-a-key", "invalid_api_key"),
    ("inf_neverissuedneverissuedneverissued", "invalid_api_key"),
])
def test_bad_keys_are_401_and_cost_nothing(api, accounts, wav, api_key, code):
    assert_error(transcribe(api, api_key, wav), 401, code)
    assert_error(api.call("GET", "/v1/models", api_key=api_key), 401, code)


def test_a_revoked_key_is_401(api, accounts, wav):
    api_key, item = accounts.new_key(100)
    accounts.keys_table.update_item(Key={"key_hash": item.key_hash}, UpdateExpression="SET #s = :r",
                                    ExpressionAttributeNames={"#s": "status"},
                                    ExpressionAttributeValues={":r": "revoked"})
    assert_error(transcribe(api, api_key, wav), 401, "invalid_api_key")
    assert accounts.balance(item) == 100 and accounts.ledger(item, "charge") == []


def test_an_empty_balance_is_402_before_the_model_is_called(load_api, fake_runtime, accounts, wav):
    url, fake = fake_runtime(200, {"text": "never used"})
    api = load_api(url)
    api_key, item = accounts.new_key(0)
    error = assert_error(transcribe(api, api_key, wav), 402, "insufficient_credits")
    assert error["type"] == "insufficient_quota"
    assert fake.calls == []  # no GPU time spent on a request that cannot be paid


def test_a_balance_short_of_the_real_price_is_402_and_never_negative(api, accounts, wav):
    api_key, item = accounts.new_key(1)  # the 11.7 s clip costs 3
    response = transcribe(api, api_key, wav)
    assert_error(response, 402, "insufficient_credits")
    assert header(response, "x-infery-credits-balance") == "1"
    assert accounts.balance(item) == 1 and accounts.ledger(item, "charge") == []


MODEL_ERROR_500 = {"Message": "Received server error (500) from primary", "OriginalStatusCode": 500,
                   "OriginalMessage": json.dumps({"error": "boom", "code": "inference_failed"})}


@pytest.mark.parametrize(("status", "headers", "payload", "delay", "expected_status", "expected_code"), [
    (424, {"x-amzn-ErrorType": "ModelError"}, MODEL_ERROR_500, 0.0, 502, "model_error"),
    (503, {"x-amzn-ErrorType": "ServiceUnavailable"}, {"message": "busy"}, 0.0, 503, "model_unavailable"),
    (400, {"x-amzn-ErrorType": "ValidationError"}, {"message": "Endpoint x not found."}, 0.0, 503,
     "model_unavailable"),
    (200, {}, b"this is not the inference contract", 0.0, 502, "model_error"),
    (200, {}, {"text": "hi"}, 3.0, 504, "model_timeout"),
])
def test_endpoint_failures_are_5xx_and_charge_nothing(load_api, fake_runtime, accounts, wav, status, headers,
                                                      payload, delay, expected_status, expected_code):
    url, fake = fake_runtime(status, payload, headers, delay)
    api = load_api(url, ENDPOINT_TIMEOUT_SECONDS="1")
    api_key, item = accounts.new_key(100)
    error = assert_error(transcribe(api, api_key, wav), expected_status, expected_code)
    assert error["type"] == "server_error" and "nothing was charged" in error["message"]
    assert len(fake.calls) == 1  # never retried: a retry could run and charge the audio twice
    assert accounts.balance(item) == 100 and accounts.ledger(item, "charge") == []


def test_an_unreachable_endpoint_is_503(load_api, accounts, wav):
    from tests.integration.conftest import free_port

    api = load_api(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    api_key, item = accounts.new_key(100)
    assert_error(transcribe(api, api_key, wav), 503, "model_unavailable")
    assert accounts.balance(item) == 100


def test_corrupt_audio_behind_a_valid_header_is_the_clients_400(api, accounts):
    api_key, item = accounts.new_key(100)
    corrupt = b"RIFF" + struct.pack("<I", 1000) + b"WAVE" + b"garbage, not chunks" * 40
    assert_error(transcribe(api, api_key, corrupt), 400, "undecodable_audio", "file")
    assert accounts.balance(item) == 100


def test_a_language_the_model_cannot_do_is_400(api, accounts, wav):
    api_key, item = accounts.new_key(100)
    assert_error(transcribe(api, api_key, wav, language="fr"), 400, "unsupported_language", "language")
    assert accounts.balance(item) == 100


@pytest.mark.parametrize(("audio", "fields", "status", "code"), [
    (b"RIFF....WAVE", {"model": "whisper-7"}, 400, "model_not_found"),
    (b"just text, no audio here at all", {}, 415, "unsupported_audio_format"),
    (b"", {}, 400, "empty_file"),
    (b"RIFF....WAVE", {"response_format": "xml"}, 400, "invalid_value"),
])
def test_client_mistakes_are_4xx_never_500(api, accounts, audio, fields, status, code):
    api_key, item = accounts.new_key(100)
    assert_error(transcribe(api, api_key, audio, **fields), status, code)
    assert accounts.balance(item) == 100


def test_wrong_content_type_and_unknown_route(api, accounts, wav):
    api_key, _ = accounts.new_key(100)
    assert_error(api.call("POST", "/v1/audio/transcriptions", body=wav, content_type="audio/wav", api_key=api_key),
                 415, "unsupported_content_type")
    assert_error(api.call("GET", "/v1/nothing-here", api_key=api_key), 404, "unknown_url")


def test_the_sample_event_runs_against_the_handler(api, accounts):
    api_key, _ = accounts.new_key(1)
    event = json.loads((ROOT / "events" / "list_models.json").read_text().replace(
        "inf_replace_with_a_key_from_make_serve", api_key))
    from tests.integration.conftest import LambdaContext

    response = api.handler(event, LambdaContext())
    assert response["statusCode"] == 200 and body(response)["object"] == "list"


def test_a_request_id_is_charged_once(accounts):
    _, item = accounts.new_key(10)
    first = accounts.credits.charge(item, 3, request_id="req-1", model="m", audio_seconds=12.5)
    again = accounts.credits.charge(item.model_copy(update={"credits": first}), 3, request_id="req-1", model="m",
                                    audio_seconds=12.5)
    assert first == again == 7 == accounts.balance(item)
    assert len(accounts.ledger(item, "charge")) == 1


def test_concurrent_charges_never_overdraw_and_the_ledger_adds_up(accounts):
    _, item = accounts.new_key(10)
    outcomes: list[str] = []
    lock = threading.Lock()

    def charge(index: int) -> None:
        try:
            accounts.credits.charge(item, 1, request_id=f"race-{index}", model="m", audio_seconds=1.0)
            result = "ok"
        except InsufficientCredits:
            result = "402"
        with lock:
            outcomes.append(result)

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(charge, range(20)))
    assert outcomes.count("ok") == 10 and outcomes.count("402") == 10
    assert accounts.balance(item) == 0
    charges = accounts.ledger(item, "charge")
    assert len(charges) == 10 and sum(int(entry["credits"]) for entry in charges) == -10
    assert sorted(int(entry["balance_after"]) for entry in charges) == list(range(10))
