"""rate_limits: OpenAI's x-ratelimit-* headers, and RateLimiter's logic over a fake counter table.

How DynamoDB itself counts (the conditional ADD under concurrency) is tested in integration, against moto.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from infery.adapters.rate_limits import WINDOW_SECONDS, RateLimiter, RateLimitState
from infery.domain.errors import RateLimited

from tests.support.fakes import LowLevelDynamoDB


@pytest.mark.parametrize(
    ("state", "limit", "remaining", "reset"),
    [
        (RateLimitState(600, 599, 12.0), "600", "599", "12s"),
        (RateLimitState(10, 0, 0.5), "10", "0", "500ms"),
        (RateLimitState(1, 1, 60.0), "1", "1", "60s"),
        (RateLimitState(5, 2, 1.0), "5", "2", "1s"),  # a second is written in seconds
        (RateLimitState(5, 2, 0.02), "5", "2", "20ms"),
        (RateLimitState(5, 2, 41.7), "5", "2", "42s"),  # whole seconds, rounded
    ],
)
def test_given_a_state_then_its_headers_are_openais(state, limit, remaining, reset):
    assert state.headers() == {
        "x-ratelimit-limit-requests": limit,
        "x-ratelimit-remaining-requests": remaining,
        "x-ratelimit-reset-requests": reset,
    }


def test_given_any_state_then_the_reset_header_is_whole_seconds_or_whole_milliseconds():
    for tenths_of_ms in range(1, 600_000, 997):
        header = RateLimitState(10, 3, tenths_of_ms / 10_000).headers()["x-ratelimit-reset-requests"]
        number, unit = (header[:-2], "ms") if header.endswith("ms") else (header[:-1], "s")
        assert number.isdigit(), header
        assert int(number) * (0.001 if unit == "ms" else 1) == pytest.approx(tenths_of_ms / 10_000, abs=0.5), header


class _UntouchableTable:
    def __getattr__(self, name: str):
        raise AssertionError(f"the rate limits table was used ({name}) though the key has no limit")


@pytest.mark.parametrize("limit", [0, -1])
def test_given_a_limit_of_zero_then_no_limit_applies_and_the_table_is_not_touched(limit):
    limiter = RateLimiter(LowLevelDynamoDB(_UntouchableTable()), "rate-limits", clock=lambda: 1_000.0)
    assert limiter.acquire("key_0123456789abcdef", limit) is None


class _CounterTable:
    """One update_item, answering with a given count or a given DynamoDB error; it records the call."""

    def __init__(self, requests_after: int | None = None, error_code: str | None = None) -> None:
        self.requests_after = requests_after
        self.error_code = error_code
        self.calls: list[dict] = []

    def update_item(self, **arguments) -> dict:
        self.calls.append(arguments)
        if self.error_code:
            raise ClientError({"Error": {"Code": self.error_code, "Message": "refused"}}, "UpdateItem")
        return {"Attributes": {"requests": self.requests_after}}


def test_given_a_request_within_the_limit_then_the_state_counts_it_and_the_window_resets_on_the_minute():
    table = _CounterTable(requests_after=3)
    # Given a clock 15.25 s into the minute that starts at 1 200 s
    state = RateLimiter(LowLevelDynamoDB(table), "rate-limits", clock=lambda: 1_215.25).acquire("key_a", 10)
    assert state == RateLimitState(limit=10, remaining=7, reset_seconds=pytest.approx(44.75))
    (call,) = table.calls
    assert call["Key"] == {"counter_id": "key_a#1200"}  # one counter per key per minute
    assert call["ExpressionAttributeValues"][":limit"] == 10
    assert call["ExpressionAttributeValues"][":expires_at"] > 1_260  # outlives its window, then expires by TTL


def test_given_two_keys_or_two_minutes_then_they_count_on_different_counters():
    table = _CounterTable(requests_after=1)
    RateLimiter(LowLevelDynamoDB(table), "rate-limits", clock=lambda: 1_259.999).acquire("key_a", 10)
    RateLimiter(LowLevelDynamoDB(table), "rate-limits", clock=lambda: 1_260.0).acquire("key_a", 10)
    RateLimiter(LowLevelDynamoDB(table), "rate-limits", clock=lambda: 1_260.0).acquire("key_b", 10)
    assert [call["Key"]["counter_id"] for call in table.calls] == ["key_a#1200", "key_a#1260", "key_b#1260"]


def test_given_the_last_allowed_request_then_none_remain_and_it_is_not_refused():
    state = RateLimiter(
        LowLevelDynamoDB(_CounterTable(requests_after=10)), "rate-limits", clock=lambda: 1_230.0
    ).acquire("key_a", 10)
    assert (state.remaining, state.headers()["x-ratelimit-remaining-requests"]) == (0, "0")


def test_given_the_counter_at_its_limit_then_429_with_retry_after_and_openais_headers():
    table = _CounterTable(error_code="ConditionalCheckFailedException")
    with pytest.raises(RateLimited) as raised:
        RateLimiter(LowLevelDynamoDB(table), "rate-limits", clock=lambda: 1_217.4).acquire(
            "key_a", 10
        )  # 42.6 s before the next minute
    error = raised.value
    assert (error.status_code, error.error_type, error.code) == (429, "rate_limit_error", "rate_limit_exceeded")
    assert error.headers["Retry-After"] == "43"  # whole seconds, rounded up: never too early
    assert error.headers["x-ratelimit-limit-requests"] == "10"
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.headers["x-ratelimit-reset-requests"] == "43s"
    assert "10 requests per minute" in error.message


def test_given_the_counter_at_its_limit_in_the_windows_last_moment_then_retry_after_is_at_least_a_second():
    table = _CounterTable(error_code="ConditionalCheckFailedException")
    with pytest.raises(RateLimited) as raised:
        RateLimiter(LowLevelDynamoDB(table), "rate-limits", clock=lambda: 1_200.0 + WINDOW_SECONDS - 0.0004).acquire(
            "key_a", 10
        )
    assert raised.value.headers["Retry-After"] == "1"


@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "ResourceNotFoundException"])
def test_given_another_dynamodb_error_then_it_is_not_disguised_as_a_429(code):
    with pytest.raises(ClientError, match=code):
        RateLimiter(LowLevelDynamoDB(_CounterTable(error_code=code)), "rate-limits", clock=lambda: 1_200.0).acquire(
            "key_a", 10
        )
