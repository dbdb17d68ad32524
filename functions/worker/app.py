"""SQS → worker: S3 object arrivals (S3 event notifications) and queued job requests become finished jobs.

Batch processing with partial failures: one failed message is retried alone, the others are done.
A transient failure of ours (RetryLater) fails the message so SQS redelivers it; on its last
delivery (the queue's maxReceiveCount) the job is failed and refunded instead, so nothing sits in
the dead-letter queue waiting for an answer that never comes.
"""

from __future__ import annotations

import json

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from infery.credits import CreditStore
from infery.endpoint_client import WhisperEndpoint
from infery.job_runner import JobRunner
from infery.jobs import JobStore
from infery.keys import KeyStore
from infery.observability import logger, metrics
from infery.service import TranscriptionService
from infery.settings import get_settings
from infery.storage import AudioStore, object_key_from_event, parse_object_key

settings = get_settings()
# SageMaker's real-time invocations run up to 60 s; the worker waits that long (the API's 29 s do not apply)
_runtime_config = Config(read_timeout=settings.worker_endpoint_timeout_seconds, connect_timeout=3,
                         retries={"total_max_attempts": 1})
_dynamodb = boto3.resource("dynamodb")
keys = KeyStore(_dynamodb.Table(settings.keys_table_name))
service = TranscriptionService(
    settings, keys,
    CreditStore(boto3.client("dynamodb"), settings.keys_table_name, settings.ledger_table_name,
                settings.reservations_table_name),
    WhisperEndpoint(boto3.client("sagemaker-runtime", config=_runtime_config), settings.sagemaker_endpoint_name),
)
runner = JobRunner(service, JobStore(_dynamodb.Table(settings.jobs_table_name)),
                   AudioStore(boto3.client("s3"), settings.audio_bucket_name,
                              max_upload_bytes=settings.max_upload_bytes,
                              upload_expiry_seconds=settings.upload_expiry_seconds),
                   keys, lease_seconds=settings.worker_lease_seconds,
                   allow_private_webhooks=settings.webhook_allow_private_addresses)
# a batch whose every message failed is reported as batchItemFailures too, not raised as a function error
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def handle_message(record: SQSRecord) -> None:
    body = json.loads(record.body)
    final_attempt = int(record.attributes.approximate_receive_count or 1) >= settings.worker_max_receives
    if body.get("Event") == "s3:TestEvent":
        return  # S3 sends it once when the notification is configured
    if "job_id" in body:
        runner.run(body["job_id"], final_attempt=final_attempt)
        return
    for s3_record in body.get("Records", []):
        if not s3_record.get("eventName", "").startswith("ObjectCreated"):
            continue
        s3 = s3_record["s3"]
        stored = parse_object_key(s3["bucket"]["name"], object_key_from_event(s3["object"]["key"]),
                                  int(s3["object"].get("size", 0)), s3["object"].get("eTag", ""))
        if stored is None:
            logger.info("object outside uploads/ and inbox/ ignored", extra={"object_key": s3["object"]["key"]})
            continue
        job_id = runner.job_for_object(stored)
        if job_id:
            logger.append_keys(job_id=job_id, key_id=stored.key_id)
            runner.run(job_id, final_attempt=final_attempt)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    metrics.add_metric(name="WorkerMessages", unit=MetricUnit.Count, value=len(event.get("Records", [])))
    return process_partial_response(event=event, record_handler=handle_message, processor=processor,
                                    context=context)
