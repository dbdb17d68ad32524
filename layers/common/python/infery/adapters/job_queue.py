"""The jobs queue (SQS): a job waits there for a worker. S3 delivers its object arrivals to the same queue."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


def job_message(job_id: str) -> str:
    return json.dumps({"job_id": job_id})


def job_id_of_message(body: dict[str, Any]) -> str | None:
    """The job a queue message asks to run; None for other messages (S3 event notifications)."""
    job_id = body.get("job_id")
    return job_id if isinstance(job_id, str) else None


class SqsJobQueue:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self.queue_url = queue_url

    def send(self, job_id: str) -> None:
        self._client.send_message(QueueUrl=self.queue_url, MessageBody=job_message(job_id))
