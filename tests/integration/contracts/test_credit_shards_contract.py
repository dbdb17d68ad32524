"""A key's credits in shards: FakeCredits and the CreditStore on moto agree on where a sharded key's credits go
(tests/integration/contracts)."""

from __future__ import annotations

import uuid

import pytest
from infery.domain.errors import InsufficientCredits
from infery.domain.ledger import LedgerKind
from infery.domain.shards import start_shard


def request_id() -> str:
    return f"req-{uuid.uuid4().hex}"


def request_on(shard: int, shards: int) -> str:
    """A request id whose credits come from ``shard`` first."""
    while start_shard(candidate := request_id(), shards) != shard:
        pass
    return candidate


def test_a_sharded_keys_top_up_is_spread_evenly_and_its_balance_is_the_total(credits_world):
    key = credits_world.new_key(0, shards=4)
    topup = request_id()
    assert credits_world.credits.top_up(key, 30, request_id=topup) == 30
    assert credits_world.credits.shard_balances(key.key_hash) == [9, 7, 7, 7]
    assert credits_world.credits.balance(key.key_hash) == 30
    # the top-up itself is one entry, on shard 0: moving credits between shards changes no balance of the key
    [entry] = credits_world.credits.entries_for_request(key.key_id, topup, parts=4)
    assert (entry.kind, entry.credits, entry.shard) == (LedgerKind.TOPUP, 30, None)


def test_a_reservation_takes_from_its_shard_and_the_settle_gives_back_there(credits_world):
    key = credits_world.new_key(40, shards=4)
    request = request_on(2, 4)
    reservation = credits_world.credits.reserve(key, 6, request_id=request, model="whisper-1")
    assert reservation.shard == 2
    assert credits_world.credits.shard_balances(key.key_hash) == [10, 10, 4, 10]
    charge = credits_world.credits.settle(reservation, 2, audio_seconds=8.0)
    # the client is told the key's total; the ledger tells each shard's balance
    assert (charge.billed_credits, charge.balance_after) == (2, 38)
    assert credits_world.credits.shard_balances(key.key_hash) == [10, 10, 8, 10]
    entries = credits_world.credits.entries_for_request(key.key_id, request, parts=4)
    assert [(entry.kind.value, entry.credits, entry.balance_after, entry.shard) for entry in entries] == [
        ("reserve", -6, 4, 2),
        ("settle", 4, 8, 2),
    ]
    assert {entry.key_id for entry in entries} == {key.key_id}


def test_a_refund_goes_back_to_the_reservations_shard_and_returns_the_total(credits_world):
    key = credits_world.new_key(40, shards=4)
    reservation = credits_world.credits.reserve(key, 6, request_id=request_on(3, 4), model="whisper-1")
    assert credits_world.credits.refund(reservation, reason="the model failed") == 40
    assert credits_world.credits.shard_balances(key.key_hash) == [10, 10, 10, 10]
    assert credits_world.credits.refund(reservation, reason="the model failed") is None


def test_a_shard_short_of_the_reservation_is_filled_from_the_others(credits_world):
    key = credits_world.new_key(12, shards=4)  # 3 on each shard
    reservation = credits_world.credits.reserve(key, 10, request_id=request_on(1, 4), model="whisper-1")
    assert reservation.shard == 1
    balances = credits_world.credits.shard_balances(key.key_hash)
    assert sum(balances) == 2 and min(balances) >= 0
    assert balances[1] == 0


@pytest.mark.parametrize("balance", [0, 9])
def test_a_sharded_key_short_in_total_is_402_with_its_total_and_nothing_moves(credits_world, balance):
    key = credits_world.new_key(balance, shards=4)
    before = credits_world.credits.shard_balances(key.key_hash)
    request = request_id()
    with pytest.raises(InsufficientCredits) as raised:
        credits_world.credits.reserve(key, 10, request_id=request, model="whisper-1")
    assert raised.value.headers == {"x-infery-credits-balance": str(balance)}
    assert credits_world.credits.shard_balances(key.key_hash) == before
    assert credits_world.credits.entries_for_request(key.key_id, request, parts=4) == []
    assert credits_world.credits.reservation(request) is None


def test_a_sharded_key_is_used_to_within_one_price_of_its_total(credits_world):
    key = credits_world.new_key(50, shards=4)
    taken = 0
    for _ in range(20):
        try:
            credits_world.credits.reserve(key, 7, request_id=request_id(), model="whisper-1")
        except InsufficientCredits:
            break
        taken += 7
    assert taken == 49  # 7 reservations: less than one price (7) was left
    balances = credits_world.credits.shard_balances(key.key_hash)
    assert (sum(balances), min(balances)) == (1, 0)


def test_fewer_shards_keep_the_total_and_a_reservation_on_a_shard_gone_closes_on_shard_0(credits_world):
    key = credits_world.new_key(40, shards=4)
    reservation = credits_world.credits.reserve(key, 6, request_id=request_on(3, 4), model="whisper-1")
    key = credits_world.credits.set_shards(key, 2)
    assert (key.credit_shards, key.ledger_parts) == (2, 4)
    assert credits_world.credits.shard_balances(key.key_hash) == [17, 17]
    charge = credits_world.credits.settle(reservation, 1, audio_seconds=4.0)
    assert charge.balance_after == 39
    assert credits_world.credits.shard_balances(key.key_hash) == [22, 17]
    entries = credits_world.credits.entries_for_request(key.key_id, reservation.request_id, parts=4)
    assert [(entry.kind.value, entry.shard) for entry in entries] == [("reserve", 3), ("settle", None)]


def test_a_one_shard_key_is_kept_as_before(credits_world):
    key = credits_world.new_key(10)
    reservation = credits_world.credits.reserve(key, 4, request_id=request_id(), model="whisper-1")
    assert reservation.shard is None
    assert credits_world.credits.shard_balances(key.key_hash) == [6]
    [entry] = credits_world.credits.entries_for_request(key.key_id, reservation.request_id)
    assert entry.shard is None


def test_a_sharded_keys_exact_reservation_is_settled_without_touching_its_shard(credits_world):
    key = credits_world.new_key(40, shards=4)
    reservation = credits_world.credits.reserve(key, 6, request_id=request_on(1, 4), model="whisper-1")
    charge = credits_world.credits.settle(reservation, 6, audio_seconds=28.0)
    assert (charge.billed_credits, charge.balance_after, charge.unpaid_credits) == (6, 34, 0)
    assert credits_world.credits.shard_balances(key.key_hash) == [10, 4, 10, 10]
    entries = credits_world.credits.entries_for_request(key.key_id, reservation.request_id, parts=4)
    assert [(entry.kind.value, entry.credits, entry.balance_after, entry.shard) for entry in entries] == [
        ("reserve", -6, 4, 1),
        ("settle", 0, None, 1),  # no balance read or written: none to record
    ]
    assert entries[1].billed_credits == 6
    # closed once: a second settle or a refund changes nothing
    assert credits_world.credits.settle(reservation, 6, audio_seconds=28.0).balance_after == 34
    assert credits_world.credits.refund(reservation, reason="late") is None
    assert credits_world.credits.reservation(reservation.request_id) is None
    assert len(credits_world.credits.entries_for_request(key.key_id, reservation.request_id, parts=4)) == 2
