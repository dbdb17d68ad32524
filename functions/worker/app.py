"""SQS → worker: S3 object arrivals, queued job requests and the asynchronous endpoint's notifications.

Two queues feed it. The jobs queue brings S3 event notifications and job requests: each starts a job on
the asynchronous endpoint (credits reserved, audio by S3 reference). The inference-results queue brings
SageMaker's success and failure notifications (through SNS): each settles or refunds a job and sends its
webhook. Batch processing with partial failures: one failed message is retried alone. A transient failure
of ours (RetryLater) fails the message so SQS redelivers it; on its last delivery (the queue's
maxReceiveCount) the job is failed and refunded instead, so nothing waits in a dead-letter queue for an
answer that never comes.
"""

from __future__ import annotations

import json

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from infery.async_inference import AsyncNotification, AsyncWhisperEndpoint
from infery.credits import CreditStore
from infery.endpoint_client import WhisperEndpoint
from infery.job_runner import JobRunner, ResubmitJob
from infery.job_views import JobPresenter
from infery.jobs import JobStore
from infery.keys import KeyStore
from infery.observability import logger, metrics
from infery.service import TranscriptionService
from infery.settings import get_settings
from infery.storage import AudioStore, object_key_from_event, parse_object_key

settings = get_settings()
# submitting a job is quick; a retry of the submit must not queue the audio twice (the inference id guards it)
_runtime_config = Config(connect_timeout=3, read_timeout=30, retries={"total_max_attempts": 1})
_dynamodb = boto3.resource("dynamodb")
_s3 = boto3.client("s3")
_sqs = boto3.client("sqs")
keys = KeyStore(_dynamodb.Table(settings.keys_table_name))
_runtime = boto3.client("sagemaker-runtime", config=_runtime_config)
service = TranscriptionService(
    settings, keys,
    CreditStore(boto3.client("dynamodb"), settings.keys_table_name, settings.ledger_table_name,
                settings.reservations_table_name),
    WhisperEndpoint(_runtime, settings.sagemaker_endpoint_name),
)
audio_store = AudioStore(_s3, settings.audio_bucket_name, max_upload_bytes=settings.max_upload_bytes,
                         upload_expiry_seconds=settings.upload_expiry_seconds)
async_endpoint = AsyncWhisperEndpoint(_runtime, _s3, settings.sagemaker_async_endpoint_name,
                                      settings.audio_bucket_name,
                                      invocation_timeout_seconds=settings.async_invocation_timeout_seconds,
                                      request_ttl_seconds=settings.async_request_ttl_seconds)
runner = JobRunner(service, JobStore(_dynamodb.Table(settings.jobs_table_name)), audio_store, keys,
                   endpoint=async_endpoint, presenter=JobPresenter(audio_store),
                   lease_seconds=settings.worker_lease_seconds, hold_seconds=settings.async_job_hold_seconds,
                   max_attempts=settings.worker_max_receives,
                   allow_private_webhooks=settings.webhook_allow_private_addresses)
# a batch whose every message failed is reported as batchItemFailures too, not raised as a function error
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def handle_message(record: SQSRecord) -> None:
    notification = AsyncNotification.from_message_body(record.body)
    if notification is not None:
        logger.append_keys(inference_id=notification.inference_id)
        try:
            runner.complete(notification)
        except ResubmitJob as resubmit:
            # the attempt failed on the endpoint's side: a new attempt starts from the jobs queue
            _sqs.send_message(QueueUrl=settings.jobs_queue_url, MessageBody=json.dumps({"job_id": resubmit.job_id}))
        return
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
