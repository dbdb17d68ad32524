"""Requests per minute per key, counted in the template's RateLimitsTable (moto), through the real handler.

The limiter counts in fixed one-minute windows of the wall clock. So that no test depends on when it runs (a
window boundary between two requests would reset the count), the handler's limiter gets a clock the test moves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from infery.adapters.rate_limits import WINDOW_SECONDS, RateLimiter
from infery.domain.errors import RateLimited

from tests.support.api import Api, Clock, assert_error, assert_ok
from tests.support.model_replies import model_answer

WINDOW_START = 1_800_000_000.0  # a minute boundary (divisible by 60)
RATE_LIMIT_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")


@pytest.fixture
def rate_limits_table(function_environment):
    return boto3.resource("dynamodb").Table(function_environment["RATE_LIMITS_TABLE_NAME"])


@pytest.fixture
def clock() -> Clock:
    return Clock(WINDOW_START + 15)  # 45 s left in this window


@pytest.fixture
def limited(fake_runtime, load_api, rate_limits_table, clock) -> Callable[..., tuple[Api, object]]:
    """A handler (endpoint hears 4.2 s: 1 credit) whose limiter reads ``clock``; environment overrides allowed."""

    def load(**environment: str) -> tuple[Api, object]:
        url, fake = fake_runtime(200, model_answer(4.2))
        api = load_api(url, **environment)
        wiring = api.module.wiring
        wiring.rate_limiter = RateLimiter(wiring.dynamodb_client, rate_limits_table.name, clock=clock)
        return api, fake

    return load


def limits(reply) -> tuple[str | None, ...]:
    return tuple(reply.header(name) for name in RATE_LIMIT_HEADERS)


def test_every_answer_within_the_limit_says_how_many_are_left(limited, accounts, wav):
    api, _ = limited()
    api_key, _ = accounts.new_key(10, rate_limit_per_minute=3)
    replies = [
        api.transcribe(api_key, wav),
        api.call("GET", "/v1/models", api_key=api_key),
        api.call("GET", "/v1/usage", api_key=api_key),
    ]
    for reply in replies:
        assert_ok(reply)
    assert [limits(reply) for reply in replies] == [("3", "2", "45s"), ("3", "1", "45s"), ("3", "0", "45s")]


def test_over_the_limit_is_429_before_anything_else_happens(limited, accounts, wav):
    api, fake = limited()
    api_key, item = accounts.new_key(10, rate_limit_per_minute=2)
    for _ in range(2):
        assert_ok(api.transcribe(api_key, wav))
    ledger_before = accounts.ledger(item)
    for method, path, body in (
        ("POST", "/v1/audio/transcriptions", wav),
        ("GET", "/v1/models", b""),
        ("GET", "/v1/usage", b""),
        ("POST", "/v1/audio/translations", b"not even audio"),
    ):
        reply = api.call(
            method,
            path,
            api_key=api_key,
            body=body,
            content_type="multipart/form-data; boundary=x" if method == "POST" else None,
        )
        error = assert_error(reply, 429, "rate_limit_exceeded", error_type="rate_limit_error")
        assert "2 requests per minute" in error["message"]
        assert reply.header("retry-after") == "45"
        assert limits(reply) == ("2", "0", "45s")
    assert fake.calls == 2  # the refused transcription never reached the model ...
    assert accounts.ledger(item) == ledger_before  # ... nor reserved anything
    assert accounts.balance(item) == 8


def test_the_next_window_starts_afresh(limited, accounts, wav, clock):
    api, _ = limited()
    api_key, _ = accounts.new_key(10, rate_limit_per_minute=1)
    assert_ok(api.call("GET", "/v1/models", api_key=api_key))
    clock.now = WINDOW_START + WINDOW_SECONDS - 0.5  # the last half second of the same window
    refused = api.call("GET", "/v1/models", api_key=api_key)
    assert_error(refused, 429, "rate_limit_exceeded")
    assert refused.header("retry-after") == "1" and refused.header("x-ratelimit-reset-requests") == "500ms"
    clock.now = WINDOW_START + WINDOW_SECONDS  # the next minute
    reply = api.call("GET", "/v1/models", api_key=api_key)
    assert_ok(reply)
    assert limits(reply) == ("1", "0", "60s")


def test_refused_requests_do_not_use_up_the_next_window(limited, accounts, clock):
    api, _ = limited()
    api_key, _ = accounts.new_key(10, rate_limit_per_minute=2)
    for _ in range(2):
        assert_ok(api.call("GET", "/v1/models", api_key=api_key))
    for _ in range(5):
        assert_error(api.call("GET", "/v1/models", api_key=api_key), 429, "rate_limit_exceeded")
    clock.now += WINDOW_SECONDS
    assert [limits(api.call("GET", "/v1/models", api_key=api_key))[1] for _ in range(2)] == ["1", "0"]


def test_each_key_has_its_own_count(limited, accounts):
    api, _ = limited()
    busy_key, _ = accounts.new_key(10, rate_limit_per_minute=1)
    other_key, _ = accounts.new_key(10, rate_limit_per_minute=1)
    assert_ok(api.call("GET", "/v1/models", api_key=busy_key))
    assert_error(api.call("GET", "/v1/models", api_key=busy_key), 429, "rate_limit_exceeded")
    reply = api.call("GET", "/v1/models", api_key=other_key)
    assert_ok(reply)
    assert limits(reply)[:2] == ("1", "0")


def test_a_key_without_its_own_limit_gets_the_templates_default(limited, accounts, function_environment):
    api, _ = limited()
    api_key, _ = accounts.new_key(10)
    reply = api.call("GET", "/v1/models", api_key=api_key)
    assert_ok(reply)
    default = function_environment["DEFAULT_RATE_LIMIT_PER_MINUTE"]
    assert default == "600"
    assert limits(reply)[:2] == (default, "599")


def test_the_deployments_default_applies_only_to_keys_without_their_own(limited, accounts):
    api, _ = limited(DEFAULT_RATE_LIMIT_PER_MINUTE="1")
    default_key, _ = accounts.new_key(10)
    generous_key, _ = accounts.new_key(10, rate_limit_per_minute=3)
    assert_ok(api.call("GET", "/v1/models", api_key=default_key))
    assert_error(api.call("GET", "/v1/models", api_key=default_key), 429, "rate_limit_exceeded")
    for _ in range(3):
        assert_ok(api.call("GET", "/v1/models", api_key=generous_key))
    assert_error(api.call("GET", "/v1/models", api_key=generous_key), 429, "rate_limit_exceeded")


def test_a_deployment_default_of_zero_means_no_limit(limited, accounts):
    api, _ = limited(DEFAULT_RATE_LIMIT_PER_MINUTE="0")
    api_key, _ = accounts.new_key(10)
    for _ in range(4):
        reply = api.call("GET", "/v1/models", api_key=api_key)
        assert_ok(reply)
        assert limits(reply) == (None, None, None)


def test_a_keys_own_limit_of_zero_is_refused_and_one_stored_before_means_the_default(limited, accounts):
    # a key's own 0 used to mean "unlimited": it is refused at creation now (tests/unit/test_key_rules.py) ...
    with pytest.raises(ValueError, match="at least 1 request per minute"):
        accounts.new_key(10, rate_limit_per_minute=0)
    # ... and a 0 stored before gets the deployment's default, not unlimited
    api, _ = limited(DEFAULT_RATE_LIMIT_PER_MINUTE="1")
    api_key, item = accounts.new_key(10)
    accounts.keys_table.update_item(
        Key={"key_hash": item.key_hash},
        UpdateExpression="SET rate_limit_per_minute = :zero",
        ExpressionAttributeValues={":zero": 0},
    )
    assert_ok(api.call("GET", "/v1/models", api_key=api_key))
    assert_error(api.call("GET", "/v1/models", api_key=api_key), 429, "rate_limit_exceeded")


def test_unauthenticated_requests_are_401_not_counted(limited, accounts):
    api, _ = limited()
    api_key, item = accounts.new_key(10, rate_limit_per_minute=1)
    accounts.revoke(item)
    for _ in range(3):
        reply = api.call("GET", "/v1/models", api_key=api_key)
        assert_error(reply, 401, "revoked_api_key")
        assert limits(reply) == (None, None, None)


def test_a_counted_request_that_fails_still_says_how_many_are_left(limited, accounts, wav):
    api, _ = limited()
    api_key, _ = accounts.new_key(0, rate_limit_per_minute=3)
    reply = api.transcribe(api_key, wav)
    assert_error(reply, 402, "insufficient_credits")
    assert limits(reply) == ("3", "2", "45s")


def test_the_counter_holds_under_concurrent_requests(rate_limits_table, accounts):
    """Ten requests of one key at once against a limit of 4: exactly 4 pass (one conditional update each)."""
    _, item = accounts.new_key(0)
    start = threading.Barrier(10)

    def acquire(_: int) -> int | None:
        # one limiter per thread, as each Lambda instance has its own
        client = boto3.session.Session().client("dynamodb")
        limiter = RateLimiter(client, rate_limits_table.name, clock=Clock(WINDOW_START + 1))
        start.wait()
        try:
            return limiter.acquire(item.key_id, 4).remaining
        except RateLimited as refused:
            assert refused.headers["Retry-After"] == "59"
            return None

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(acquire, range(10)))
    assert sorted(outcome for outcome in outcomes if outcome is not None) == [0, 1, 2, 3]
    assert outcomes.count(None) == 6
    [counter] = [
        counter
        for counter in rate_limits_table.scan(ConsistentRead=True)["Items"]
        if counter["counter_id"].startswith(item.key_id)
    ]
    assert counter["counter_id"] == f"{item.key_id}#{int(WINDOW_START)}" and int(counter["requests"]) == 4
    assert int(counter["expires_at"]) == int(WINDOW_START) + 2 * WINDOW_SECONDS  # gone by TTL after the window
