"""Requests per minute per key: a fixed one-minute window counted with one conditional DynamoDB update.

One atomic ADD per request keeps the hot path at a single write; the counter item expires by TTL.
The headers are OpenAI's, so clients that read them (and the openai SDK's retry of 429) just work.

A key with credit shards counts in as many counters (each its own partition: one counter item takes at most 1,000
writes a second), no more than its limit allows at 60 a minute each, each allowed its share of the limit, so together
they never allow more than the limit; a request whose counter is full tries one other before it is refused. Such a
key's remaining count is an estimate: its counter's remaining share times the counters.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from infery.adapters.dynamodb import deserialize, is_conditional_check_failure, serialize
from infery.domain.errors import RateLimited

WINDOW_SECONDS = 60


# Each counter of a sharded key allows at least this many requests a minute. Counters exist to spread writes past one
# item's 1,000 a second; a small limit split over many counters would refuse early (a request tries two counters,
# and with shares of one or two most are full long before the key's limit is reached).
MIN_REQUESTS_PER_COUNTER = 60


def counters_for(limit: int, shards: int) -> int:
    """How many counters a key with ``shards`` credit shards counts its ``limit`` requests a minute in."""
    return max(1, min(shards, limit // MIN_REQUESTS_PER_COUNTER))


@dataclass(frozen=True)
class RateLimitState:
    limit: int
    remaining: int
    reset_seconds: float

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": f"{self.reset_seconds:.0f}s"
            if self.reset_seconds >= 1
            else f"{self.reset_seconds * 1000:.0f}ms",
        }


class RateLimiter:
    def __init__(self, client: Any, table_name: str, clock: Callable[[], float] = time.time) -> None:
        """``client``: DynamoDB's low-level client (the one the key and credit stores use)."""
        self._client = client
        self._table_name = table_name
        self._clock = clock

    def acquire(self, key_id: str, limit: int, shards: int = 1) -> RateLimitState | None:
        """Count one request; raise RateLimited (429) once ``limit`` were counted this minute. 0 means no limit.
        ``shards``: the key's credit shards, as many counters (never more than the limit)."""
        if limit <= 0:
            return None
        now = self._clock()
        window_start = int(now // WINDOW_SECONDS * WINDOW_SECONDS)
        reset_seconds = window_start + WINDOW_SECONDS - now
        counters = counters_for(limit, shards)
        first = random.randrange(counters)
        tried = [first] if counters == 1 else [first, random.choice([c for c in range(counters) if c != first])]
        for counter in tried:
            share = limit // counters + (1 if counter < limit % counters else 0)
            counted = self._count(key_id, window_start, counter, share)
            if counted is not None:
                remaining = (share - counted) * counters if counters > 1 else limit - counted
                return RateLimitState(limit, max(0, min(limit, remaining)), reset_seconds)
        state = RateLimitState(limit, 0, reset_seconds)
        raise RateLimited(
            f"Rate limit reached: this key may send {limit} requests per minute. Retry in "
            f"{math.ceil(reset_seconds)} s.",
            headers={"Retry-After": str(max(1, math.ceil(reset_seconds))), **state.headers()},
        )

    def _count(self, key_id: str, window_start: int, counter: int, share: int) -> int | None:
        """This request counted on the counter (allowed ``share`` this window); what it counted; None when full."""
        counter_id = f"{key_id}#{window_start}" + (f"#{counter}" if counter else "")
        try:
            updated = self._client.update_item(
                TableName=self._table_name,
                Key=serialize({"counter_id": counter_id}),
                UpdateExpression="ADD requests :one SET expires_at = :expires_at",
                ConditionExpression="attribute_not_exists(requests) OR requests < :limit",
                ExpressionAttributeValues=serialize(
                    {":one": 1, ":limit": share, ":expires_at": window_start + WINDOW_SECONDS * 2}
                ),
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if not is_conditional_check_failure(exc):
                raise
            return None
        return int(deserialize(updated["Attributes"])["requests"])
