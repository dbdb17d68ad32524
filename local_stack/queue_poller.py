"""Lambda's SQS event source mapping, locally: poll the queue, invoke the function with a batch, and
delete what succeeded (the function reports partial failures as batchItemFailures, as on AWS).

A failed message becomes visible again after RETRY_DELAY_SECONDS instead of the queue's visibility
timeout (30 minutes), so local retries happen while you watch; moto applies the queue's redrive policy.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import boto3

from .api_gateway import LocalFunction
from .template import ACCOUNT_ID, LocalTemplate

RETRY_DELAY_SECONDS = 5
# Short polls with a pause between them, not long polls: moto serves one request at a time
# (local_stack/moto_server.py), and a long poll would hold every other AWS call for its whole wait.
IDLE_POLL_SECONDS = 0.5


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": message.get("MessageAttributes", {}),
                "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),  # noqa: S324
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for message in messages
        ]
    }


class LocalQueuePoller:
    def __init__(self, local: LocalTemplate, extra_environment: dict[str, str], concurrency: int = 1) -> None:
        self._stop = threading.Event()
        self._local = local
        self._threads = []
        for logical_id, queue_name, batch_size in local.queue_subscriptions():
            function = LocalFunction(local, logical_id, concurrency, extra_environment)
            for _ in range(concurrency):
                self._threads.append(
                    threading.Thread(
                        target=self._poll,
                        args=(function, queue_name, batch_size),
                        daemon=True,
                        name=f"sqs-{function.name}",
                    )
                )

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _poll(self, function: LocalFunction, queue_name: str, batch_size: int) -> None:
        sqs = boto3.client("sqs")
        queue_url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
        queue_arn = f"arn:aws:sqs:{self._local.region}:{ACCOUNT_ID}:{queue_name}"
        while not self._stop.is_set():
            try:
                messages = sqs.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=min(batch_size, 10),
                    WaitTimeSeconds=0,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except Exception as exc:  # moto stopping under us at shutdown
                if not self._stop.is_set():
                    print(f"polling {queue_name} failed: {exc!r}", flush=True)
                self._stop.wait(1)
                continue
            if messages:
                self._deliver(sqs, queue_url, queue_arn, function, messages)
            else:
                self._stop.wait(IDLE_POLL_SECONDS)

    def _deliver(
        self, sqs: Any, queue_url: str, queue_arn: str, function: LocalFunction, messages: list[dict[str, Any]]
    ) -> None:
        try:
            response = (
                function.invoke(sqs_event(messages, queue_arn, self._local.region), function.timeout_seconds + 5) or {}
            )
            failed = {failure["itemIdentifier"] for failure in response.get("batchItemFailures", [])}
        except Exception as exc:  # the invocation itself failed: the whole batch is retried
            print(f"{function.name} failed on a batch: {exc!r}", flush=True)
            failed = {message["MessageId"] for message in messages}
        for message in messages:
            if message["MessageId"] in failed:
                sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=RETRY_DELAY_SECONDS
                )
            else:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
