"""Scheduled: give back the credits that crashed requests left reserved. A thin adapter over infery."""

from __future__ import annotations

import time

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from infery.credits import LedgerKind
from infery.observability import logger, metrics
from infery.settings import get_settings
from infery.wiring import Wiring

settings = get_settings()
wiring = Wiring(settings)


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


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    released = release_stale_reservations()
    metrics.add_metric(name="ReservationsReleased", unit=MetricUnit.Count, value=released)
    return {"released": released}
