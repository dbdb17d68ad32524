"""The jobs tests' fixtures: the template's bucket and queues, the worker, the asynchronous endpoint, webhook receivers
(tests/support/job_stack.py, shared with the log-hygiene run). ``storage_endpoints`` is autouse here: every jobs
test reaches S3, SQS and SNS at moto, and the model server reads its audio from there."""

from tests.support.job_stack import (  # noqa: F401 - pytest finds the fixtures by their names here
    async_inference,
    audio_resources,
    jobs_api,
    jobs_queue,
    load_worker,
    model_proxy,
    s3,
    short_wav,
    storage_endpoints,
    store,
    webhook_receiver,
    webhook_sleeps,
    worker,
)
