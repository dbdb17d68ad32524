"""Runs the template's scheduled functions (EventBridge rate() schedules) on their period, as AWS does."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from .api_gateway import LocalFunction
from .template import LocalTemplate


def scheduled_event(function_name: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [f"arn:aws:events:us-east-1:000000000000:rule/{function_name}"],
        "detail": {},
    }


class LocalScheduler:
    def __init__(self, local: LocalTemplate, extra_environment: dict[str, str]) -> None:
        self._stop = threading.Event()
        self.functions = [
            (LocalFunction(local, logical_id, 1, extra_environment), period) for logical_id, period in local.schedules()
        ]
        self._threads = [
            threading.Thread(target=self._run, args=(function, period), daemon=True, name=f"schedule-{function.name}")
            for function, period in self.functions
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _run(self, function: LocalFunction, period: float) -> None:
        while not self._stop.wait(period):
            try:
                function.invoke(scheduled_event(function.name), function.timeout_seconds + 5)
            except Exception as exc:  # a failed run is retried on the next period, as EventBridge's would be
                print(f"scheduled run of {function.name} failed: {exc!r}", flush=True)

    def close(self) -> None:
        self._stop.set()
        for function, _ in self.functions:
            function.close()
