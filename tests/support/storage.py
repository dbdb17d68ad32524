"""The template's bucket, queues and jobs table on a moto server, the environment that points the handlers (and the
model server) at them, and what a refused request must not leave there. Fixtures and helpers for the integration
tests that reach S3, SQS and SNS: the jobs tests, the log-hygiene run and the hostile requests."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
import whisper_server
from boto3.dynamodb.conditions import Attr

from local_stack.template import LocalTemplate, create_buckets, create_queues, create_topics


def make_audio_resources(moto_url: str, local_template: LocalTemplate) -> dict[str, str]:
    """The template's AudioBucket, JobsQueue and JobsDeadLetterQueue on the moto at ``moto_url`` (made unless there),
    and the names the functions' environment gives them and the tables beside them."""
    credentials = {
        "endpoint_url": moto_url,
        "region_name": local_template.region,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    s3, sqs = boto3.client("s3", **credentials), boto3.client("sqs", **credentials)
    bucket = local_template.physical_name("AudioBucket")
    existing_buckets = {entry["Name"] for entry in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing_buckets:  # another fixture of the session may have made them already
        create_queues(local_template, sqs)
        create_topics(local_template, boto3.client("sns", **credentials))
        create_buckets(local_template, s3)
    # the API function reads every table and queue the jobs use, the idempotency table too
    environment = local_template.function_environment("TranscribeFunction")
    return {
        "bucket": environment["AUDIO_BUCKET_NAME"],
        "queue_url": environment["JOBS_QUEUE_URL"],
        "queue_arn": local_template.get_att("JobsQueue", "Arn"),
        "results_queue_url": local_template.resolve({"Ref": "InferenceResultsQueue"}),
        "results_queue_arn": local_template.get_att("InferenceResultsQueue", "Arn"),
        "jobs_table": environment["JOBS_TABLE_NAME"],
        "reservations_table": environment["RESERVATIONS_TABLE_NAME"],
        "ledger_table": environment["LEDGER_TABLE_NAME"],
        "idempotency_table": environment["IDEMPOTENCY_TABLE_NAME"],
    }


@pytest.fixture(scope="session")
def audio_resources(moto_url: str, local_template: LocalTemplate) -> dict[str, str]:
    """The bucket and queues on the session's moto (made once); a module with a moto of its own overrides this with
    a module-scoped fixture of the same name over ``make_audio_resources``."""
    return make_audio_resources(moto_url, local_template)


@pytest.fixture(autouse=True)
def storage_endpoints(
    monkeypatch: pytest.MonkeyPatch, aws_environment: None, moto_url: str, audio_resources: dict[str, str]
) -> None:
    """S3, SQS and SNS at moto, for the handlers and for the model server (which reads audio_s3_uri with boto3).
    Autouse where a module or conftest imports it: the resources exist before any test of it runs."""
    for service in ("S3", "SQS", "SNS"):
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service}", moto_url)
    whisper_server._s3_client.cache_clear()  # built on first use, from the environment of that moment


class Leftovers:
    """What a refused request must not leave: job rows, uploaded objects, queue messages. Made once
    ``storage_endpoints`` points boto3 at moto; the queue is drained on creation."""

    def __init__(self, resources: dict[str, str]) -> None:
        self.resources = resources
        self.s3, self.sqs = boto3.client("s3"), boto3.client("sqs")
        self.jobs = boto3.resource("dynamodb").Table(resources["jobs_table"])
        self.drain()

    def drain(self) -> list[dict[str, Any]]:
        taken: list[dict[str, Any]] = []
        while messages := self.sqs.receive_message(
            QueueUrl=self.resources["queue_url"], MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", []):
            for message in messages:
                self.sqs.delete_message(QueueUrl=self.resources["queue_url"], ReceiptHandle=message["ReceiptHandle"])
            taken.extend(messages)
        return taken

    def assert_none(self, item: Any) -> None:
        assert self.jobs.scan(FilterExpression=Attr("key_id").eq(item.key_id), ConsistentRead=True)["Items"] == []
        listing = self.s3.list_objects_v2(Bucket=self.resources["bucket"], Prefix=f"uploads/{item.key_id}/")
        assert listing.get("KeyCount", 0) == 0, listing.get("Contents")
        assert self.drain() == []
