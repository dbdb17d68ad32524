"""A reservation's life in the credit store (moto): reserve, then exactly one of settle, refund or release.

Each change is one transaction: the balance, a ledger entry named request_id#kind, and the reservation item are
written together or not at all, and a replayed change is a no-op.
"""

from __future__ import annotations

import time
import uuid

import pytest
from infery.domain.errors import AuthenticationFailed, InsufficientCredits, InternalError
from infery.domain.ledger import LedgerKind


@pytest.fixture
def request_id() -> str:
    return f"req-{uuid.uuid4()}"  # the reservations table is keyed by request id alone: unique per test


def kinds(accounts, item) -> list[str]:
    return sorted(entry["kind"] for entry in accounts.ledger(item) if entry["kind"] != "topup")


def stored_reservation(accounts, request_id: str) -> dict | None:
    return accounts.reservations_table.get_item(Key={"request_id": request_id}, ConsistentRead=True).get("Item")


def test_a_reservation_takes_the_credits_and_is_stored(accounts, request_id):
    _, item = accounts.new_key(10)
    before = int(time.time())
    reservation = accounts.credits.reserve(item, 4, request_id=request_id, model="whisper-x")
    assert (reservation.request_id, reservation.credits, reservation.model) == (request_id, 4, "whisper-x")
    assert reservation.key_id == item.key_id and reservation.key_hash == item.key_hash
    assert before <= reservation.created_epoch <= int(time.time())
    assert accounts.balance(item) == 6
    stored = stored_reservation(accounts, request_id)
    assert stored is not None and int(stored["credits"]) == 4 and stored["key_id"] == item.key_id
    assert accounts.credits.reservation(request_id) == reservation
    [entry] = accounts.ledger(item, "reserve")
    assert entry["entry_id"] == f"{request_id}#reserve" and entry["request_id"] == request_id
    assert (int(entry["credits"]), int(entry["balance_after"]), entry["model"]) == (-4, 6, "whisper-x")
    assert accounts.ledger_sum(item) == 6


def test_a_reservation_of_the_whole_balance_leaves_zero(accounts, request_id):
    _, item = accounts.new_key(3)
    accounts.credits.reserve(item, 3, request_id=request_id, model="m")
    assert accounts.balance(item) == 0 == accounts.ledger_sum(item)


@pytest.mark.parametrize(("balance", "credits"), [(0, 1), (2, 3), (10, 11)])
def test_a_reservation_above_the_balance_is_402_and_writes_nothing(accounts, request_id, balance, credits):
    _, item = accounts.new_key(balance)
    ledger_before = accounts.ledger_size()
    with pytest.raises(InsufficientCredits) as refused:
        accounts.credits.reserve(item, credits, request_id=request_id, model="m")
    assert refused.value.status_code == 402 and refused.value.code == "insufficient_credits"
    assert refused.value.headers == {"x-infery-credits-balance": str(balance)}
    assert f"{credits} credits" in refused.value.message
    assert accounts.balance(item) == balance and accounts.ledger_size() == ledger_before
    assert stored_reservation(accounts, request_id) is None


def test_a_revoked_key_cannot_reserve(accounts, request_id):
    _, item = accounts.new_key(10)
    accounts.revoke(item)
    with pytest.raises(AuthenticationFailed) as refused:
        accounts.credits.reserve(item, 1, request_id=request_id, model="m")
    assert refused.value.code == "revoked_api_key"
    assert accounts.balance(item) == 10 and kinds(accounts, item) == []
    assert stored_reservation(accounts, request_id) is None


def test_replaying_an_open_reservation_returns_it_even_when_the_balance_is_now_too_low(accounts, request_id):
    """Was an xfail bug in the old charge(): the balance was checked before the ledger said it was a replay."""
    _, item = accounts.new_key(10)
    first = accounts.credits.reserve(item, 8, request_id=request_id, model="m")
    assert accounts.balance(item) == 2
    for key in (item, accounts.fresh(item)):
        assert accounts.credits.reserve(key, 8, request_id=request_id, model="m") == first
    assert accounts.balance(item) == 2 and kinds(accounts, item) == ["reserve"]


def test_replaying_a_reservation_with_another_amount_returns_the_stored_one(accounts, request_id):
    _, item = accounts.new_key(10)
    first = accounts.credits.reserve(item, 3, request_id=request_id, model="m")
    assert accounts.credits.reserve(item, 5, request_id=request_id, model="m") == first
    assert accounts.balance(item) == 7 and kinds(accounts, item) == ["reserve"]


@pytest.mark.parametrize("closed_by", ["settle", "refund"])
def test_replaying_a_closed_reservation_is_refused_and_changes_nothing(accounts, request_id, closed_by):
    _, item = accounts.new_key(4)
    reservation = accounts.credits.reserve(item, 3, request_id=request_id, model="m")
    if closed_by == "settle":
        accounts.credits.settle(reservation, 3, audio_seconds=12.0)
    else:
        accounts.credits.refund(reservation, reason="test")
    balance, ledger = accounts.balance(item), accounts.ledger(item)
    with pytest.raises(InternalError, match="nothing more was charged"):
        accounts.credits.reserve(item, 3, request_id=request_id, model="m")  # the balance is now below 3, too
    assert accounts.balance(item) == balance and accounts.ledger(item) == ledger
    assert stored_reservation(accounts, request_id) is None


@pytest.mark.parametrize(
    ("reserved", "used", "settle_credits", "balance_after"),
    [
        (5, 2, 3, 8),  # over-reserved: 3 come back
        (5, 5, 0, 5),  # exactly: the settle moves nothing
        (3, 5, -2, 5),  # under-reserved, and the balance covers the rest
    ],
)
def test_a_settle_closes_the_reservation_at_the_real_cost(
    accounts, request_id, reserved, used, settle_credits, balance_after
):
    _, item = accounts.new_key(10)
    reservation = accounts.credits.reserve(item, reserved, request_id=request_id, model="m")
    charge = accounts.credits.settle(reservation, used, audio_seconds=12.5)
    assert (charge.billed_credits, charge.balance_after, charge.unpaid_credits) == (used, balance_after, 0)
    assert accounts.balance(item) == balance_after == accounts.ledger_sum(item)
    [settle] = accounts.ledger(item, "settle")
    assert settle["entry_id"] == f"{request_id}#settle"
    assert int(settle["credits"]) == settle_credits and int(settle["billed_credits"]) == used
    assert int(settle["balance_after"]) == balance_after and "unpaid_credits" not in settle
    assert float(settle["audio_seconds"]) == 12.5  # exact: not 12.4999...
    assert stored_reservation(accounts, request_id) is None


def test_an_under_reservation_the_balance_cannot_cover_is_recorded_as_unpaid(accounts, request_id):
    _, item = accounts.new_key(5)
    reservation = accounts.credits.reserve(item, 3, request_id=request_id, model="m")
    charge = accounts.credits.settle(reservation, 12, audio_seconds=60.0)
    assert (charge.billed_credits, charge.balance_after, charge.unpaid_credits) == (5, 0, 7)
    [settle] = accounts.ledger(item, "settle")
    assert (int(settle["credits"]), int(settle["billed_credits"]), int(settle["unpaid_credits"])) == (-2, 5, 7)
    assert accounts.balance(item) == 0 == accounts.ledger_sum(item)


def test_a_settle_replayed_is_a_no_op(accounts, request_id):
    _, item = accounts.new_key(10)
    reservation = accounts.credits.reserve(item, 5, request_id=request_id, model="m")
    accounts.credits.settle(reservation, 2, audio_seconds=8.0)
    again = accounts.credits.settle(reservation, 2, audio_seconds=8.0)
    assert again.balance_after == 8 == accounts.balance(item)
    assert kinds(accounts, item) == ["reserve", "settle"] and accounts.ledger_sum(item) == 8


def test_a_refund_gives_the_whole_reservation_back_once(accounts, request_id):
    _, item = accounts.new_key(10)
    reservation = accounts.credits.reserve(item, 4, request_id=request_id, model="m")
    assert accounts.credits.refund(reservation, reason="ModelFailed: model_error") == 10
    assert accounts.credits.refund(reservation, reason="again") is None
    [refund] = accounts.ledger(item, "refund")
    assert refund["entry_id"] == f"{request_id}#refund"
    assert (int(refund["credits"]), int(refund["balance_after"])) == (4, 10)
    assert refund["note"] == "ModelFailed: model_error"
    assert kinds(accounts, item) == ["refund", "reserve"]
    assert accounts.balance(item) == 10 == accounts.ledger_sum(item)
    assert stored_reservation(accounts, request_id) is None


def test_a_release_is_a_refund_of_its_own_kind(accounts, request_id):
    _, item = accounts.new_key(10)
    reservation = accounts.credits.reserve(item, 4, request_id=request_id, model="m")
    assert accounts.credits.refund(reservation, reason="stale", kind=LedgerKind.RELEASE) == 10
    [release] = accounts.ledger(item, "release")
    assert release["entry_id"] == f"{request_id}#release" and int(release["credits"]) == 4
    assert kinds(accounts, item) == ["release", "reserve"]


@pytest.mark.parametrize(
    ("first", "then"),
    [("settle", "refund"), ("refund", "settle"), ("refund", "release"), ("release", "settle"), ("settle", "release")],
)
def test_a_closed_reservation_cannot_be_closed_again(accounts, request_id, first, then):
    _, item = accounts.new_key(10)
    reservation = accounts.credits.reserve(item, 4, request_id=request_id, model="m")

    def close(how: str) -> None:
        if how == "settle":
            accounts.credits.settle(reservation, 1, audio_seconds=3.0)
        else:
            kind = LedgerKind.RELEASE if how == "release" else LedgerKind.REFUND
            accounts.credits.refund(reservation, reason="test", kind=kind)

    close(first)
    balance, ledger = accounts.balance(item), accounts.ledger(item)
    close(then)
    assert accounts.balance(item) == balance == (9 if first == "settle" else 10)
    assert accounts.ledger(item) == ledger
    assert kinds(accounts, item) == sorted(["reserve", first])


def test_a_key_revoked_after_reserving_still_settles_and_refunds(accounts):
    """Revoking a key never strands its credits: requests in flight settle, or get their reservation back."""
    _, item = accounts.new_key(10)
    settled = accounts.credits.reserve(item, 3, request_id=f"req-{uuid.uuid4()}", model="m")
    refunded = accounts.credits.reserve(item, 3, request_id=f"req-{uuid.uuid4()}", model="m")
    accounts.revoke(item)
    assert accounts.credits.settle(settled, 2, audio_seconds=7.0).balance_after == 5
    assert accounts.credits.refund(refunded, reason="test") == 8
    assert accounts.balance(item) == 8 == accounts.ledger_sum(item)
    assert accounts.open_reservations(item) == []


def test_the_ledger_is_read_back_in_time_order_and_by_period(accounts):
    _, item = accounts.new_key(10)
    request_ids = [f"req-{uuid.uuid4()}" for _ in range(3)]
    for request_id in request_ids:
        accounts.credits.settle(
            accounts.credits.reserve(item, 2, request_id=request_id, model="m"), 1, audio_seconds=4.0
        )
    entries = accounts.credits.ledger(item.key_id)
    assert [entry.created_at for entry in entries] == sorted(entry.created_at for entry in entries)
    assert sorted((entry.request_id, entry.kind.value) for entry in entries if entry.kind != "topup") == sorted(
        (request_id, kind) for request_id in request_ids for kind in ("reserve", "settle")
    )
    assert sorted(entry.balance_after for entry in entries) == [6, 7, 7, 8, 8, 9, 10]
    assert sum(entry.credits for entry in entries) == 7 == accounts.balance(item)
    since = entries[3].created_at
    assert accounts.credits.ledger(item.key_id, since=since) == [e for e in entries if e.created_at >= since]
    assert accounts.credits.ledger(item.key_id, since="2000-01-01", until=since) == [
        e for e in entries if e.created_at < since
    ]  # `until` is exclusive
    assert accounts.credits.ledger(item.key_id, since="2000-01-01", until="2000-01-02") == []


def test_the_ledger_can_be_read_up_to_a_moment(accounts):
    _, item = accounts.new_key(10)
    entries = accounts.credits.ledger(item.key_id)
    later = "9999-12-31T00:00:00.000+00:00"
    assert accounts.credits.ledger(item.key_id, until=later) == entries


def test_open_reservations_are_found_by_age(accounts, request_id):
    _, item = accounts.new_key(10)
    reservation = accounts.credits.reserve(item, 2, request_id=request_id, model="m")
    older = accounts.credits.open_reservations(older_than_epoch=reservation.created_epoch + 1)
    assert reservation in older
    younger = accounts.credits.open_reservations(older_than_epoch=reservation.created_epoch)
    assert request_id not in {found.request_id for found in younger}
