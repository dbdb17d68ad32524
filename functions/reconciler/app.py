"""Scheduled: give back the credits that crashed requests left reserved, and queue again the jobs no worker will
move any more. A thin adapter over infery."""

from __future__ import annotations

import time

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from infery.domain.ledger import LedgerKind
from infery.observability import logger, metrics
from infery.settings import get_reconciler_settings
from infery.wiring import ReconcilerWiring

settings = get_reconciler_settings()
wiring = ReconcilerWiring(settings)


def release_stale_reservations(now: float | None = None) -> int:
    now = now or time.time()
    cutoff = int(now - settings.reservation_grace_seconds)
    released = 0
    credit_store = wiring.credits
    for reservation in credit_store.open_reservations(older_than_epoch=cutoff, now_epoch=int(now)):
        # a request still running would have closed its reservation long before the grace period ends
        if (
            credit_store.refund(reservation, reason="released: the request never settled", kind=LedgerKind.RELEASE)
            is not None
        ):
            released += 1
            logger.warning(
                "released a stale reservation",
                extra={
                    "request_id": reservation.request_id,
                    "key_id": reservation.key_id,
                    "credits": reservation.credits,
                },
            )
    return released


def redrive_stuck_jobs(now: float | None = None) -> int:
    from infery.usecases.redrive import redrive_stuck_jobs as redrive

    redriven = redrive(
        wiring.job_store,
        wiring.job_queue,
        now=int(now or time.time()),
        queued_grace_seconds=settings.queued_job_grace_seconds,
    )
    for job in redriven:
        logger.warning(
            "queued a stuck job again", extra={"job_id": job.job_id, "status": job.status, "attempts": job.attempts}
        )
    return len(redriven)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    released = release_stale_reservations()
    metrics.add_metric(name="ReservationsReleased", unit=MetricUnit.Count, value=released)
    redriven = redrive_stuck_jobs()
    metrics.add_metric(name="JobsRedriven", unit=MetricUnit.Count, value=redriven)
    return {"released": released, "redriven": redriven}
