"""Pricing and the atomic charge of a key's credits, with its ledger entry."""

from __future__ import annotations

import math
import random
import time
from decimal import Decimal
from typing import Any, Literal

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError
from pydantic import BaseModel

from .errors import AuthenticationFailed, InsufficientCredits, InternalError
from .keys import ApiKeyItem, now_iso

_serializer = TypeSerializer()
_MAX_CHARGE_ATTEMPTS = 20


class Pricing(BaseModel):
    seconds_per_credit: float
    min_credits_per_request: int

    def credits_for(self, audio_seconds: float) -> int:
        # a small tolerance so 10.0000001 s of float noise is not billed as a started third block
        started_blocks = math.ceil(audio_seconds / self.seconds_per_credit - 1e-6)
        return max(self.min_credits_per_request, started_blocks)


class LedgerEntry(BaseModel):
    """One row of the append-only ledger. ``credits`` is signed: negative when spent."""

    key_id: str
    entry_id: str
    kind: Literal["charge", "topup"]
    request_id: str
    model: str | None = None
    audio_seconds: float | None = None
    credits: int
    balance_after: int
    created_at: str


def _dynamodb_value(value: Any) -> Any:
    # DynamoDB numbers are decimals; str() keeps a float's shortest exact spelling (12.5, not 12.4999...)
    return Decimal(str(value)) if isinstance(value, float) else value


def _serialize(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(_dynamodb_value(value)) for name, value in item.items() if value is not None}


def _cancellation_codes(error: ClientError) -> list[str]:
    return [reason.get("Code", "") for reason in error.response.get("CancellationReasons", [])]


class CreditStore:
    """Balances live on the key item; every change writes a ledger entry in the same transaction.

    The update is conditional on the balance we read (optimistic concurrency), so the ledger's
    balance_after is exact and the balance can never go below zero, however many requests race.
    """

    def __init__(self, client: Any, keys_table_name: str, ledger_table_name: str) -> None:
        self._client = client
        self._keys_table = keys_table_name
        self._ledger_table = ledger_table_name

    def balance(self, key_hash: str) -> int:
        item = self._client.get_item(TableName=self._keys_table, Key=_serialize({"key_hash": key_hash}),
                                     ConsistentRead=True, ProjectionExpression="credits").get("Item")
        return int(item["credits"]["N"]) if item else 0

    def charge(self, key: ApiKeyItem, credits: int, *, request_id: str, model: str, audio_seconds: float) -> int:
        """Take ``credits`` from the key; return the balance after. Charging one request_id twice is a no-op."""
        return self._apply(key, -credits, kind="charge", request_id=request_id, model=model,
                           audio_seconds=audio_seconds)

    def top_up(self, key: ApiKeyItem, credits: int, *, request_id: str) -> int:
        return self._apply(key, credits, kind="topup", request_id=request_id)

    def _apply(self, key: ApiKeyItem, delta: int, *, kind: Literal["charge", "topup"], request_id: str,
               model: str | None = None, audio_seconds: float | None = None) -> int:
        current = key.credits
        for attempt in range(_MAX_CHARGE_ATTEMPTS):
            new_balance = current + delta
            if new_balance < 0:
                raise InsufficientCredits(
                    f"This request costs {-delta} credits but the key's balance is {current}. Top up the key's "
                    "credits to continue.", headers={"x-infery-credits-balance": str(current)})
            entry = LedgerEntry(key_id=key.key_id, entry_id=f"{request_id}#{kind}", kind=kind,
                                request_id=request_id, model=model, audio_seconds=audio_seconds, credits=delta,
                                balance_after=new_balance, created_at=now_iso())
            try:
                self._client.transact_write_items(TransactItems=[
                    {"Update": {
                        "TableName": self._keys_table,
                        "Key": _serialize({"key_hash": key.key_hash}),
                        "UpdateExpression": "SET credits = :new_balance",
                        "ConditionExpression": "credits = :seen_balance AND #status = :active",
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": _serialize(
                            {":new_balance": new_balance, ":seen_balance": current, ":active": "active"}),
                    }},
                    {"Put": {
                        "TableName": self._ledger_table,
                        "Item": _serialize(entry.model_dump()),
                        "ConditionExpression": "attribute_not_exists(entry_id)",
                    }},
                ])
                return new_balance
            except ClientError as error:
                if error.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                codes = _cancellation_codes(error)
                if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
                    return self.balance(key.key_hash)  # this request_id was already applied: never twice
                # another request changed the balance (or the key was revoked) since we read it
                time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** attempt)))
                current = self._current_active_balance(key)
        raise InternalError("The credit balance is too contended to update right now; nothing was charged. "
                            "Retry the request.")

    def _current_active_balance(self, key: ApiKeyItem) -> int:
        item = self._client.get_item(TableName=self._keys_table, Key=_serialize({"key_hash": key.key_hash}),
                                     ConsistentRead=True).get("Item")
        if not item or item["status"]["S"] != "active":
            raise AuthenticationFailed("This key was revoked while the request ran; nothing was charged.")
        return int(item["credits"]["N"])
