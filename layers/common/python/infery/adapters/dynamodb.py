"""What every DynamoDB store here needs: numbers as Decimals, items in the client's wire format, paging, and
telling a failed condition (a change made already, a race lost) from any other error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

CONDITIONAL_CHECK_FAILED = "ConditionalCheckFailedException"
TRANSACTION_CANCELED = "TransactionCanceledException"


def to_dynamodb(value: Any) -> Any:
    """``value`` as DynamoDB stores it: floats as Decimals (str() keeps a float's shortest spelling, 0.2 and not
    0.2000000000000000111), and no None inside a map (an absent attribute is how a missing value is stored)."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {name: to_dynamodb(item) for name, item in value.items() if item is not None}
    if isinstance(value, list):
        return [to_dynamodb(item) for item in value]
    return value


def serialize(item: dict[str, Any]) -> dict[str, Any]:
    """An item (or a key, or expression values) in the low-level client's format; None values are left out."""
    return {name: _serializer.serialize(to_dynamodb(value)) for name, value in item.items() if value is not None}


def deserialize(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in item.items()}


def pages(call: Callable[..., dict[str, Any]], **arguments: Any) -> Iterator[dict[str, Any]]:
    """Every page of a query or scan: one read stops at 1 MB, the next starts where it stopped."""
    while True:
        page = call(**arguments)
        yield page
        if "LastEvaluatedKey" not in page:
            return
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def all_items(call: Callable[..., dict[str, Any]], **arguments: Any) -> list[dict[str, Any]]:
    return [item for page in pages(call, **arguments) for item in page["Items"]]


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def is_conditional_check_failure(error: ClientError) -> bool:
    """The write's condition did not hold: the item exists already, or changed since it was read."""
    return error_code(error) == CONDITIONAL_CHECK_FAILED


def cancellation_codes(error: ClientError) -> list[str]:
    """Why each item of a cancelled transaction failed, in the order of the transaction's items."""
    return [str(reason.get("Code", "")) for reason in error.response.get("CancellationReasons", [])]


def cancelled_item(error: ClientError, index: int) -> dict[str, Any] | None:
    """The item that the ``index``-th item of a cancelled transaction found when its condition failed: DynamoDB
    returns it when that item asked for it (``ReturnValuesOnConditionCheckFailure``); None otherwise."""
    reasons = error.response.get("CancellationReasons", [])
    reason = reasons[index] if index < len(reasons) else {}
    if reason.get("Code") != "ConditionalCheckFailed" or not reason.get("Item"):
        return None
    return deserialize(reason["Item"])


def consistent_item(client: Any, table_name: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """One item read with the low-level client, consistently, as plain values; None when there is none."""
    found = client.get_item(TableName=table_name, Key=serialize(key), ConsistentRead=True).get("Item")
    return deserialize(found) if found else None
