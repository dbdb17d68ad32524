"""A key's credits in shards: where each shard lives, which one a reservation takes from, and how they are evened out.

DynamoDB gives one partition at most 1,000 write units a second, and every credit change is a transaction (2 units
per item) on the key's balance and on its ledger: one item holds a key to a few hundred requests a second. A key with
``credit_shards`` N > 1 keeps its balance in N items (shard 0 is the key's own row, shard i its copy under
``<key_hash>#i``) and its ledger in N partitions (``<key_id>`` and ``<key_id>#i``), so its requests spread over N
partitions. A 1-shard key is stored exactly as before.

The rules here are the only ones: the DynamoDB credit store, the tests' in-memory store and the partition simulation
(benchmarks) all apply them.
"""

from __future__ import annotations

import zlib

# A rebalance rewrites every shard in one transaction, and a transaction holds at most 100 items.
MAX_CREDIT_SHARDS = 100

_SEPARATOR = "#"


def shard_item_key(key_hash: str, shard: int) -> str:
    """The keys table's partition key of a shard: the key's own row for shard 0."""
    return key_hash if shard == 0 else f"{key_hash}{_SEPARATOR}{shard}"


def ledger_partition(key_id: str, shard: int) -> str:
    """The ledger table's partition key (its ``key_id`` attribute) of a shard's entries."""
    return key_id if shard == 0 else f"{key_id}{_SEPARATOR}{shard}"


def split_partition(value: str) -> tuple[str, int]:
    """``ledger_partition`` or ``shard_item_key`` read back: (the key's own id or hash, the shard)."""
    base, _, shard = value.partition(_SEPARATOR)
    return base, int(shard) if shard else 0


def start_shard(request_id: str, shards: int) -> int:
    """The shard a request tries first: spread evenly over the shards (so concurrent requests rarely meet on one),
    and the same for the same request id, so a reservation retried after it closed meets its own ledger entry."""
    return zlib.crc32(request_id.encode()) % shards if shards > 1 else 0


def check_shard_count(shards: int) -> None:
    if not 1 <= shards <= MAX_CREDIT_SHARDS:
        raise ValueError(f"a key's credits are kept in 1 to {MAX_CREDIT_SHARDS} shards, not {shards}")


def evened(balances: list[int], target: int = 0, need: int = 0) -> list[int]:
    """The shards' balances after a rebalance: the same total, split evenly (the remainder to ``target``), and
    ``target`` holding at least ``need`` when the total has it, taken from the fullest shards first. Returns the
    balances unchanged when the total is short of ``need`` (nothing to gain by moving credits)."""
    total = sum(balances)
    if total < need:
        return list(balances)
    count = len(balances)
    share, remainder = divmod(total, count)
    result = [share] * count
    result[target] += remainder
    shortfall = need - result[target]
    for shard in sorted(range(count), key=lambda index: -result[index]):
        if shortfall <= 0:
            break
        if shard == target:
            continue
        moved = min(shortfall, result[shard])
        result[shard] -= moved
        result[target] += moved
        shortfall -= moved
    return result
