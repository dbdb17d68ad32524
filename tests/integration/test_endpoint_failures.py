"""When the SageMaker endpoint fails, the client gets a clear 4xx/5xx and is never charged.

A request that reaches the endpoint has reserved its credits first, so a failure leaves two ledger entries, a
reserve and a refund of the same amount, and the balance as it was. The stand-ins answer as the SageMaker runtime
does for failures a real model cannot produce on demand; the client-side model errors (corrupt audio, a language
the model cannot do) come from the real Whisper server.
"""

from __future__ import annotations

import json
import struct

import pytest

from tests.support.api import assert_error, assert_refunded

MODEL_ERROR_500 = {
    "Message": 'Received server error (500) from primary with message "boom".',
    "OriginalStatusCode": 500,
    "OriginalMessage": json.dumps({"error": "boom", "code": "inference_failed"}),
}
SEEDED = 100


@pytest.mark.parametrize(
    ("status", "body", "headers", "delay", "expected_status", "expected_code"),
    [
        pytest.param(
            424, MODEL_ERROR_500, {"x-amzn-ErrorType": "ModelError"}, 0.0, 502, "model_error", id="model-error-500"
        ),
        pytest.param(
            503,
            {"message": "The endpoint is busy."},
            {"x-amzn-ErrorType": "ServiceUnavailable"},
            0.0,
            503,
            "model_unavailable",
            id="service-unavailable",
        ),
        pytest.param(200, {"text": "too late"}, {}, 3.0, 504, "model_timeout", id="read-timeout"),
        pytest.param(200, b"<html>this is not JSON</html>", {}, 0.0, 502, "model_error", id="not-json"),
        pytest.param(
            200, {"text": "JSON, but not the inference contract"}, {}, 0.0, 502, "model_error", id="wrong-json"
        ),
    ],
)
def test_endpoint_failures_are_5xx_and_charge_nothing(
    fake_runtime, load_api, accounts, wav, status, body, headers, delay, expected_status, expected_code
):
    url, fake = fake_runtime(status, body, headers, delay=delay)
    api = load_api(url, ENDPOINT_TIMEOUT_SECONDS="1")
    api_key, item = accounts.new_key(SEEDED)
    ledger_before = accounts.ledger_size()
    reply = api.transcribe(api_key, wav)
    error = assert_error(reply, expected_status, expected_code, error_type="server_error")
    assert "nothing was charged" in error["message"]
    assert "boom" not in error["message"]  # the model's internals stay in its logs
    assert fake.calls == 1  # never retried by the SDK: a retry could run, and charge, the audio twice
    accounts.assert_untouched(item, SEEDED)
    assert assert_refunded(accounts, item, reply) == 3  # the 11.7 s clip's reservation, all of it back
    assert accounts.ledger_size() == ledger_before + 2


def test_a_refused_connection_is_503_and_charges_nothing(load_api, closed_port_url, accounts, wav):
    api = load_api(closed_port_url)
    api_key, item = accounts.new_key(SEEDED)
    ledger_before = accounts.ledger_size()
    reply = api.transcribe(api_key, wav)
    error = assert_error(reply, 503, "model_unavailable", error_type="server_error")
    assert "nothing was charged" in error["message"]
    accounts.assert_untouched(item, SEEDED)
    assert_refunded(accounts, item, reply)
    assert accounts.ledger_size() == ledger_before + 2


def test_an_endpoint_name_the_runtime_does_not_know_is_503(load_api, model_server_url, accounts, wav):
    """The real server answers a wrong endpoint name as SageMaker does: 400 ValidationError."""
    api = load_api(model_server_url, SAGEMAKER_ENDPOINT_NAME="infery-it-NotDeployed")
    api_key, item = accounts.new_key(SEEDED)
    reply = api.transcribe(api_key, wav)
    assert_error(reply, 503, "model_unavailable", error_type="server_error")
    accounts.assert_untouched(item, SEEDED)
    assert_refunded(accounts, item, reply)


def test_a_response_cut_off_mid_body_is_an_endpoint_error(fake_runtime, load_api, accounts, wav):
    url, fake = fake_runtime(200, b'{"text": "Hello', declared_length=4096)  # the connection closes early
    api_key, item = accounts.new_key(SEEDED)
    reply = load_api(url).transcribe(api_key, wav)
    assert fake.calls == 1
    accounts.assert_untouched(item, SEEDED)
    assert_refunded(accounts, item, reply)
    assert reply.status in (502, 503), reply.text
    error = assert_error(reply, reply.status, error_type="server_error")
    assert error["code"] in ("model_error", "model_unavailable")


def corrupt_wav() -> bytes:
    """Bytes whose header sniffs as WAV, with no valid chunks after it."""
    return b"RIFF" + struct.pack("<I", 4000) + b"WAVE" + b"garbage, not RIFF chunks at all. " * 100


def empty_wav() -> bytes:
    """A well-formed 16 kHz mono WAV with no samples."""
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    return b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", 0)


@pytest.mark.parametrize("audio", [corrupt_wav(), empty_wav()], ids=["corrupt-wav", "wav-without-samples"])
def test_audio_the_model_cannot_decode_is_the_clients_400(api, accounts, audio):
    api_key, item = accounts.new_key(SEEDED)
    ledger_before = accounts.ledger_size()
    reply = api.transcribe(api_key, audio)
    error = assert_error(reply, 400, "undecodable_audio", param="file", error_type="invalid_request_error")
    assert "decode" in error["message"] or "no audio" in error["message"]
    accounts.assert_untouched(item, SEEDED)
    # the container declares no usable duration: the reservation is bounded by the size at 16 kbit/s, 1 credit
    assert assert_refunded(accounts, item, reply) == 1
    assert accounts.ledger_size() == ledger_before + 2


def test_a_language_the_english_only_model_cannot_do_is_400(api, accounts, wav):
    api_key, item = accounts.new_key(SEEDED)
    reply = api.transcribe(api_key, wav, language="fr")
    error = assert_error(reply, 400, "unsupported_language", param="language", error_type="invalid_request_error")
    assert "'fr'" in error["message"]
    accounts.assert_untouched(item, SEEDED)
    assert_refunded(accounts, item, reply)  # only the model knows what it can do: reserved, then refunded
