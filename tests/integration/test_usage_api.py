"""GET /v1/usage through the real handler: the calling key's balance, totals and recent requests, from its ledger."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.api import MODEL_NAME, assert_error, assert_ok
from tests.support.model_replies import MODEL_ERROR_500, MODEL_ERROR_HEADERS, model_answer

USAGE = "/v1/usage"


def usage(api, api_key: str, query: str = ""):
    reply = api.call("GET", USAGE + query, api_key=api_key)
    assert_ok(reply)
    assert reply.header("content-type").startswith("application/json")
    return reply.json()


@pytest.fixture
def api(load_api, closed_port_url):
    """The handler, for requests that never reach the model."""
    return load_api(closed_port_url)


@pytest.fixture
def apis(fake_runtime, load_api):
    """Three handlers sharing the tables: the model hears 12 s (3 credits), 4.2 s (1 credit), or fails."""
    return {
        name: load_api(fake_runtime(*answer)[0])
        for name, answer in {
            "three": (200, model_answer(12.0)),
            "one": (200, model_answer(4.2)),
            "failing": (424, MODEL_ERROR_500, MODEL_ERROR_HEADERS),
        }.items()
    }


def test_usage_reports_what_the_key_did(apis, accounts, wav):
    api_key, item = accounts.new_key(100)
    first = apis["three"].transcribe(api_key, wav)
    failed = apis["failing"].transcribe(api_key, wav)
    second = apis["one"].transcribe(api_key, wav, path="/v1/audio/translations")
    refused = apis["three"].transcribe(api_key, wav, model="whisper-9")  # 400 before any reservation
    assert_ok(first)
    assert_error(failed, 502, "model_error")
    assert_ok(second)
    assert_error(refused, 400, "model_not_found")
    in_flight = accounts.credits.reserve(
        accounts.fresh(item), 2, request_id=f"in-flight-{uuid.uuid4()}", model=MODEL_NAME
    )

    report = usage(apis["three"], api_key)
    assert (report["object"], report["key_id"], report["name"]) == ("usage", item.key_id, item.name)
    assert report["balance"] == 100 - 3 - 1 - 2 == accounts.balance(item)
    assert report["credits_added"] == 100
    # settled requests only: the refunded one cost nothing, the one in flight is not billed yet
    assert report["total"] == {"requests": 2, "audio_seconds": 16.2, "credits": 4}
    assert report["by_model"] == [{"model": MODEL_NAME, "requests": 2, "audio_seconds": 16.2, "credits": 4}]
    started = {
        accounts.request_entries(item, reply.request_id)["reserve"]["created_at"][:10] for reply in (first, second)
    }
    assert [day["date"] for day in report["by_day"]] == sorted(started)  # one day, unless midnight fell between
    assert sum(day["requests"] for day in report["by_day"]) == 2
    assert sum(day["credits"] for day in report["by_day"]) == 4
    recent = [(request["request_id"], request["status"], request["credits"]) for request in report["recent_requests"]]
    assert recent == [
        (in_flight.request_id, "in_progress", 2),
        (second.request_id, "settled", 1),
        (failed.request_id, "refunded", 0),
        (first.request_id, "settled", 3),
    ]  # newest first
    by_id = {request["request_id"]: request for request in report["recent_requests"]}
    assert by_id[first.request_id]["audio_seconds"] == 12.0 and by_id[first.request_id]["model"] == MODEL_NAME
    assert refused.request_id not in by_id

    start, end = (datetime.fromisoformat(report["period"][name]) for name in ("start", "end"))
    assert timedelta(days=30) <= end - start <= timedelta(days=30, seconds=5)
    assert start < datetime.now(UTC) < end


def test_usage_is_free_and_changes_nothing(api, accounts):
    api_key, item = accounts.new_key(10)
    ledger_before = accounts.ledger(item)
    for _ in range(3):
        report = usage(api, api_key)
        assert report["balance"] == 10 and report["credits_added"] == 10
        assert report["total"] == {"requests": 0, "audio_seconds": 0.0, "credits": 0}
        assert report["by_day"] == report["by_model"] == report["recent_requests"] == []
    assert accounts.ledger(item) == ledger_before and accounts.balance(item) == 10


def test_a_key_sees_only_its_own_usage(fake_runtime, load_api, accounts, wav):
    api = load_api(fake_runtime(200, model_answer(12.0))[0])
    busy_key, _ = accounts.new_key(100)
    quiet_key, quiet = accounts.new_key(7)
    assert_ok(api.transcribe(busy_key, wav))
    report = usage(api, quiet_key)
    assert report["key_id"] == quiet.key_id and report["balance"] == 7
    assert report["total"]["requests"] == 0 and report["recent_requests"] == []


def test_the_period_is_the_last_n_days(api, accounts):
    """An old request (its entries written as the ledger would have, 3 days ago) is inside 7 days, not 1."""
    api_key, item = accounts.new_key(10)
    long_ago = (datetime.now(UTC) - timedelta(days=3)).isoformat(timespec="milliseconds")
    request_id = f"old-{uuid.uuid4()}"
    for kind, amount, extra in (("reserve", -3, {}), ("settle", 1, {"billed_credits": 2, "audio_seconds": 9})):
        accounts.ledger_table.put_item(
            Item={
                "key_id": item.key_id,
                "entry_id": f"{request_id}#{kind}",
                "kind": kind,
                "request_id": request_id,
                "model": MODEL_NAME,
                "credits": amount,
                "balance_after": 0,
                "created_at": long_ago,
                **extra,
            }
        )

    last_day = usage(api, api_key, "?days=1")
    assert last_day["total"]["requests"] == 0 and last_day["recent_requests"] == []
    last_week = usage(api, api_key, "?days=7")
    assert last_week["total"] == {"requests": 1, "audio_seconds": 9.0, "credits": 2}
    assert last_week["by_day"] == [{"date": long_ago[:10], "requests": 1, "audio_seconds": 9.0, "credits": 2}]
    assert [request["request_id"] for request in last_week["recent_requests"]] == [request_id]
    start, end = (datetime.fromisoformat(last_week["period"][name]) for name in ("start", "end"))
    assert timedelta(days=7) <= end - start <= timedelta(days=7, seconds=5)


@pytest.mark.parametrize("days", ["1", "366", "30"])
def test_days_from_1_to_366_are_accepted(api, accounts, days):
    api_key, _ = accounts.new_key(10)
    report = usage(api, api_key, f"?days={days}")
    start, end = (datetime.fromisoformat(report["period"][name]) for name in ("start", "end"))
    assert timedelta(days=int(days)) <= end - start <= timedelta(days=int(days), seconds=5)


@pytest.mark.parametrize(
    "query",
    ["?days=0", "?days=367", "?days=-1", "?days=1.5", "?days=abc", "?days=", "?days=1e2", "?days=99999999999999999999"],
)
def test_other_days_are_400(api, accounts, query):
    api_key, _ = accounts.new_key(10)
    ledger_before = accounts.ledger_size()
    reply = api.call("GET", USAGE + query, api_key=api_key)
    error = assert_error(reply, 400, "invalid_days", param="days", error_type="invalid_request_error")
    assert "366" in error["message"]
    assert accounts.ledger_size() == ledger_before
