"""SQS → worker: S3 object arrivals, queued job requests and the asynchronous endpoint's notifications.

Two queues feed it. The jobs queue brings S3 event notifications and job requests: each starts a job on
the asynchronous endpoint (credits reserved, audio by S3 reference). The inference-results queue brings
SageMaker's success and failure notifications (through SNS): each settles or refunds a job and sends its
webhook (infery.usecases.jobs.JobService, step by step). Batch processing with partial failures: one failed message
is retried alone. A transient failure of ours (RetryLater) fails the message so SQS redelivers it; on its last
delivery (the queue's maxReceiveCount) the job is failed and refunded instead, so nothing waits in a dead-letter
queue for an answer that never comes.
"""

from __future__ import annotations

import json

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from infery.adapters.job_queue import job_id_of_message
from infery.domain.async_inference import AsyncNotification
from infery.domain.stored_audio import object_key_from_event, parse_object_key
from infery.observability import logger, metrics
from infery.settings import get_worker_settings
from infery.wiring import WorkerWiring

settings = get_worker_settings()
# every collaborator (clients, stores, the job use case), each built on its first use
wiring = WorkerWiring(settings)
# a batch whose every message failed is reported as batchItemFailures too, not raised as a function error
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def handle_message(record: SQSRecord) -> None:
    jobs = wiring.job_service
    notification = AsyncNotification.from_message_body(record.body)
    if notification is not None:
        logger.append_keys(inference_id=notification.inference_id)
        jobs.complete(notification)  # a transient failure puts the job back on the jobs queue
        return
    body = json.loads(record.body)
    final_attempt = int(record.attributes.approximate_receive_count or 1) >= settings.worker_max_receives
    if body.get("Event") == "s3:TestEvent":
        return  # S3 sends it once when the notification is configured
    job_id = job_id_of_message(body)
    if job_id is not None:
        jobs.run(job_id, final_attempt=final_attempt)
        return
    for s3_record in body.get("Records", []):
        if not s3_record.get("eventName", "").startswith("ObjectCreated"):
            continue
        s3 = s3_record["s3"]
        stored = parse_object_key(
            s3["bucket"]["name"],
            object_key_from_event(s3["object"]["key"]),
            int(s3["object"].get("size", 0)),
            s3["object"].get("eTag", ""),
        )
        if stored is None:
            logger.info("object outside uploads/ and inbox/ ignored", extra={"object_key": s3["object"]["key"]})
            continue
        job_id = jobs.job_for_object(stored)
        if job_id:
            logger.append_keys(job_id=job_id, key_id=stored.key_id)
            jobs.run(job_id, final_attempt=final_attempt)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse:
    metrics.add_metric(name="WorkerMessages", unit=MetricUnit.Count, value=len(event.get("Records", [])))
    return process_partial_response(event=event, record_handler=handle_message, processor=processor, context=context)
