"""CreditStore against DynamoDB (moto): every change is one transaction, applied once per request id, never overdrawn.

Concurrency here is real: threads race through the store against moto's server, which (like DynamoDB) applies one
request at a time, so a conditional transaction that lost the race is refused and retried, never applied twice.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from infery.domain.clock import now_iso
from infery.domain.errors import InsufficientCredits, NotFound
from infery.domain.ids import key_id_for
from infery.domain.keys import ApiKeyItem, hash_api_key


def unstored_key() -> ApiKeyItem:
    key_hash = hash_api_key(f"inf_never_stored_{uuid.uuid4().hex}")
    return ApiKeyItem(key_hash=key_hash, key_id=key_id_for(key_hash), name="ghost", credits=0, created_at=now_iso())


def assert_consistent(accounts, item) -> int:
    """The ledger adds up to the balance, and the balance is never negative; returns the balance."""
    balance = accounts.balance(item)
    assert balance >= 0
    assert accounts.ledger_sum(item) == balance
    return balance


# top-ups


def test_a_top_up_is_ledgered_with_its_note(accounts):
    _, item = accounts.new_key(0)
    assert accounts.credits.top_up(item, 25, request_id="invoice-1", note="invoice 2026-11") == 25
    [entry] = accounts.ledger(item)
    assert entry["kind"] == "topup" and entry["entry_id"] == "invoice-1#topup"
    assert (int(entry["credits"]), int(entry["balance_after"])) == (25, 25)
    assert entry["note"] == "invoice 2026-11" and entry["key_id"] == item.key_id
    assert assert_consistent(accounts, item) == 25


@pytest.mark.parametrize("replayed_with", ["the-key-read-before-the-first-top-up", "a-freshly-read-key"])
def test_a_top_up_request_id_adds_once(accounts, replayed_with):
    _, item = accounts.new_key(10)
    assert accounts.credits.top_up(item, 5, request_id="topup-once") == 15
    key = item if replayed_with == "the-key-read-before-the-first-top-up" else accounts.fresh(item)
    assert accounts.credits.top_up(key, 5, request_id="topup-once") == 15
    assert len(accounts.ledger(item, "topup")) == 2  # the seed and this one
    assert assert_consistent(accounts, item) == 15


@pytest.mark.parametrize("credits", [0, -5])
def test_a_top_up_must_add_credits(accounts, credits):
    _, item = accounts.new_key(10)
    with pytest.raises(ValueError, match="positive"):
        accounts.credits.top_up(item, credits, request_id=f"bad-{credits}")
    assert accounts.balance(item) == 10 and len(accounts.ledger(item)) == 1


def test_a_key_that_does_not_exist_gets_nothing(accounts):
    ghost, request_id = unstored_key(), f"ghost-{uuid.uuid4()}"
    ledger_before = accounts.ledger_size()
    with pytest.raises(NotFound):
        accounts.credits.top_up(ghost, 5, request_id=request_id)
    with pytest.raises(NotFound):
        accounts.credits.reserve(ghost, 1, request_id=request_id, model="m")
    assert accounts.ledger_size() == ledger_before
    assert accounts.credits.reservation(request_id) is None


def test_the_same_top_up_sent_concurrently_adds_once(accounts):
    _, item = accounts.new_key(0)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: accounts.credits.top_up(item, 7, request_id="topup-dup"), range(8)))
    assert set(results) == {7}
    assert len(accounts.ledger(item, "topup")) == 1 and assert_consistent(accounts, item) == 7


# racing reservations


def test_twenty_reservations_racing_for_ten_credits_get_exactly_ten(accounts):
    _, item = accounts.new_key(10)
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def reserve(index: int) -> None:
        start.wait()  # all 20 read the same balance of 10 and race for it
        try:
            accounts.credits.reserve(item, 1, request_id=f"race-{item.key_id}-{index}", model="m")
            outcome = "reserved"
        except InsufficientCredits:
            outcome = "refused"
        with lock:
            outcomes.append(outcome)

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(reserve, range(20)))
    assert outcomes.count("reserved") == 10 and outcomes.count("refused") == 10
    assert accounts.balance(item) == 0
    reserves = accounts.ledger(item, "reserve")
    assert len(reserves) == 10 and all(int(entry["credits"]) == -1 for entry in reserves)
    # each reservation saw a different balance: 10 -> 9 -> ... -> 0, none lost, none twice
    assert sorted(int(entry["balance_after"]) for entry in reserves) == list(range(10))
    assert len(accounts.open_reservations(item)) == 10
    assert assert_consistent(accounts, item) == 0


def test_the_same_request_id_reserved_concurrently_is_taken_once(accounts):
    _, item = accounts.new_key(10)
    request_id = f"reserve-dup-{uuid.uuid4()}"  # the reservations table is keyed by request id alone
    with ThreadPoolExecutor(max_workers=8) as pool:
        reservations = list(
            pool.map(lambda _: accounts.credits.reserve(item, 3, request_id=request_id, model="m"), range(8))
        )
    assert {(reservation.request_id, reservation.credits) for reservation in reservations} == {(request_id, 3)}
    assert len({reservation.created_at for reservation in reservations}) == 1  # the one stored reservation
    assert len(accounts.ledger(item, "reserve")) == 1 and len(accounts.open_reservations(item)) == 1
    assert assert_consistent(accounts, item) == 7


def test_a_settle_racing_a_refund_closes_the_reservation_once(accounts):
    _, item = accounts.new_key(10)
    reservation = accounts.credits.reserve(item, 4, request_id=f"close-race-{uuid.uuid4()}", model="m")
    start = threading.Barrier(8)

    def close(index: int) -> str:
        start.wait()
        if index % 2:
            accounts.credits.settle(reservation, 2, audio_seconds=9.0)
            return "settle"
        return "refund" if accounts.credits.refund(reservation, reason="test") is not None else "closed already"

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(close, range(8)))
    closing = [entry for entry in accounts.ledger(item) if entry["kind"] in ("settle", "refund")]
    assert len(closing) == 1
    assert accounts.balance(item) == (8 if closing[0]["kind"] == "settle" else 10)
    assert accounts.open_reservations(item) == []
    assert_consistent(accounts, item)


def test_concurrent_top_ups_reservations_settles_and_refunds_keep_the_ledger_exact(accounts):
    _, item = accounts.new_key(5)

    def work(index: int) -> str:
        request_id = f"mix-{item.key_id}-{index}"
        if index % 4 == 0:
            accounts.credits.top_up(item, 2, request_id=request_id)
            return "topped-up"
        try:
            reservation = accounts.credits.reserve(item, 2, request_id=request_id, model="m")
        except InsufficientCredits:
            return "refused"
        if index % 4 == 1:
            accounts.credits.refund(reservation, reason="test")
            return "refunded"
        accounts.credits.settle(reservation, 1, audio_seconds=4.0)  # one of the two reserved comes back
        return "settled"

    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(work, range(32)))
    balance = assert_consistent(accounts, item)
    assert balance == 5 + 2 * outcomes.count("topped-up") - outcomes.count("settled")
    assert len(accounts.ledger(item, "settle")) == outcomes.count("settled") > 0
    assert len(accounts.ledger(item, "refund")) == outcomes.count("refunded")
    assert len(accounts.ledger(item, "reserve")) == outcomes.count("settled") + outcomes.count("refunded")
    assert accounts.open_reservations(item) == []
