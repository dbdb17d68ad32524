"""The credits port: FakeCredits and the CreditStore on moto keep the same books (tests/integration/contracts)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from infery.domain.errors import InsufficientCredits, NotFound
from infery.domain.keys import ApiKeyItem
from infery.domain.ledger import LedgerKind, Reservation, ReservationClosed


def request_id() -> str:
    return f"req-{uuid.uuid4().hex}"


def reserved(world: Any, balance: int, credits: int = 4) -> tuple[ApiKeyItem, str, Reservation]:
    """A key with ``balance``, and a reservation of ``credits`` for a request of its own."""
    key, request = world.new_key(balance), request_id()
    return key, request, world.credits.reserve(key, credits, request_id=request, model="whisper-1")


def kinds_and_changes(world: Any, key_id: str, request: str) -> list[tuple[str, int, int]]:
    """The request's ledger entries as (kind, credits, balance_after), in the order the port gives them."""
    return [
        (entry.kind.value, entry.credits, entry.balance_after)
        for entry in world.credits.entries_for_request(key_id, request)
    ]


def test_a_top_up_adds_once_per_request_id_and_is_ledgered(credits_world):
    key = credits_world.new_key(0)
    topup = request_id()
    assert credits_world.credits.top_up(key, 25, request_id=topup, note="invoice 7") == 25
    assert credits_world.credits.top_up(key, 25, request_id=topup, note="invoice 7") == 25
    assert credits_world.credits.balance(key.key_hash) == 25
    [entry] = credits_world.credits.entries_for_request(key.key_id, topup)
    assert (entry.kind, entry.entry_id, entry.credits, entry.balance_after, entry.note) == (
        LedgerKind.TOPUP,
        f"{topup}#topup",
        25,
        25,
        "invoice 7",
    )


@pytest.mark.parametrize("credits", [0, -3])
def test_a_top_up_must_add_credits(credits_world, credits):
    key = credits_world.new_key(10)
    with pytest.raises(ValueError, match="positive"):
        credits_world.credits.top_up(key, credits, request_id=request_id())
    assert credits_world.credits.balance(key.key_hash) == 10


def test_a_note_with_a_control_character_is_refused(credits_world):
    key = credits_world.new_key(10)
    with pytest.raises(ValueError, match="control character"):
        credits_world.credits.top_up(key, 5, request_id=request_id(), note="line one\rline two")
    assert credits_world.credits.balance(key.key_hash) == 10


def test_the_balance_of_an_unknown_key_is_404(credits_world):
    with pytest.raises(NotFound) as raised:
        credits_world.credits.balance("0" * 64)
    assert raised.value.code == "key_not_found"


def test_a_reservation_takes_its_credits_and_can_be_looked_up(credits_world):
    key = credits_world.new_key(10)
    request = request_id()
    reservation = credits_world.credits.reserve(
        key, 4, request_id=request, model="whisper-1", hold_seconds=600, covered_seconds=19.87654
    )
    assert (reservation.request_id, reservation.key_id, reservation.key_hash) == (request, key.key_id, key.key_hash)
    assert (reservation.credits, reservation.model, reservation.covered_seconds) == (4, "whisper-1", 19.877)
    assert reservation.hold_until_epoch == reservation.created_epoch + 600
    assert credits_world.credits.balance(key.key_hash) == 6
    assert credits_world.credits.reservation(request) == reservation
    assert credits_world.credits.reservation(request_id()) is None
    [entry] = credits_world.credits.entries_for_request(key.key_id, request)
    assert (entry.kind, entry.credits, entry.balance_after, entry.model) == (LedgerKind.RESERVE, -4, 6, "whisper-1")


def test_a_reservation_without_a_hold_has_none(credits_world):
    key = credits_world.new_key(10)
    reservation = credits_world.credits.reserve(key, 1, request_id=request_id(), model="whisper-1")
    assert (reservation.hold_until_epoch, reservation.covered_seconds) == (None, None)


@pytest.mark.parametrize("balance", [0, 3])
def test_a_balance_short_of_the_reservation_is_402_with_the_balance_and_nothing_is_written(credits_world, balance):
    key = credits_world.new_key(balance)
    request = request_id()
    with pytest.raises(InsufficientCredits) as raised:
        credits_world.credits.reserve(key, 4, request_id=request, model="whisper-1")
    assert (raised.value.status_code, raised.value.code) == (402, "insufficient_credits")
    assert raised.value.headers == {"x-infery-credits-balance": str(balance)}
    assert credits_world.credits.balance(key.key_hash) == balance
    assert credits_world.credits.entries_for_request(key.key_id, request) == []
    assert credits_world.credits.reservation(request) is None


def test_a_request_id_reserved_twice_is_reserved_once(credits_world):
    key = credits_world.new_key(10)
    request = request_id()
    first = credits_world.credits.reserve(key, 4, request_id=request, model="whisper-1")
    again = credits_world.credits.reserve(key, 4, request_id=request, model="whisper-1")
    assert again == first
    assert credits_world.credits.balance(key.key_hash) == 6
    assert [kind for kind, _, _ in kinds_and_changes(credits_world, key.key_id, request)] == ["reserve"]


def test_a_request_id_reserved_again_after_it_closed_is_refused(credits_world):
    key, request, reservation = reserved(credits_world, 10)
    credits_world.credits.settle(reservation, 2, audio_seconds=8.0)
    with pytest.raises(ReservationClosed) as raised:
        credits_world.credits.reserve(key, 4, request_id=request, model="whisper-1")
    assert raised.value.code == "already_processed"
    assert credits_world.credits.balance(key.key_hash) == 8


def test_settling_below_the_reservation_gives_the_rest_back(credits_world):
    key, request, reservation = reserved(credits_world, 10)
    charge = credits_world.credits.settle(reservation, 1, audio_seconds=4.2)
    assert (charge.billed_credits, charge.balance_after, charge.unpaid_credits) == (1, 9, 0)
    assert credits_world.credits.reservation(request) is None
    assert kinds_and_changes(credits_world, key.key_id, request) == [("reserve", -4, 6), ("settle", 3, 9)]
    settle = credits_world.credits.entries_for_request(key.key_id, request)[1]
    assert (settle.billed_credits, settle.audio_seconds, settle.unpaid_credits, settle.model) == (
        1,
        4.2,
        None,
        "whisper-1",
    )


def test_settling_above_the_reservation_takes_the_rest(credits_world):
    key, request, reservation = reserved(credits_world, 10)
    charge = credits_world.credits.settle(reservation, 6, audio_seconds=29.0)
    assert (charge.billed_credits, charge.balance_after, charge.unpaid_credits) == (6, 4, 0)
    assert kinds_and_changes(credits_world, key.key_id, request) == [("reserve", -4, 6), ("settle", -2, 4)]


def test_settling_past_the_balance_takes_what_is_left_and_records_the_rest_as_unpaid(credits_world):
    key, request, reservation = reserved(credits_world, 5)
    charge = credits_world.credits.settle(reservation, 8, audio_seconds=39.0)
    assert (charge.billed_credits, charge.balance_after, charge.unpaid_credits) == (5, 0, 3)
    settle = credits_world.credits.entries_for_request(key.key_id, request)[1]
    assert (settle.kind, settle.credits, settle.balance_after, settle.billed_credits, settle.unpaid_credits) == (
        LedgerKind.SETTLE,
        -1,
        0,
        5,
        3,
    )


def test_a_second_settle_changes_nothing(credits_world):
    key, request, reservation = reserved(credits_world, 10)
    credits_world.credits.settle(reservation, 1, audio_seconds=4.2)
    again = credits_world.credits.settle(reservation, 3, audio_seconds=14.0)
    assert (again.billed_credits, again.balance_after) == (3, 9)  # what was asked, and the balance as it is
    assert credits_world.credits.balance(key.key_hash) == 9
    assert [kind for kind, _, _ in kinds_and_changes(credits_world, key.key_id, request)] == ["reserve", "settle"]


def test_a_refund_gives_the_whole_reservation_back_once(credits_world):
    key, request, reservation = reserved(credits_world, 10)
    assert credits_world.credits.refund(reservation, reason="the model failed") == 10
    assert credits_world.credits.refund(reservation, reason="the model failed") is None
    assert credits_world.credits.reservation(request) is None
    # the ledger table orders a request's entries by entry id: refund before reserve
    assert kinds_and_changes(credits_world, key.key_id, request) == [("refund", 4, 10), ("reserve", -4, 6)]
    refund = credits_world.credits.entries_for_request(key.key_id, request)[0]
    assert (refund.note, refund.model) == ("the model failed", "whisper-1")


def test_a_settled_reservation_is_not_refunded_and_a_refunded_one_not_settled(credits_world):
    key = credits_world.new_key(10)
    settled = credits_world.credits.reserve(key, 4, request_id=request_id(), model="whisper-1")
    refunded = credits_world.credits.reserve(key, 4, request_id=request_id(), model="whisper-1")
    credits_world.credits.settle(settled, 2, audio_seconds=8.0)
    credits_world.credits.refund(refunded, reason="the model failed")
    assert credits_world.credits.refund(settled, reason="late") is None
    credits_world.credits.settle(refunded, 4, audio_seconds=16.0)
    assert credits_world.credits.balance(key.key_hash) == 8


def test_entries_for_request_finds_every_attempt_of_a_prefix_and_only_the_keys_own(credits_world):
    key, other = credits_world.new_key(10), credits_world.new_key(10)
    job = request_id()
    for attempt in (1, 2):
        reservation = credits_world.credits.reserve(key, 1, request_id=f"{job}#{attempt}", model="whisper-1")
        credits_world.credits.refund(reservation, reason="retry")
    credits_world.credits.reserve(other, 1, request_id=f"{job}#3", model="whisper-1")
    entries = credits_world.credits.entries_for_request(key.key_id, job)
    assert [entry.entry_id for entry in entries] == [
        f"{job}#1#refund",
        f"{job}#1#reserve",
        f"{job}#2#refund",
        f"{job}#2#reserve",
    ]
    assert {entry.key_id for entry in entries} == {key.key_id}
    assert credits_world.credits.entries_for_request(key.key_id, request_id()) == []
