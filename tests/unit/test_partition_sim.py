"""The DynamoDB partition simulation (benchmarks/dynamodb_partition_sim.py) run small: a few hundred simulated requests
through the real stores and use case, its throttles shaped as DynamoDB's, and checks that can fail."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from infery.adapters.dynamodb import serialize

from benchmarks import dynamodb_partition_sim as sim


def test_a_small_run_through_the_real_use_case_keeps_the_books_and_every_shard_above_zero():
    result = sim.run(4, [100, 200], seconds_per_step=1.0)
    assert result.problems == []
    assert [(offered, succeeded, failed) for offered, succeeded, failed, _ in result.steps] == [
        (100, 100, 0),
        (200, 200, 0),
    ]
    assert result.sustained == 200


def test_the_books_check_fails_when_a_credit_is_written_past_the_ledger():
    result = sim.run(2, [50], seconds_per_step=1.0, sabotage="books")
    assert result.problems == ["the books do not balance: ledger -50, balance -49"]


def test_the_checks_see_a_shard_below_zero():
    result = sim.run(2, [50], seconds_per_step=1.0, sabotage="negative")
    assert len(result.problems) == 1 and result.problems[0].startswith("a shard went below zero")


def test_a_key_running_out_is_refused_and_never_overdrawn():
    result = sim.run(2, [50], seconds_per_step=1.0, balance=40)
    assert result.problems == []  # 40 requests served, 10 refused (402)
    assert [(succeeded, failed) for _, succeeded, failed, _ in result.steps] == [(40, 10)]


def test_one_shard_cannot_sustain_what_four_can():
    one = sim.run(1, [400], seconds_per_step=1.0)
    four = sim.run(4, [400], seconds_per_step=1.0)
    assert one.sustained == 0 and one.throttled > 0  # its one balance item is over a partition's write units
    assert four.sustained == 400 and four.problems == one.problems == []


def client() -> sim.PartitionedDynamoDB:
    return sim.PartitionedDynamoDB(sim.SimClock(), sim.Meter())


def test_a_partition_over_its_read_units_is_refused_as_dynamodb_refuses_it_once_the_sdk_gives_up():
    fake = client()
    for second in range(0, 200):
        fake.meter.units[(sim.KEYS, "hot", "read", second)] = sim.READ_UNITS_PER_SECOND
    with pytest.raises(ClientError) as raised:
        fake.get_item(TableName=sim.KEYS, Key=serialize({"key_hash": "hot"}), ConsistentRead=True)
    assert raised.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert raised.value.response["ThrottlingReasons"][0]["reason"] == "KeyRangeThroughputExceeded"
    assert fake.meter.throttled == sim.SDK_ATTEMPTS  # the SDK tried as often as boto3's legacy mode does


def test_a_transaction_over_a_partitions_write_units_is_cancelled_with_a_throttling_reason():
    fake = client()
    fake.meter.units[(sim.KEYS, "hot", "write", 0)] = sim.WRITE_UNITS_PER_SECOND - 1  # a transaction item costs 2
    items = [
        {
            "Put": {
                "TableName": sim.RESERVATIONS,
                "Item": serialize({"request_id": "r"}),
                "ConditionExpression": "attribute_not_exists(request_id)",
            }
        },
        {
            "Update": {
                "TableName": sim.KEYS,
                "Key": serialize({"key_hash": "hot"}),
                "UpdateExpression": "SET credits = :new_balance",
                "ConditionExpression": "credits = :seen_balance",
                "ExpressionAttributeValues": serialize({":new_balance": 1, ":seen_balance": 0}),
            }
        },
    ]
    with pytest.raises(ClientError) as raised:
        fake.transact_write_items(TransactItems=items)
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert [reason["Code"] for reason in raised.value.response["CancellationReasons"]] == ["None", "ThrottlingError"]
    assert fake.tables[sim.RESERVATIONS] == {}  # nothing written


def test_a_request_the_stores_never_send_is_refused():
    with pytest.raises(KeyError):
        client().update_item(
            TableName=sim.KEYS,
            Key=serialize({"key_hash": "k"}),
            UpdateExpression="REMOVE credits",
            ConditionExpression="attribute_exists(key_hash)",
            ExpressionAttributeValues={},
        )
