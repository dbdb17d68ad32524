"""The keys table: authentication and the operator's lifecycle of a key (the key's rules are infery.domain.keys).

Keys are read with a consistent read on every request, never cached, so a revoked key is
refused from the next request on.
"""

from __future__ import annotations

import hmac
import random
from typing import Any

from botocore.exceptions import ClientError

from infery.adapters.dynamodb import (
    TRANSACTION_CANCELED,
    all_items,
    cancellation_codes,
    consistent_item,
    deserialize,
    error_code,
    is_conditional_check_failure,
    serialize,
)
from infery.domain.clock import now_iso, parse_timestamp
from infery.domain.errors import AuthenticationFailed, InternalError, NotFound
from infery.domain.ids import key_id_for
from infery.domain.keys import (
    ApiKeyItem,
    api_key_from_authorization,
    check_key_format,
    ensure_usable,
    generate_api_key,
    hash_api_key,
    mask_api_key,
)
from infery.domain.shards import check_shard_count, shard_item_key, split_partition

KEY_ID_INDEX = "ByKeyId"
# a revoke that meets a reshard reads the key again; an operator's own two commands, so a few tries are plenty
_REVOKE_ATTEMPTS = 5


class KeyStore:
    """The keys table, through DynamoDB's low-level client: the same client the credit store uses, so a request's
    first call builds no second client and no boto3 resource (about 18 ms of a cold start's first request)."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table_name = table_name
        # key hash -> its credit shards, as last read: a sharded key is read from a random shard (each holds a copy
        # of the key's row), so its requests' reads spread over the shards' partitions as their writes do
        self._shard_counts: dict[str, int] = {}

    def _item(self, key_hash: str) -> dict[str, Any] | None:
        return consistent_item(self._client, self._table_name, {"key_hash": key_hash})

    def authenticate(self, authorization: str | None) -> ApiKeyItem:
        api_key = api_key_from_authorization(authorization)
        key_hash = hash_api_key(api_key)
        shards = self._shard_counts.get(key_hash, 1)
        shard = random.randrange(shards)
        item = self._item(shard_item_key(key_hash, shard)) if shard else None
        if item is None:  # a 1-shard key, or a shard gone since the key was set to fewer
            shard, item = 0, self._item(key_hash)
        # the lookup is by hash, so no byte of the key is compared; compare_digest keeps the last check constant-time
        if item is None or not hmac.compare_digest(split_partition(str(item.get("key_hash", "")))[0], key_hash):
            raise AuthenticationFailed(f"Incorrect API key provided: {mask_api_key(api_key)}.")
        key = ApiKeyItem.model_validate({**item, "key_hash": key_hash, "shard": shard})
        if key.credit_shards > 1:
            self._shard_counts[key_hash] = key.credit_shards
        else:
            self._shard_counts.pop(key_hash, None)
        ensure_usable(key, mask_api_key(api_key))
        return key

    def create(
        self,
        name: str,
        credits: int = 0,
        api_key: str | None = None,
        *,
        expires_at: str | None = None,
        rate_limit_per_minute: int | None = None,
        allowed_models: list[str] | None = None,
        credit_shards: int = 1,
    ) -> tuple[str, ApiKeyItem]:
        """Store a new key (a generated one unless given) and return it in clear, once.

        ``credits`` should stay 0 for real keys: top up through the credit store, so the ledger has it.
        """
        api_key = api_key or generate_api_key()
        check_key_format(api_key)
        check_shard_count(credit_shards)
        if rate_limit_per_minute is not None and rate_limit_per_minute < 1:
            raise ValueError(
                "a key's own rate limit must be at least 1 request per minute; leave it out to use the "
                "deployment's default (DefaultRateLimitPerMinute)"
            )
        if expires_at is not None:
            expires_at = parse_timestamp(expires_at).isoformat(timespec="milliseconds")
        key_hash = hash_api_key(api_key)
        item = ApiKeyItem(
            key_hash=key_hash,
            key_id=key_id_for(key_hash),
            name=name,
            credits=credits,
            created_at=now_iso(),
            expires_at=expires_at,
            rate_limit_per_minute=rate_limit_per_minute,
            allowed_models=allowed_models or None,
            credit_shards=credit_shards,
            ledger_parts=credit_shards,
        )
        try:
            if credit_shards == 1:
                self._client.put_item(
                    TableName=self._table_name,
                    Item=serialize(item.stored()),
                    ConditionExpression="attribute_not_exists(key_hash)",
                )
            else:
                # the key's row and a copy per further shard, all or none
                self._client.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": self._table_name,
                                "Item": serialize(
                                    {
                                        **item.stored(),
                                        "key_hash": shard_item_key(key_hash, shard),
                                        "credits": item.credits if shard == 0 else 0,
                                    }
                                ),
                                "ConditionExpression": "attribute_not_exists(key_hash)",
                            }
                        }
                        for shard in range(credit_shards)
                    ]
                )
        except ClientError as exc:
            if is_conditional_check_failure(exc) or "ConditionalCheckFailed" in str(exc):
                raise ValueError("this key exists already") from exc
            raise
        return api_key, item

    def get(self, key_id: str) -> ApiKeyItem:
        response = self._client.query(
            TableName=self._table_name,
            IndexName=KEY_ID_INDEX,
            KeyConditionExpression="key_id = :key_id",
            ExpressionAttributeValues=serialize({":key_id": key_id}),
        )
        # the index is eventually consistent: read the row itself for the current balance and status (a sharded key's
        # shards carry its key_id too: any of them names the key's own row)
        key_hash = split_partition(deserialize(response["Items"][0])["key_hash"])[0] if response["Items"] else None
        item = self._item(key_hash) if key_hash else None
        if item is None:
            raise NotFound(f"No key has the id '{key_id}'.", param="key_id", code="key_not_found")
        return ApiKeyItem.model_validate(item)

    def get_by_hash(self, key_hash: str) -> ApiKeyItem | None:
        item = self._item(key_hash)
        return ApiKeyItem.model_validate(item) if item else None

    def list(self) -> list[ApiKeyItem]:
        """Every key, each with its total balance (a sharded key's shards added up, as scanned)."""
        items = [deserialize(item) for item in all_items(self._client.scan, TableName=self._table_name)]
        totals: dict[str, int] = {}
        for item in items:
            key_hash = split_partition(item["key_hash"])[0]
            totals[key_hash] = totals.get(key_hash, 0) + int(item.get("credits", 0))
        rows = [item for item in items if split_partition(item["key_hash"])[1] == 0]  # not the shards' copies
        return sorted(
            (ApiKeyItem.model_validate({**row, "credits": totals[row["key_hash"]]}) for row in rows),
            key=lambda key: key.created_at,
        )

    def revoke(self, key_id: str) -> ApiKeyItem:
        """Revoke the key; a sharded key's copies with it, in one transaction (any of them may authenticate it)."""
        for _attempt in range(_REVOKE_ATTEMPTS):
            key = self.get(key_id)
            if key.credit_shards == 1 or self._revoke_shards(key):
                break
        else:
            raise InternalError("The key's shards kept changing while it was revoked; it was not revoked. Retry.")
        return self._revoke_row(key) if key.credit_shards == 1 else self.get(key_id)

    def _revoke_row(self, key: ApiKeyItem) -> ApiKeyItem:
        updated = self._client.update_item(
            **self._revocation(), Key=serialize({"key_hash": key.key_hash}), ReturnValues="ALL_NEW"
        )
        return ApiKeyItem.model_validate(deserialize(updated["Attributes"]))

    def _revocation(self) -> dict[str, Any]:
        return {
            "TableName": self._table_name,
            "UpdateExpression": "SET #status = :revoked, revoked_at = :now",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": serialize({":revoked": "revoked", ":now": now_iso()}),
        }

    def _revoke_shards(self, key: ApiKeyItem) -> bool:
        """Every shard revoked in one transaction; False when one is gone (the key was resharded since it was read):
        an update without that condition would create a half item under the shard's key."""
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            **self._revocation(),
                            "Key": serialize({"key_hash": shard_item_key(key.key_hash, shard)}),
                            "ConditionExpression": "attribute_exists(key_hash)",
                        }
                    }
                    for shard in range(key.credit_shards)
                ]
            )
        except ClientError as error:
            if error_code(error) != TRANSACTION_CANCELED or "ConditionalCheckFailed" not in cancellation_codes(error):
                raise
            return False
        finally:
            self._shard_counts.pop(key.key_hash, None)
        return True
