"""ReconcilerFunction (functions/reconciler/app.py) against moto: a crashed request's reservation is given back.

A crashed request is what it leaves behind: a reservation that nothing settles. The reconciler is called with a
``now`` in the future instead of waiting out the 20-minute grace period. Other tests leave reservations open too,
so counts are only asserted where they cannot depend on them.
"""

from __future__ import annotations

import time
import uuid

import pytest
from botocore.exceptions import ClientError

from tests.support.api import LambdaContext, assert_error
from tests.support.model_replies import MODEL_ERROR_500, MODEL_ERROR_HEADERS

GRACE_SECONDS = 1200


@pytest.fixture
def reconciler(load_reconciler):
    return load_reconciler()


def crashed_request(accounts, item, credits: int = 4):
    """The reservation of a request whose Lambda died before it could settle or refund."""
    return accounts.credits.reserve(item, credits, request_id=f"crashed-{uuid.uuid4()}", model="m")


def test_the_grace_period_comes_from_the_settings(reconciler, local_template):
    assert reconciler.settings.reservation_grace_seconds == GRACE_SECONDS
    assert "ReconcilerFunction" in local_template.resources
    assert [seconds for name, seconds in local_template.schedules() if name == "ReconcilerFunction"] == [300]


def test_a_stale_reservation_is_released_once(reconciler, accounts):
    _, item = accounts.new_key(10)
    reservation = crashed_request(accounts, item)
    assert accounts.balance(item) == 6

    assert reconciler.release_stale_reservations(now=time.time() + GRACE_SECONDS + 100) >= 1
    assert accounts.balance(item) == 10 == accounts.ledger_sum(item)
    entries = accounts.request_entries(item, reservation.request_id)
    assert set(entries) == {"reserve", "release"}
    release = entries["release"]
    assert release["entry_id"] == f"{reservation.request_id}#release"
    assert (int(release["credits"]), int(release["balance_after"])) == (4, 10)
    assert "never settled" in release["note"]
    assert accounts.open_reservations(item) == []

    # a second run finds nothing left to release, and changes nothing
    ledger = accounts.ledger(item)
    assert reconciler.release_stale_reservations(now=time.time() + GRACE_SECONDS + 100) == 0
    assert accounts.ledger(item) == ledger and accounts.balance(item) == 10


def test_the_grace_period_is_respected_to_the_second(reconciler, accounts):
    _, item = accounts.new_key(10)
    reservation = crashed_request(accounts, item)
    reconciler.release_stale_reservations(now=reservation.created_epoch + GRACE_SECONDS)  # exactly the grace
    assert accounts.credits.reservation(reservation.request_id) == reservation
    assert accounts.balance(item) == 6
    reconciler.release_stale_reservations(now=reservation.created_epoch + GRACE_SECONDS + 1)
    assert accounts.credits.reservation(reservation.request_id) is None
    assert accounts.balance(item) == 10


def test_a_fresh_reservation_is_left_alone(reconciler, accounts):
    _, item = accounts.new_key(10)
    reservation = crashed_request(accounts, item, credits=3)
    reconciler.release_stale_reservations(now=time.time())
    reconciler.release_stale_reservations()  # the real clock, as the schedule runs it
    assert accounts.credits.reservation(reservation.request_id) == reservation
    assert accounts.balance(item) == 7
    assert set(accounts.request_entries(item, reservation.request_id)) == {"reserve"}
    # ... and the request it belongs to can still settle it
    accounts.credits.settle(reservation, 2, audio_seconds=8.0)
    assert accounts.balance(item) == 8 == accounts.ledger_sum(item)


def test_a_settled_reservation_is_never_released(reconciler, accounts):
    _, item = accounts.new_key(10)
    reservation = crashed_request(accounts, item)
    accounts.credits.settle(reservation, 3, audio_seconds=12.0)
    reconciler.release_stale_reservations(now=time.time() + GRACE_SECONDS + 100)
    assert accounts.balance(item) == 7
    assert set(accounts.request_entries(item, reservation.request_id)) == {"reserve", "settle"}


def test_a_revoked_keys_stale_reservation_is_released_too(reconciler, accounts):
    _, item = accounts.new_key(10)
    reservation = crashed_request(accounts, item)
    accounts.revoke(item)
    reconciler.release_stale_reservations(now=time.time() + GRACE_SECONDS + 100)
    assert accounts.credits.reservation(reservation.request_id) is None
    assert accounts.balance(item) == 10


def test_every_stale_reservation_of_many_keys_is_released(reconciler, accounts):
    keys = [accounts.new_key(10)[1] for _ in range(3)]
    for item in keys:
        for held in (1, 2):
            crashed_request(accounts, item, held)
    assert reconciler.release_stale_reservations(now=time.time() + GRACE_SECONDS + 100) >= 6
    for item in keys:
        assert accounts.balance(item) == 10 == accounts.ledger_sum(item)
        assert len(accounts.ledger(item, "release")) == 2 and accounts.open_reservations(item) == []


def test_a_request_whose_refund_failed_is_made_whole_by_the_reconciler(
    fake_runtime, load_api, reconciler, accounts, wav, monkeypatch
):
    """The endpoint fails and so does the refund (DynamoDB hiccups): the client still gets the endpoint's error,
    the reservation stays open, and the reconciler gives it back later."""
    url, fake = fake_runtime(424, MODEL_ERROR_500, MODEL_ERROR_HEADERS)
    api = load_api(url)
    api_key, item = accounts.new_key(10)

    def refund_fails(*args, **kwargs):
        raise ClientError({"Error": {"Code": "InternalServerError", "Message": "try again"}}, "TransactWriteItems")

    monkeypatch.setattr(api.module.wiring.credits, "refund", refund_fails)
    reply = api.transcribe(api_key, wav)
    assert_error(reply, 502, "model_error")
    assert fake.calls == 1
    assert accounts.balance(item) == 7  # the 3 reserved are still held
    [reservation] = accounts.open_reservations(item)
    assert reservation["request_id"] == reply.request_id

    reconciler.release_stale_reservations(now=time.time() + GRACE_SECONDS + 100)
    assert accounts.balance(item) == 10 == accounts.ledger_sum(item)
    assert set(accounts.request_entries(item, reply.request_id)) == {"reserve", "release"}


def test_the_scheduled_handler_reports_what_it_released(reconciler, accounts):
    _, item = accounts.new_key(10)
    reservation = crashed_request(accounts, item)
    context = LambdaContext(
        function_name="infery-it-ReconcilerFunction",
        invoked_function_arn="arn:aws:lambda:us-east-1:000000000000:function:infery-it-ReconcilerFunction",
    )
    result = reconciler.lambda_handler({"source": "aws.events", "detail-type": "Scheduled Event"}, context)
    assert set(result) == {"released", "redriven"} and isinstance(result["released"], int)
    assert isinstance(result["redriven"], int)
    assert accounts.credits.reservation(reservation.request_id) == reservation  # fresh: not released
