"""CreditStore against DynamoDB (moto): the charge is atomic, idempotent per request id, and never overdraws."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from infery.errors import InsufficientCredits


def ledger_sum(accounts, item) -> int:
    return sum(int(entry["credits"]) for entry in accounts.ledger(item))


@pytest.mark.parametrize("replayed_with", ["the-key-read-before-the-first-charge", "a-freshly-read-key"])
def test_a_request_id_is_charged_once(accounts, replayed_with):
    _, item = accounts.new_key(10)
    first = accounts.credits.charge(item, 3, request_id="req-once", model="m", audio_seconds=12.5)
    key = item if replayed_with == "the-key-read-before-the-first-charge" else accounts.fresh(item)
    again = accounts.credits.charge(key, 3, request_id="req-once", model="m", audio_seconds=12.5)
    assert first == again == 7 == accounts.balance(item)
    [charge] = accounts.ledger(item, "charge")
    assert charge["entry_id"] == "req-once#charge"
    assert (int(charge["credits"]), int(charge["balance_after"])) == (-3, 7)
    assert float(charge["audio_seconds"]) == 12.5
    assert ledger_sum(accounts, item) == 7


@pytest.mark.xfail(strict=True, reason="BUG: layers/common/python/infery/credits.py:89-92 refuses a negative "
                   "balance before it learns whether the request_id was already applied, so replaying an applied "
                   "charge raises InsufficientCredits (402) once the remaining balance is below the price, "
                   "instead of the no-op the charge() docstring promises (credits.py:77)")
def test_replaying_an_applied_charge_is_a_no_op_even_when_the_balance_is_now_low(accounts):
    _, item = accounts.new_key(10)
    assert accounts.credits.charge(item, 8, request_id="req-replay", model="m", audio_seconds=40.0) == 2
    replayed = accounts.credits.charge(accounts.fresh(item), 8, request_id="req-replay", model="m",
                                       audio_seconds=40.0)
    assert replayed == 2
    assert accounts.balance(item) == 2 and len(accounts.ledger(item, "charge")) == 1


def test_the_same_request_id_charged_concurrently_is_deducted_once(accounts):
    _, item = accounts.new_key(10)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: accounts.credits.charge(item, 3, request_id="req-dup", model="m",
                                                                  audio_seconds=11.0), range(8)))
    assert set(results) == {7}
    assert accounts.balance(item) == 7 and len(accounts.ledger(item, "charge")) == 1


def test_concurrent_charges_never_overdraw_and_the_ledger_adds_up(accounts):
    _, item = accounts.new_key(10)
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def charge(index: int) -> None:
        start.wait()  # all 20 read the same balance of 10 and race for it
        try:
            accounts.credits.charge(item, 1, request_id=f"race-{index}", model="m", audio_seconds=1.0)
            outcome = "charged"
        except InsufficientCredits:
            outcome = "refused"
        with lock:
            outcomes.append(outcome)

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(charge, range(20)))
    assert outcomes.count("charged") == 10 and outcomes.count("refused") == 10
    assert accounts.balance(item) == 0
    charges = accounts.ledger(item, "charge")
    assert len(charges) == 10 and sum(int(entry["credits"]) for entry in charges) == -10
    # each charge saw a different balance: 10 -> 9 -> ... -> 0, none lost, none twice
    assert sorted(int(entry["balance_after"]) for entry in charges) == list(range(10))
    assert ledger_sum(accounts, item) == accounts.balance(item) == 0


def test_concurrent_charges_and_top_ups_keep_the_ledger_exact(accounts):
    _, item = accounts.new_key(5)

    def work(index: int) -> str:
        try:
            if index % 3 == 0:
                accounts.credits.top_up(item, 2, request_id=f"mix-{index}")
                return "topped-up"
            accounts.credits.charge(item, 1, request_id=f"mix-{index}", model="m", audio_seconds=3.0)
            return "charged"
        except InsufficientCredits:
            return "refused"

    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(work, range(24)))
    balance = accounts.balance(item)
    assert balance == 5 + 2 * outcomes.count("topped-up") - outcomes.count("charged") >= 0
    assert ledger_sum(accounts, item) == balance
    assert len(accounts.ledger(item, "charge")) == outcomes.count("charged")
