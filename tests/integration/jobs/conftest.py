"""The jobs tests' fixtures: the template's bucket and queues, the worker, the asynchronous endpoint, webhook receivers
(tests/support/job_stack.py and tests/support/storage.py, shared with the log-hygiene run). ``storage_endpoints`` is
autouse here: every jobs test reaches S3, SQS and SNS at moto, and the model server reads its audio from there."""

from tests.support.job_stack import (  # noqa: F401 - pytest finds the fixtures by their names here
    async_inference,
    jobs_api,
    jobs_queue,
    load_worker,
    model_proxy,
    s3,
    short_wav,
    store,
    webhook_receiver,
    webhook_sleeps,
    worker,
)
from tests.support.storage import audio_resources, storage_endpoints  # noqa: F401
