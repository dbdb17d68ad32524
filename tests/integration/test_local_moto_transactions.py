"""The local stack's moto server: a TransactWriteItems backs up the items it names, not whole tables.

moto deep-copies every table a transaction touches to roll a failed one back, so with the ledger among them each
credit change cost time in proportion to the ledger's size. ``local_stack.moto_server`` makes a transaction back up
only its own items; these tests hold it to DynamoDB's all-or-nothing on every kind of item a transaction names
(updated, put new, put over, deleted) and check that no table is copied. Counts and states, never timings.
"""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.dynamodb.models.table import Table


@pytest.fixture
def dynamodb(moto_url: str) -> Any:
    """A client of the integration tests' moto server (local_stack.moto_server.BackgroundMotoServer)."""
    return boto3.client(
        "dynamodb",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def tables(dynamodb: Any) -> tuple[str, str]:
    """A keyed table (hash key only) and a ledger-like one (hash and range), fresh for each test."""
    keys, ledger = f"keys-{uuid.uuid4().hex[:8]}", f"ledger-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(
        TableName=keys,
        KeySchema=[{"AttributeName": "key_hash", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key_hash", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.create_table(
        TableName=ledger,
        KeySchema=[
            {"AttributeName": "key_id", "KeyType": "HASH"},
            {"AttributeName": "entry_id", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "key_id", "AttributeType": "S"},
            {"AttributeName": "entry_id", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName=keys, Item={"key_hash": {"S": "a"}, "credits": {"N": "10"}})
    dynamodb.put_item(TableName=keys, Item={"key_hash": {"S": "b"}, "credits": {"N": "5"}})
    dynamodb.put_item(TableName=ledger, Item={"key_id": {"S": "k"}, "entry_id": {"S": "old"}, "credits": {"N": "1"}})
    return keys, ledger


def everything(dynamodb: Any, *table_names: str) -> dict[str, list[dict[str, Any]]]:
    return {
        name: sorted(dynamodb.scan(TableName=name)["Items"], key=lambda item: str(sorted(item.items())))
        for name in table_names
    }


def transaction(keys: str, ledger: str, *, seen_balance: int) -> list[dict[str, Any]]:
    """One of each kind of item: an update of a, a new ledger entry, an entry put over, b deleted."""
    return [
        {
            "Update": {
                "TableName": keys,
                "Key": {"key_hash": {"S": "a"}},
                "UpdateExpression": "SET credits = :new",
                "ConditionExpression": "credits = :seen",
                "ExpressionAttributeValues": {":new": {"N": "7"}, ":seen": {"N": str(seen_balance)}},
            }
        },
        {"Put": {"TableName": ledger, "Item": {"key_id": {"S": "k"}, "entry_id": {"S": "new"}}}},
        {"Put": {"TableName": ledger, "Item": {"key_id": {"S": "k"}, "entry_id": {"S": "old"}, "credits": {"N": "9"}}}},
        {"Delete": {"TableName": keys, "Key": {"key_hash": {"S": "b"}}}},
    ]


@pytest.mark.parametrize("failing_item", ["first", "last"])
def test_a_cancelled_transaction_leaves_every_item_it_named_as_it_was(dynamodb, tables, failing_item):
    keys, ledger = tables
    before = everything(dynamodb, keys, ledger)
    items = transaction(keys, ledger, seen_balance=10 if failing_item == "last" else 99)
    if failing_item == "last":  # moto applies the items before it, then finds the last one's condition false
        items[-1]["Delete"]["ConditionExpression"] = "attribute_not_exists(key_hash)"
    with pytest.raises(ClientError) as raised:
        dynamodb.transact_write_items(TransactItems=items)
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert everything(dynamodb, keys, ledger) == before


def test_a_transaction_that_names_one_item_twice_is_refused_and_changes_nothing(dynamodb, tables):
    keys, ledger = tables
    before = everything(dynamodb, keys, ledger)
    items = transaction(keys, ledger, seen_balance=10)
    items.append({"Delete": {"TableName": keys, "Key": {"key_hash": {"S": "a"}}}})
    with pytest.raises(ClientError):
        dynamodb.transact_write_items(TransactItems=items)
    assert everything(dynamodb, keys, ledger) == before


def test_a_transaction_that_holds_applies_every_item(dynamodb, tables):
    keys, ledger = tables
    dynamodb.transact_write_items(TransactItems=transaction(keys, ledger, seen_balance=10))
    assert dynamodb.get_item(TableName=keys, Key={"key_hash": {"S": "a"}})["Item"]["credits"] == {"N": "7"}
    assert "Item" not in dynamodb.get_item(TableName=keys, Key={"key_hash": {"S": "b"}})
    entries = {item["entry_id"]["S"]: item for item in dynamodb.scan(TableName=ledger)["Items"]}
    assert set(entries) == {"old", "new"} and entries["old"]["credits"] == {"N": "9"}


def test_a_transaction_copies_no_table(dynamodb, tables, monkeypatch):
    """What made a transaction's cost grow with the ledger: moto's deep copy of each table it touches."""
    keys, ledger = tables
    for index in range(50):
        dynamodb.put_item(TableName=ledger, Item={"key_id": {"S": "k"}, "entry_id": {"S": f"e{index:03d}"}})

    def refuse(*_: Any) -> None:
        raise AssertionError("a transaction deep-copied a whole table")

    monkeypatch.setattr(Table, "__deepcopy__", refuse, raising=False)
    dynamodb.transact_write_items(TransactItems=transaction(keys, ledger, seen_balance=10))
    with pytest.raises(ClientError):
        dynamodb.transact_write_items(TransactItems=transaction(keys, ledger, seen_balance=10))  # 7 now: cancelled
    assert dynamodb.get_item(TableName=keys, Key={"key_hash": {"S": "a"}})["Item"]["credits"] == {"N": "7"}


def test_a_transaction_naming_a_table_that_does_not_exist_is_refused_and_changes_nothing(dynamodb, tables):
    """Its items cannot be backed up one by one: moto's own whole-table backup rolls it back."""
    keys, _ = tables
    with pytest.raises(ClientError):
        dynamodb.transact_write_items(
            TransactItems=[
                {"Delete": {"TableName": keys, "Key": {"key_hash": {"S": "a"}}}},
                {"Delete": {"TableName": "no-such-table", "Key": {"key_hash": {"S": "a"}}}},
            ]
        )
    assert dynamodb.get_item(TableName=keys, Key={"key_hash": {"S": "a"}})["Item"]["credits"] == {"N": "10"}
