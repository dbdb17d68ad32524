"""Who may call, and what a call costs: keys, balances and the ledger through the real handler.

A transcription reserves an upper bound of its cost before inference (402 when the balance is below it), and
settles to the real cost after; the 11.7 s clip the tests send declares its duration, so it reserves 3 credits.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
import wave
from datetime import UTC, datetime, timedelta

import pytest
from infery.adapters.key_store import key_id_for
from infery.domain.keys import generate_api_key, hash_api_key

from tests.support.api import MODEL_NAME, assert_error, assert_ok, assert_refunded
from tests.support.builders import multipart_body
from tests.support.model_replies import MODEL_ERROR_500, MODEL_ERROR_HEADERS, model_answer

CLIP_RESERVATION = 3  # what the 11.7 s clip reserves: ceil((11.7 * 1.02 + 0.5) / 5)
A_KEY_WITH_A_TYPO = generate_api_key()[:-1] + "#"
_generated = generate_api_key()
A_KEY_WITH_A_BAD_CHECKSUM = _generated[:-1] + ("A" if _generated[-1] != "A" else "B")


@pytest.fixture
def boom(fake_runtime, load_api):
    """The handler wired to an endpoint that always fails: a request that reaches it shows up in ``fake.calls``."""
    url, fake = fake_runtime(424, MODEL_ERROR_500, MODEL_ERROR_HEADERS)
    return load_api(url), fake


ROUTES = (
    ("POST", "/v1/audio/transcriptions"),
    ("POST", "/v1/audio/translations"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/whisper-1"),
    ("GET", "/v1/usage"),
)


def call_every_route(api, wav, **credentials):
    """One request to each of ROUTES (a POST carries the clip, unparsed): the replies, in ROUTES' order."""
    for method, path in ROUTES:
        yield api.call(
            method,
            path,
            body=wav if method == "POST" else b"",
            content_type="multipart/form-data; boundary=x" if method == "POST" else None,
            **credentials,
        )


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        ("Basic dXNlcjpwYXNzd29yZA==", "invalid_api_key"),
        ("Bearer", "invalid_api_key"),
        ("Bearer not-an-infery-key", "invalid_api_key"),
        ("Bearer sk-proj-abcdefghijklmnopqrstuvwxyz0123", "invalid_api_key"),
        ("Bearer inf_neverissuedneverissuedneverissued", "invalid_api_key"),
        (f"Bearer {A_KEY_WITH_A_BAD_CHECKSUM}", "invalid_api_key"),
        (f"Bearer {A_KEY_WITH_A_TYPO}", "invalid_api_key"),
    ],
    ids=[
        "no-header",
        "empty-header",
        "basic-auth",
        "bearer-without-key",
        "not-a-key",
        "openai-key",
        "unknown-key",
        "bad-checksum",
        "typo",
    ],
)
def test_missing_malformed_or_unknown_keys_are_401_and_cost_nothing(boom, accounts, wav, authorization, code):
    api, fake = boom
    headers = [] if authorization is None else [("Authorization", authorization)]
    ledger_before = accounts.ledger_size()
    for reply in call_every_route(api, wav, headers=headers):
        error = assert_error(reply, 401, code, error_type="invalid_request_error")
        assert "neverissuedneverissuedneverissued" not in error["message"]  # a key is masked, never echoed
    assert fake.calls == 0
    assert accounts.ledger_size() == ledger_before


def test_an_unknown_key_gets_no_ledger_entry(boom, accounts, wav):
    api, _ = boom
    unknown = "inf_" + uuid.uuid4().hex
    assert_error(api.transcribe(unknown, wav), 401, "invalid_api_key")
    entries = accounts.ledger_table.query(
        KeyConditionExpression="key_id = :k", ExpressionAttributeValues={":k": key_id_for(hash_api_key(unknown))}
    )
    assert entries["Items"] == []


def test_a_bad_checksum_is_refused_by_its_message(boom, wav):
    api, _ = boom
    error = assert_error(api.transcribe(A_KEY_WITH_A_BAD_CHECKSUM, wav), 401, "invalid_api_key")
    assert "checksum" in error["message"] and A_KEY_WITH_A_BAD_CHECKSUM not in error["message"]


def test_a_revoked_key_is_401_and_cost_nothing(boom, accounts, wav):
    api, fake = boom
    api_key, item = accounts.new_key(100)
    accounts.revoke(item)
    for reply in call_every_route(api, wav, api_key=api_key):
        error = assert_error(reply, 401, "revoked_api_key", error_type="invalid_request_error")
        assert api_key not in error["message"] and "revoked" in error["message"]
    assert fake.calls == 0
    accounts.assert_untouched(item, 100)
    assert accounts.ledger(item, "reserve") == []


@pytest.mark.parametrize("expires_in", [timedelta(seconds=-1), timedelta(days=-400)], ids=["just-now", "last-year"])
def test_an_expired_key_is_401_and_costs_nothing(boom, accounts, wav, expires_in):
    api, fake = boom
    expires_at = (datetime.now(UTC) + expires_in).isoformat(timespec="milliseconds")
    api_key, item = accounts.new_key(100, expires_at=expires_at)
    for reply in call_every_route(api, wav, api_key=api_key):
        error = assert_error(reply, 401, "expired_api_key")
        assert expires_at in error["message"]
    assert fake.calls == 0
    accounts.assert_untouched(item, 100)
    assert accounts.ledger(item, "reserve") == []


def test_a_key_that_expires_later_works_until_then(fake_runtime, load_api, accounts, wav):
    url, fake = fake_runtime(200, model_answer(4.2))
    expires_at = (datetime.now(UTC) + timedelta(days=1)).isoformat(timespec="milliseconds")
    api_key, item = accounts.new_key(10, expires_at=expires_at)
    assert_ok(load_api(url).transcribe(api_key, wav))
    assert fake.calls == 1 and accounts.balance(item) == 9


@pytest.mark.parametrize(
    ("allowed", "requested"),
    [
        (["whisper-1"], "whisper-1"),
        ([MODEL_NAME], MODEL_NAME),
        ([MODEL_NAME], "whisper-1"),  # the alias resolves to an allowed model
        (["whisper-1"], MODEL_NAME),  # and the model's own name is the model the alias allows
    ],
)
def test_a_key_may_use_the_models_it_is_allowed(fake_runtime, load_api, accounts, wav, allowed, requested):
    url, fake = fake_runtime(200, model_answer(4.2))
    api_key, item = accounts.new_key(10, allowed_models=allowed)
    reply = load_api(url).transcribe(api_key, wav, model=requested)
    assert_ok(reply)
    assert fake.calls == 1 and accounts.balance(item) == 9


@pytest.mark.parametrize("requested", ["whisper-1", MODEL_NAME])
def test_a_model_the_key_is_not_allowed_is_403_before_any_reservation(boom, accounts, wav, requested):
    allowed = ["some-other-model", "whisper-2"]
    api, fake = boom
    api_key, item = accounts.new_key(10, allowed_models=allowed)
    with accounts.refused_before_the_model(item, 10, fake):
        for path in ("/v1/audio/transcriptions", "/v1/audio/translations"):
            error = assert_error(
                api.transcribe(api_key, wav, path=path, model=requested), 403, "model_not_allowed", param="model"
            )
            assert requested in error["message"] and allowed[0] in error["message"]


def test_an_unknown_model_is_400_even_for_a_restricted_key(boom, accounts, wav):
    api, fake = boom
    api_key, item = accounts.new_key(10, allowed_models=["whisper-1"])
    assert_error(api.transcribe(api_key, wav, model="whisper-9"), 400, "model_not_found", param="model")
    assert fake.calls == 0
    accounts.assert_untouched(item, 10)


def test_lower_case_header_names_are_accepted(fake_runtime, load_api, accounts, wav):
    """HTTP/2 clients send lower-case header names, and API Gateway passes them on as they came."""
    url, fake = fake_runtime(200, model_answer(4.2))
    api_key, item = accounts.new_key(10)
    content_type, payload = multipart_body(wav, model="whisper-1")
    reply = load_api(url).call(
        "POST",
        "/v1/audio/transcriptions",
        body=payload,
        headers=[("authorization", f"Bearer {api_key}"), ("content-type", content_type)],
    )
    assert_ok(reply)
    assert reply.json() == {"text": "Hello there.", "credits_used": 1}
    assert accounts.balance(item) == 9 and fake.calls == 1


def test_an_empty_balance_is_402_before_the_model_is_called(boom, accounts, wav):
    api, fake = boom
    api_key, item = accounts.new_key(0)
    ledger_before = accounts.ledger_size()
    reply = api.transcribe(api_key, wav)
    assert_error(reply, 402, "insufficient_credits", error_type="insufficient_quota")
    assert reply.header("x-infery-credits-balance") == "0"
    assert fake.calls == 0  # no GPU time spent on a request that cannot be paid for
    assert accounts.balance(item) == 0 and accounts.ledger_size() == ledger_before


@pytest.mark.parametrize("balance", [1, CLIP_RESERVATION - 1])
def test_a_balance_short_of_the_reservation_is_402_before_inference(boom, accounts, wav, balance):
    api, fake = boom
    api_key, item = accounts.new_key(balance)
    # the GPU is never used for a request the balance cannot cover
    with accounts.refused_before_the_model(item, balance, fake):
        reply = api.transcribe(api_key, wav)
    error = assert_error(reply, 402, "insufficient_credits", error_type="insufficient_quota")
    assert f"{CLIP_RESERVATION} credits" in error["message"] and str(balance) in error["message"]
    assert reply.header("x-infery-credits-balance") == str(balance)
    assert int(accounts.stored_key(item)["credits"]) == balance


def test_a_balance_of_exactly_the_price_is_spent_to_zero(fake_runtime, load_api, accounts, wav):
    url, _ = fake_runtime(200, model_answer(11.7))
    api_key, item = accounts.new_key(3)
    reply = load_api(url).transcribe(api_key, wav)
    assert_ok(reply)
    assert reply.header("x-infery-credits-used") == "3" and reply.header("x-infery-credits-balance") == "0"
    entries = accounts.request_entries(item, reply.request_id)
    assert set(entries) == {"reserve", "settle"}
    assert (int(entries["reserve"]["credits"]), int(entries["reserve"]["balance_after"])) == (-3, 0)
    settle = entries["settle"]
    assert (int(settle["credits"]), int(settle["balance_after"]), int(settle["billed_credits"])) == (0, 0, 3)
    assert accounts.balance(item) == 0 == accounts.ledger_sum(item)


def test_a_reservation_above_the_real_cost_is_given_back_when_it_settles(fake_runtime, load_api, accounts, wav):
    url, _ = fake_runtime(200, model_answer(0.3))  # the model heard 0.3 s: 1 credit of the 3 reserved
    api_key, item = accounts.new_key(10)
    reply = load_api(url).transcribe(api_key, wav)
    assert_ok(reply)
    assert reply.header("x-infery-credits-used") == "1" and reply.header("x-infery-credits-balance") == "9"
    entries = accounts.request_entries(item, reply.request_id)
    assert int(entries["reserve"]["credits"]) == -CLIP_RESERVATION
    assert int(entries["settle"]["credits"]) == CLIP_RESERVATION - 1  # positive: given back
    assert int(entries["settle"]["billed_credits"]) == 1
    assert accounts.balance(item) == 9 == accounts.ledger_sum(item)
    assert accounts.open_reservations(item) == []


def test_a_real_cost_above_the_reservation_takes_the_rest_but_never_goes_negative(
    fake_runtime, load_api, accounts, wav
):
    """The container said 11.7 s, the model heard 60 s (12 credits): the settle takes what the balance has left."""
    url, _ = fake_runtime(200, model_answer(60.0))
    api_key, item = accounts.new_key(5)
    reply = load_api(url).transcribe(api_key, wav)
    assert_ok(reply)
    assert reply.header("x-infery-credits-used") == "12"  # the price of what was transcribed
    assert reply.header("x-infery-credits-balance") == "0"
    settle = accounts.request_entries(item, reply.request_id)["settle"]
    assert int(settle["credits"]) == -2  # 3 reserved, then the 2 that were left
    assert int(settle["billed_credits"]) == 5 and int(settle["unpaid_credits"]) == 7
    assert int(settle["balance_after"]) == 0
    assert accounts.balance(item) == 0 == accounts.ledger_sum(item)


@pytest.mark.parametrize(("duration", "expected"), [(0.3, 1), (5.0, 1), (5.01, 2), (10.0, 2), (60.0, 12)])
def test_the_price_is_one_credit_per_started_five_seconds(fake_runtime, load_api, accounts, wav, duration, expected):
    url, _ = fake_runtime(200, model_answer(duration))
    api_key, item = accounts.new_key(50)
    reply = load_api(url).transcribe(api_key, wav)
    assert_ok(reply)
    assert reply.json()["credits_used"] == expected == int(reply.header("x-infery-credits-used"))
    assert accounts.balance(item) == 50 - expected == int(reply.header("x-infery-credits-balance"))
    settle = accounts.request_entries(item, reply.request_id)["settle"]
    assert int(settle["billed_credits"]) == expected and float(settle["audio_seconds"]) == duration


def test_a_key_revoked_while_the_model_runs_is_billed_once_and_refused_next(fake_runtime, load_api, accounts, wav):
    """The request was authorised when it started: it completes and is settled; the key's next request is 401."""
    api_key, item = accounts.new_key(100)
    url, fake = fake_runtime(200, model_answer(12.0), on_request=lambda: accounts.revoke(item))
    api = load_api(url)
    reply = api.transcribe(api_key, wav)
    assert_ok(reply)
    assert reply.json()["credits_used"] == 3 and reply.header("x-infery-credits-balance") == "97"
    assert fake.calls == 1
    assert accounts.fresh(item).status == "revoked"
    entries = accounts.request_entries(item, reply.request_id)
    assert set(entries) == {"reserve", "settle"} and int(entries["settle"]["billed_credits"]) == 3
    assert accounts.balance(item) == 97 == accounts.ledger_sum(item)

    assert_error(api.transcribe(api_key, wav), 401, "revoked_api_key")
    assert fake.calls == 1
    assert accounts.balance(item) == 97 and len(accounts.ledger(item, "reserve")) == 1


def test_a_top_up_during_inference_is_kept_and_the_charge_still_lands(fake_runtime, load_api, accounts, wav):
    api_key, item = accounts.new_key(10)

    def top_up_meanwhile() -> None:
        accounts.credits.top_up(accounts.fresh(item), 5, request_id=f"topup-{uuid.uuid4()}")

    url, _ = fake_runtime(200, model_answer(12.0), on_request=top_up_meanwhile)
    reply = load_api(url).transcribe(api_key, wav)
    assert_ok(reply)
    assert reply.header("x-infery-credits-balance") == "12"  # 10 - 3 reserved + 5 topped up, settled at 3
    assert accounts.balance(item) == 12
    entries = accounts.request_entries(item, reply.request_id)
    assert int(entries["reserve"]["balance_after"]) == 7 and int(entries["settle"]["balance_after"]) == 12
    assert [int(entry["credits"]) for entry in accounts.ledger(item, "topup")] == [10, 5]
    assert accounts.ledger_sum(item) == 12


def test_a_request_sends_the_audio_and_options_to_the_endpoint(fake_runtime, load_api, accounts, wav):
    url, fake = fake_runtime(200, model_answer(12.0))
    api_key, _ = accounts.new_key(10)
    reply = load_api(url).transcribe(
        api_key,
        wav,
        language="EN",
        prompt="Fox.",
        temperature="0.2",
        response_format="verbose_json",
        **{"timestamp_granularities[]": ["word", "segment"]},
    )
    assert_ok(reply)
    [request] = fake.requests
    assert request["path"].endswith("/invocations")
    sent = json.loads(request["body"])
    assert base64.b64decode(sent.pop("audio")) == wav
    # the model is told how many seconds the reservation pays for: the WAV's declared duration and a margin
    assert wav_duration(wav) < sent.pop("max_audio_seconds") <= wav_duration(wav) * 1.02 + 0.5 + 1e-3
    assert sent == {
        "task": "transcribe",
        "language": "en",
        "prompt": "Fox.",
        "temperature": 0.2,
        "word_timestamps": True,
        "audio_s3_uri": None,  # the audio is in the body, not in S3
        "audio_s3_etag": None,
        "audio_s3_version_id": None,
        "progress_s3_uri": None,
        "max_sync_audio_seconds": 300.0,  # a synchronous call: the model refuses audio past what it finishes in time
        "cuts": None,  # no chunking_strategy: the engine's own cuts
        "logprobs": False,  # not asked for: not computed
        "diarize": False,  # no speakers asked for
        "known_speakers": [],
        "part": None,  # a synchronous call is never cut into parts
    }  # no object to pin, no job to report on


@pytest.mark.parametrize(
    ("environment", "duration", "expected"),
    [
        ({"SECONDS_PER_CREDIT": "2"}, 12.0, 6),
        ({"MIN_CREDITS_PER_REQUEST": "2"}, 0.3, 2),
    ],
)
def test_pricing_comes_from_the_function_environment(
    fake_runtime, load_api, accounts, wav, environment, duration, expected
):
    url, _ = fake_runtime(200, model_answer(duration))
    api_key, item = accounts.new_key(20)
    reply = load_api(url, **environment).transcribe(api_key, wav)
    assert_ok(reply)
    assert reply.header("x-infery-credits-used") == str(expected)
    assert accounts.balance(item) == 20 - expected


def test_model_prices_come_from_the_function_environment(fake_runtime, load_api, accounts, wav):
    url, fake = fake_runtime(200, model_answer(12.0))
    api_key, item = accounts.new_key(20)
    prices = json.dumps({MODEL_NAME: {"seconds_per_credit": 2.5, "min_credits_per_request": 2}})
    reply = load_api(url, MODEL_PRICES=prices).transcribe(api_key, wav)
    assert_ok(reply)
    assert reply.header("x-infery-credits-used") == "5"  # ceil(12 / 2.5), whisper-1 being this model
    entries = accounts.request_entries(item, reply.request_id)
    assert int(entries["reserve"]["credits"]) == -5  # ceil(12.43 / 2.5): reserved at the model's price too
    assert accounts.balance(item) == 15


def test_a_minimum_price_above_the_balance_is_refused_before_inference(fake_runtime, load_api, accounts, wav):
    url, fake = fake_runtime(200, model_answer(1.0))
    api_key, item = accounts.new_key(1)
    reply = load_api(url, MIN_CREDITS_PER_REQUEST="2").transcribe(api_key, wav)
    assert_error(reply, 402, "insufficient_credits")
    assert fake.calls == 0
    accounts.assert_untouched(item, 1)


@pytest.mark.parametrize("seeded", [10, 4], ids=["balance-left", "balance-now-below-the-price"])
def test_the_same_event_handled_twice_is_billed_once(fake_runtime, load_api, accounts, wav, seeded):
    """A redelivered event has the same API Gateway request id: its reservation was made and closed already, so
    it neither reaches the model again nor changes the ledger, and it is not refused as unpaid (402) either."""
    url, fake = fake_runtime(200, model_answer(12.0))
    api_key, item = accounts.new_key(seeded)
    api = load_api(url)
    first = api.transcribe(api_key, wav)
    assert_ok(first)
    ledger_before = accounts.ledger(item)
    again = api.replay(first)
    error = assert_error(again, 500, error_type="server_error")
    assert "nothing more was charged" in error["message"] and first.request_id in error["message"]
    assert fake.calls == 1
    assert accounts.ledger(item) == ledger_before
    assert accounts.balance(item) == seeded - 3 == accounts.ledger_sum(item)
    assert set(accounts.request_entries(item, first.request_id)) == {"reserve", "settle"}


def test_a_refused_request_is_refunded_in_full(boom, accounts, wav):
    api, fake = boom
    api_key, item = accounts.new_key(10)
    reply = api.transcribe(api_key, wav)
    assert_error(reply, 502, "model_error")
    assert fake.calls == 1
    assert assert_refunded(accounts, item, reply) == CLIP_RESERVATION
    accounts.assert_untouched(item, 10)


def test_dynamodb_down_is_a_500_in_openai_shape_that_never_reaches_the_model(
    fake_runtime, load_api, accounts, wav, closed_port_url
):
    url, fake = fake_runtime(200, model_answer(12.0))
    api_key, item = accounts.new_key(10)
    api = load_api(url, AWS_ENDPOINT_URL_DYNAMODB=closed_port_url, AWS_MAX_ATTEMPTS="1")
    reply = api.transcribe(api_key, wav)
    error = assert_error(reply, 500, "internal_error", error_type="server_error")
    assert reply.request_id in error["message"] and "nothing was charged" in error["message"]
    assert fake.calls == 0
    accounts.assert_untouched(item, 10)


def wav_duration(data: bytes) -> float:
    """What the bytes hold (espeak-ng writes a streaming WAV whose header declares 0x7ffff000 bytes of data)."""
    with wave.open(io.BytesIO(data)) as reader:
        return (len(data) - 44) / (reader.getframerate() * reader.getsampwidth() * reader.getnchannels())
