"""A job at the smallest balance: the credits it reserves, no more, spend a key to exactly zero; one fewer is refused
before anything is reserved or submitted."""

from __future__ import annotations

from infery.domain.jobs import JobStatus

from tests.support.jobs import (
    SEEDED,
    assert_charged_once,
    assert_no_batch_failures,
    drop_and_receive,
)


def test_a_job_spends_a_balance_to_exactly_zero_and_one_credit_less_fails_charging_nothing(
    worker, store, jobs_queue, accounts, short_wav
):
    _, probe = accounts.new_key(SEEDED)  # what this file costs, as the worker prices it
    assert_no_batch_failures(worker.deliver(drop_and_receive(store, jobs_queue, probe, "price.wav", short_wav)))
    price = -int(accounts.request_entries(probe, store.only_job(probe).job_id)["reserve"]["credits"])
    assert price >= 1

    _, exact = accounts.new_key(price)
    assert_no_batch_failures(worker.deliver(drop_and_receive(store, jobs_queue, exact, "exact.wav", short_wav)))
    job = store.only_job(exact)
    assert job.status is JobStatus.SUCCEEDED, job.error
    # a WAV's header tells its real duration: the settle bills what was reserved, and the key is left with nothing
    assert assert_charged_once(accounts, store, exact, job.job_id, seeded=price) == price
    assert accounts.balance(exact) == 0
    assert int(accounts.request_entries(exact, job.job_id)["reserve"]["balance_after"]) == 0

    _, short = accounts.new_key(price - 1)
    assert_no_batch_failures(worker.deliver(drop_and_receive(store, jobs_queue, short, "short.wav", short_wav)))
    refused = store.only_job(short)
    assert refused.status is JobStatus.FAILED and refused.error is not None, refused
    assert refused.error.code == "insufficient_credits", refused.error
    accounts.assert_untouched(short, price - 1)
    assert accounts.ledger(short, "reserve") == []  # refused before a reservation, not reserved and given back
