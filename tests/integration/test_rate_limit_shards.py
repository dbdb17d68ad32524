"""A sharded key's rate limit, counted in as many counters as it has shards (the template's RateLimitsTable in moto,
through the real handler): never more than the limit in a minute, refused only when two counters are full, and
headers that say the limit, an estimate of what remains, and the reset."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from boto3.dynamodb.conditions import Attr
from infery.adapters.rate_limits import RateLimiter
from infery.domain.errors import RateLimited

from tests.support.api import Clock, assert_error, assert_ok
from tests.support.model_replies import model_answer

WINDOW_START = 1_800_000_000.0  # a minute boundary


@pytest.fixture
def table(function_environment):
    return boto3.resource("dynamodb").Table(function_environment["RATE_LIMITS_TABLE_NAME"])


def counted(table, key_id: str) -> dict[str, int]:
    items = table.scan(FilterExpression=Attr("counter_id").begins_with(f"{key_id}#"), ConsistentRead=True)["Items"]
    return {item["counter_id"]: int(item["requests"]) for item in items}


def test_a_sharded_keys_requests_are_counted_on_its_counters_and_never_past_its_limit(accounts, table):
    _, key = accounts.new_key(0, credit_shards=4)
    limiter = RateLimiter(boto3.client("dynamodb"), table.name, clock=Clock(WINDOW_START + 10))

    def one(_: int) -> str:
        try:
            limiter.acquire(key.key_id, 240, shards=4)
        except RateLimited:
            return "refused"
        return "counted"

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(one, range(300)))
    counters = counted(table, key.key_id)
    # 4 counters of 60: together the limit, and no more
    assert set(counters) <= {f"{key.key_id}#{int(WINDOW_START)}" + suffix for suffix in ("", "#1", "#2", "#3")}
    assert sum(counters.values()) == outcomes.count("counted") <= 240
    assert all(count <= 60 for count in counters.values())
    # a request is refused only when the two counters it tried were full: most of the limit is used
    assert outcomes.count("counted") >= 216


@pytest.mark.parametrize(("limit", "shards", "counters"), [(3, 8, 1), (10, 1, 1), (130, 8, 2), (100, 64, 1)])
def test_a_key_has_a_counter_per_60_requests_a_minute_at_most_and_no_more_than_its_shards(
    accounts, table, limit, shards, counters
):
    _, key = accounts.new_key(0, credit_shards=shards)
    limiter = RateLimiter(boto3.client("dynamodb"), table.name, clock=Clock(WINDOW_START + 20))
    for _ in range(limit * 3):
        try:
            limiter.acquire(key.key_id, limit, shards=shards)
        except RateLimited:
            pass
    assert len(counted(table, key.key_id)) == counters
    # counted one after the other, the whole limit is used: no counter full while another has room is refused early
    assert sum(counted(table, key.key_id).values()) == limit


def test_the_handler_counts_a_sharded_key_on_its_counters_and_says_so_in_openais_headers(
    fake_runtime, load_api, accounts, table, wav
):
    url, _ = fake_runtime(200, model_answer(4.2))
    api = load_api(url)
    wiring = api.module.wiring
    wiring.rate_limiter = RateLimiter(wiring.dynamodb_client, table.name, clock=Clock(WINDOW_START + 15))
    api_key, key = accounts.new_key(20, credit_shards=4, rate_limit_per_minute=8)
    replies = [api.call("GET", "/v1/models", api_key=api_key) for _ in range(12)]
    answered = [reply for reply in replies if reply.status == 200]
    refused = [reply for reply in replies if reply.status == 429]
    assert len(answered) + len(refused) == 12 and 6 <= len(answered) <= 8
    for reply in answered:
        assert_ok(reply)
        assert reply.header("x-ratelimit-limit-requests") == "8"
        assert 0 <= int(reply.header("x-ratelimit-remaining-requests")) <= 8
        assert reply.header("x-ratelimit-reset-requests") == "45s"
    for reply in refused:
        assert_error(reply, 429, "rate_limit_exceeded")
        assert reply.header("x-ratelimit-remaining-requests") == "0"
    assert sum(counted(table, key.key_id).values()) == len(answered)
