"""Keys as the README documents them (the checksum written out from its description, not taken from the code), and a
keys table in memory for the KeyStore's unit tests."""

from __future__ import annotations

import string
import zlib
from typing import Any

import pytest
from botocore.exceptions import ClientError
from infery.adapters.key_store import KeyStore

from tests.support.fakes import LowLevelDynamoDB

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def spec_checksum(random_part: str) -> str:
    """The documented checksum: CRC-32 of the 40 random characters, as 6 base62 digits (0-9A-Za-z), big-endian."""
    value = zlib.crc32(random_part.encode())
    assert value < 62**6  # six base62 digits hold any CRC-32
    digits = ""
    for _ in range(6):
        value, remainder = divmod(value, 62)
        digits = BASE62[remainder] + digits
    return digits


def conditional_check_failed(operation: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": "ConditionalCheckFailedException", "Message": "The conditional request failed"}}, operation
    )


class FakeKeysTable:
    """The DynamoDB Table calls KeyStore makes, over a dict; scan pages ``page_size`` items at a time."""

    def __init__(self, page_size: int = 2) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.page_size = page_size
        self.reads = 0

    def put_item(self, Item: dict[str, Any], ConditionExpression: str | None = None) -> None:  # noqa: N803 - boto3's names
        if ConditionExpression is not None and Item["key_hash"] in self.items:
            raise conditional_check_failed("PutItem")
        self.items[Item["key_hash"]] = dict(Item)

    def get_item(self, Key: dict[str, Any], ConsistentRead: bool = False) -> dict[str, Any]:  # noqa: N803
        self.reads += 1
        item = self.items.get(Key["key_hash"])
        return {"Item": dict(item)} if item else {}

    def query(
        self,
        IndexName: str,  # noqa: N803
        KeyConditionExpression: str,  # noqa: N803
        ExpressionAttributeValues: dict[str, Any],  # noqa: N803
    ) -> dict[str, Any]:
        assert (IndexName, KeyConditionExpression) == ("ByKeyId", "key_id = :key_id")
        wanted = ExpressionAttributeValues[":key_id"]
        # the index projects the keys only
        return {
            "Items": [
                {"key_hash": item["key_hash"], "key_id": item["key_id"]}
                for item in self.items.values()
                if item["key_id"] == wanted
            ]
        }

    def scan(self, ExclusiveStartKey: dict[str, Any] | None = None) -> dict[str, Any]:  # noqa: N803
        hashes = list(self.items)
        start = hashes.index(ExclusiveStartKey["key_hash"]) + 1 if ExclusiveStartKey else 0
        page = hashes[start : start + self.page_size]
        response: dict[str, Any] = {"Items": [dict(self.items[key_hash]) for key_hash in page]}
        if start + self.page_size < len(hashes):
            response["LastEvaluatedKey"] = {"key_hash": page[-1]}
        return response

    def update_item(  # boto3's argument names
        self,
        Key: dict[str, Any],  # noqa: N803
        UpdateExpression: str,  # noqa: N803
        ExpressionAttributeNames: dict[str, str],  # noqa: N803
        ExpressionAttributeValues: dict[str, Any],  # noqa: N803
        ReturnValues: str,  # noqa: N803
    ) -> dict[str, Any]:
        assert UpdateExpression.startswith("SET ") and ReturnValues == "ALL_NEW"
        item = self.items[Key["key_hash"]]
        for assignment in UpdateExpression[4:].split(","):
            name, value = (part.strip() for part in assignment.split("="))
            item[ExpressionAttributeNames.get(name, name)] = ExpressionAttributeValues[value]
        return {"Attributes": dict(item)}


def refused_by_create(match: str, name: str = "dev", **policy: Any) -> ValueError:
    """KeyStore.create over an empty keys table refuses the key with a ValueError matching ``match`` and writes
    nothing; the error, for what a test checks further."""
    table = FakeKeysTable()
    with pytest.raises(ValueError, match=match) as raised:
        KeyStore(LowLevelDynamoDB(table), "keys").create(name, 0, **policy)
    assert table.items == {}
    return raised.value
