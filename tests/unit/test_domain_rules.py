"""The domain's rules on their own: what a reservation takes, what a settle collects, when a job may be claimed."""

from __future__ import annotations

import pytest
from infery.domain.errors import InsufficientCredits
from infery.domain.inference import Task
from infery.domain.jobs import CLAIMABLE_STATUSES, Job, JobStatus, may_be_claimed, new_job
from infery.domain.ledger import Settlement, settle, take_for_reservation
from infery.domain.transcription import TranscriptionOptions


def test_a_reservation_may_take_the_whole_balance() -> None:
    assert take_for_reservation(balance=7, credits=7) == -7
    assert take_for_reservation(balance=0, credits=0) == 0


def test_a_reservation_one_credit_short_is_refused_with_the_balance() -> None:
    with pytest.raises(InsufficientCredits) as refused:
        take_for_reservation(balance=6, credits=7)
    assert refused.value.headers == {"x-infery-credits-balance": "6"}
    assert "needs 7 credits" in refused.value.message and "balance is 6" in refused.value.message


@pytest.mark.parametrize(
    ("reserved", "used", "balance", "expected"),
    [
        (10, 10, 0, Settlement(change=0, billed_credits=10, unpaid_credits=0)),  # exactly as reserved
        (10, 4, 0, Settlement(change=6, billed_credits=4, unpaid_credits=0)),  # the excess goes back
        (10, 0, 5, Settlement(change=10, billed_credits=0, unpaid_credits=0)),  # nothing used: all back
        (10, 13, 5, Settlement(change=-3, billed_credits=13, unpaid_credits=0)),  # the rest is taken
        (10, 13, 2, Settlement(change=-2, billed_credits=12, unpaid_credits=1)),  # as far as the balance goes
        (10, 13, 0, Settlement(change=0, billed_credits=10, unpaid_credits=3)),  # never below zero
    ],
)
def test_a_settle_gives_back_the_excess_or_takes_the_rest_while_the_balance_lasts(
    reserved: int, used: int, balance: int, expected: Settlement
) -> None:
    settlement = settle(reserved, used, balance)
    assert settlement == expected
    assert balance + settlement.change >= 0
    assert settlement.billed_credits + settlement.unpaid_credits == used


def _job(status: JobStatus, lease_until: int = 0) -> Job:
    job = new_job(
        job_id="job_x",
        key_id="key_x",
        key_hash="h",
        options=TranscriptionOptions(task=Task.TRANSCRIBE, model="whisper-1"),
        status=status,
    )
    return job.model_copy(update={"lease_until": lease_until})


@pytest.mark.parametrize("status", sorted(JobStatus))
def test_a_job_may_be_claimed_while_waiting_or_when_its_workers_lease_ran_out(status: JobStatus) -> None:

    waiting = status in CLAIMABLE_STATUSES
    assert may_be_claimed(_job(status, lease_until=100), now=50) is waiting
    assert may_be_claimed(_job(status, lease_until=100), now=101) is (waiting or status is JobStatus.RUNNING)
