"""The rules of a key's credit shards (infery.domain.shards): where each lives, which one a request starts on, and
how a rebalance evens them out without making or losing a credit."""

from __future__ import annotations

import pytest
from infery.domain.keys import ApiKeyItem
from infery.domain.shards import (
    MAX_CREDIT_SHARDS,
    check_shard_count,
    evened,
    ledger_partition,
    shard_item_key,
    split_partition,
    start_shard,
)


def test_shard_0_is_the_keys_own_row_and_partition():
    assert (shard_item_key("abc", 0), ledger_partition("key_1", 0)) == ("abc", "key_1")
    assert (shard_item_key("abc", 3), ledger_partition("key_1", 3)) == ("abc#3", "key_1#3")
    assert [split_partition(value) for value in ("key_1", "key_1#3", "abc#12")] == [
        ("key_1", 0),
        ("key_1", 3),
        ("abc", 12),
    ]


def test_a_request_starts_on_the_same_shard_every_time_and_requests_spread_over_all():
    assert start_shard("req-1", 1) == 0
    assert start_shard("req-1", 16) == start_shard("req-1", 16)
    counts = [0] * 16
    for index in range(3200):
        counts[start_shard(f"req-{index}", 16)] += 1
    assert min(counts) > 150 and max(counts) < 250  # 200 each on average


@pytest.mark.parametrize(
    ("balances", "target", "need", "expected"),
    [
        ([30, 0, 0, 0], 0, 0, [9, 7, 7, 7]),  # the remainder to the target
        ([1, 2, 3, 4], 2, 0, [2, 2, 4, 2]),
        ([3, 3, 3, 3], 1, 10, [0, 10, 0, 2]),  # the target gets what it needs, from the fullest first
        ([3, 3, 3, 0], 3, 10, [3, 3, 3, 0]),  # the total is short: nothing moves
        ([0, 0], 1, 0, [0, 0]),
        ([5], 0, 5, [5]),
    ],
)
def test_a_rebalance_keeps_the_total_and_never_goes_below_zero(balances, target, need, expected):
    result = evened(balances, target, need)
    assert result == expected
    assert sum(result) == sum(balances) and min(result) >= 0


@pytest.mark.parametrize("shards", [0, -1, MAX_CREDIT_SHARDS + 1])
def test_a_shard_count_out_of_range_is_refused(shards):
    with pytest.raises(ValueError, match=f"1 to {MAX_CREDIT_SHARDS} shards"):
        check_shard_count(shards)
    with pytest.raises(ValueError):
        ApiKeyItem(key_hash="h", key_id="key_1", name="n", credits=0, created_at="2026", credit_shards=shards)


def test_a_one_shard_keys_row_is_stored_without_shard_fields_and_the_read_shard_is_never_stored():
    key = ApiKeyItem(key_hash="h", key_id="key_1", name="n", credits=0, created_at="2026", shard=0)
    assert "credit_shards" not in key.stored() and "ledger_parts" not in key.stored() and "shard" not in key.stored()
    sharded = key.model_copy(update={"credit_shards": 4, "ledger_parts": 4, "shard": 2})
    assert (sharded.stored()["credit_shards"], sharded.stored()["ledger_parts"]) == (4, 4)
    assert "shard" not in sharded.stored() and "shard" not in sharded.public_view()
