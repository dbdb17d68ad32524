"""Requests per minute per key: a fixed one-minute window counted with one conditional DynamoDB update.

One atomic ADD per request keeps the hot path at a single write; the counter item expires by TTL.
The headers are OpenAI's, so clients that read them (and the openai SDK's retry of 429) just work.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from infery.adapters.dynamodb import deserialize, is_conditional_check_failure, serialize
from infery.domain.errors import RateLimited

WINDOW_SECONDS = 60


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

    def acquire(self, key_id: str, limit: int) -> RateLimitState | None:
        """Count one request; raise RateLimited (429) once ``limit`` were counted this minute. 0 means no limit."""
        if limit <= 0:
            return None
        now = self._clock()
        window_start = int(now // WINDOW_SECONDS * WINDOW_SECONDS)
        reset_seconds = window_start + WINDOW_SECONDS - now
        try:
            updated = self._client.update_item(
                TableName=self._table_name,
                Key=serialize({"counter_id": f"{key_id}#{window_start}"}),
                UpdateExpression="ADD requests :one SET expires_at = :expires_at",
                ConditionExpression="attribute_not_exists(requests) OR requests < :limit",
                ExpressionAttributeValues=serialize(
                    {":one": 1, ":limit": limit, ":expires_at": window_start + WINDOW_SECONDS * 2}
                ),
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if not is_conditional_check_failure(exc):
                raise
            state = RateLimitState(limit, 0, reset_seconds)
            raise RateLimited(
                f"Rate limit reached: this key may send {limit} requests per minute. Retry in "
                f"{math.ceil(reset_seconds)} s.",
                headers={"Retry-After": str(max(1, math.ceil(reset_seconds))), **state.headers()},
            ) from exc
        counted = int(deserialize(updated["Attributes"])["requests"])
        return RateLimitState(limit, max(0, limit - counted), reset_seconds)
