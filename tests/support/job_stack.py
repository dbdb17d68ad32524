"""The jobs' stack for integration tests: the template's bucket and queues on the session's moto, the worker, the
local asynchronous endpoint in front of the real model, webhook receivers. Fixtures, used by tests/integration/jobs/
(through its conftest) and by the log-hygiene run.

The bucket and the queues are made from template.yaml (local_stack.template.create_buckets / create_queues) on the
session's serialised moto server, with the template's S3 -> SQS notification: every object that lands under
uploads/ or inbox/ puts moto's own S3 event message on the JobsQueue, as S3 does on AWS. The tests take those
messages off the queue and hand them to the worker's lambda_handler as Lambda's SQS event source mapping does
(local_stack.queue_poller.sqs_event), setting ApproximateReceiveCount where a redelivery is the point. The worker
and the transcribe handler are the real app.py files, cold-started with the template's environment; the model is
the real Whisper server, which reads the audio from moto's S3 by reference.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from boto3.dynamodb.conditions import Attr
from infery.adapters import webhook_sender as webhooks
from infery.domain.jobs import Job
from infery.settings import get_settings
from infery.wiring import WorkerWiring

from local_stack.async_inference import LocalAsyncInference
from local_stack.queue_poller import sqs_event
from local_stack.template import LocalTemplate, async_endpoints
from tests.support.api import (
    ROOT,
    Api,
    LambdaContext,
)
from tests.support.model_server import QuietHandler
from tests.support.speech import synthesize_wav

WORKER_SOURCE = ROOT / "functions" / "worker" / "app.py"
SHORT_SCRIPT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="session")
def short_wav() -> bytes:
    """About 3 s of espeak-ng speech: quick to transcribe, and one credit."""
    return synthesize_wav(SHORT_SCRIPT)


@pytest.fixture(scope="session")
def async_inference(
    model_server_url: str, moto_url: str, local_template: LocalTemplate, audio_resources: dict[str, str]
) -> Iterator[LocalAsyncInference]:
    """The local stack's asynchronous endpoint (local_stack/async_inference.py) in front of the real model server."""
    credentials = {
        "endpoint_url": moto_url,
        "region_name": local_template.region,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    server = LocalAsyncInference(
        async_endpoints(local_template),
        model_server_url,
        boto3.client("s3", **credentials),
        boto3.client("sns", **credentials),
        local_template.region,
    )
    server.start()
    yield server
    server.close()


@pytest.fixture
def s3(storage_endpoints: None) -> Any:
    return boto3.client("s3")


@dataclass
class JobsQueue:
    sqs: Any
    url: str

    def drain(self) -> list[dict[str, Any]]:
        """Every message now visible, taken off the queue (S3 notifications are sent before put_object returns)."""
        taken: list[dict[str, Any]] = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0, AttributeNames=["All"]
            ).get("Messages", [])
            if not messages:
                return taken
            for message in messages:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
            taken.extend(messages)


@pytest.fixture
def jobs_queue(storage_endpoints: None, audio_resources: dict[str, str]) -> JobsQueue:
    queue = JobsQueue(boto3.client("sqs"), audio_resources["queue_url"])
    queue.drain()  # what earlier tests (and the bucket's s3:TestEvent) left behind
    return queue


@dataclass
class Store:
    """The jobs table, the reservations table and the bucket, read the way the tests need them."""

    jobs_table: Any
    reservations_table: Any
    s3: Any
    bucket: str

    def jobs_of(self, item: Any) -> list[Job]:
        found = self.jobs_table.scan(FilterExpression=Attr("key_id").eq(item.key_id), ConsistentRead=True)["Items"]
        return [Job.model_validate(entry) for entry in found]

    def only_job(self, item: Any) -> Job:
        jobs = self.jobs_of(item)
        assert len(jobs) == 1, jobs
        return jobs[0]

    def job(self, job_id: str) -> Job:
        entry = self.jobs_table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item")
        assert entry is not None, job_id
        return Job.model_validate(entry)

    def objects(self, prefix: str) -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return [entry["Key"] for entry in listing.get("Contents", [])]

    def results_of(self, item: Any) -> list[str]:
        return self.objects(f"results/{item.key_id}/")

    def open_reservations(self, item: Any) -> list[dict[str, Any]]:
        return self.reservations_table.scan(FilterExpression=Attr("key_id").eq(item.key_id), ConsistentRead=True)[
            "Items"
        ]

    def drop(self, item: Any, name: str, audio: bytes) -> str:
        """A batch user's drop: the file put straight into inbox/<key_id>/."""
        key = f"inbox/{item.key_id}/{name}"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=audio)
        return key


@pytest.fixture
def store(s3: Any, audio_resources: dict[str, str]) -> Store:
    dynamodb = boto3.resource("dynamodb")
    return Store(
        dynamodb.Table(audio_resources["jobs_table"]),
        dynamodb.Table(audio_resources["reservations_table"]),
        s3,
        audio_resources["bucket"],
    )


@dataclass
class Worker:
    """One cold-started functions/worker/app.py, called with SQS events as the event source mapping sends them.

    After job messages, ``deliver`` waits for the asynchronous endpoint to finish what they submitted and hands
    its notifications (SNS -> the results queue) to the worker too, so a test sees each job to its end.
    """

    module: Any
    queue_arn: str
    async_inference: LocalAsyncInference | None = None
    results_queue_url: str = ""
    results_queue_arn: str = ""
    notifications: list[dict[str, Any]] = field(default_factory=list)

    def deliver(self, messages: list[dict[str, Any]], receive_count: int | None = None) -> dict[str, Any]:
        response = self._handle(sqs_event(messages, self.queue_arn, "us-east-1"), receive_count)
        self.finish_submitted()
        return response

    def finish_submitted(self, timeout: float = 300) -> None:
        if self.async_inference is None:
            return
        assert self.async_inference.wait_until_idle(timeout), "the asynchronous endpoint did not finish in time"
        sqs = boto3.client("sqs")
        while True:
            messages = sqs.receive_message(
                QueueUrl=self.results_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, AttributeNames=["All"]
            ).get("Messages", [])
            if not messages:
                return
            self.notifications.extend(json.loads(message["Body"]) for message in messages)
            response = self._handle(sqs_event(messages, self.results_queue_arn, "us-east-1"), None)
            failed = {failure["itemIdentifier"] for failure in response.get("batchItemFailures", [])}
            for message in messages:
                if message["MessageId"] not in failed:
                    sqs.delete_message(QueueUrl=self.results_queue_url, ReceiptHandle=message["ReceiptHandle"])
            if failed:
                return  # left on the queue, as SQS would redeliver it; the test decides what comes next

    def _handle(self, event: dict[str, Any], receive_count: int | None) -> dict[str, Any]:
        if receive_count is not None:
            for record in event["Records"]:
                record["attributes"] = {**record["attributes"], "ApproximateReceiveCount": str(receive_count)}
        context = LambdaContext(
            function_name="infery-it-WorkerFunction",
            invoked_function_arn="arn:aws:lambda:us-east-1:000000000000:function:infery-it-WorkerFunction",
        )
        return self.module.lambda_handler(event, context)


LoadWorker = Callable[..., Worker]


@pytest.fixture
def load_worker(
    monkeypatch: pytest.MonkeyPatch,
    storage_endpoints: None,
    local_template: LocalTemplate,
    audio_resources: dict[str, str],
    async_inference: LocalAsyncInference,
    model_server_url: str,
) -> Iterator[LoadWorker]:
    """Import the worker's app.py afresh (a new Lambda instance) with the environment template.yaml gives it.
    The real model server is reached as the worker reaches it: through the asynchronous endpoint."""

    def load(runtime_url: str, **environment: str) -> Worker:
        emulated = runtime_url == model_server_url or runtime_url in ASYNC_PROXIES
        if runtime_url == model_server_url:
            runtime_url = async_inference.url
        worker_environment = {
            name: value
            for name, value in local_template.function_environment("WorkerFunction").items()
            if not name.startswith("POWERTOOLS_METRICS")
        }
        # the webhook receivers of these tests listen on 127.0.0.1, which a deployed worker refuses (SSRF)
        for name, value in {
            **worker_environment,
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": runtime_url,
            "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true",
            "WEBHOOK_ALLOW_HTTP": "true",
            **environment,
        }.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        spec = importlib.util.spec_from_file_location("app", WORKER_SOURCE)  # Lambda's name for the handler module
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        # built now, from this instance's environment (clients are built on first use: see load_api)
        assert module.wiring.sagemaker_runtime_for_jobs is not None
        return Worker(
            module,
            audio_resources["queue_arn"],
            async_inference if emulated else None,
            audio_resources["results_queue_url"],
            audio_resources["results_queue_arn"],
        )

    yield load
    get_settings.cache_clear()


@pytest.fixture
def worker(load_worker: LoadWorker, model_server_url: str) -> Worker:
    return load_worker(model_server_url)


@pytest.fixture
def jobs_api(load_api: Callable[..., Api], model_server_url: str, storage_endpoints: None) -> Api:
    """The transcribe handler, wired to the real model server, the bucket and the queue."""
    return load_api(model_server_url)


@dataclass
class Receiver:
    """A webhook receiver: answers each POST with the next status of ``statuses`` (then 200) and records it."""

    url: str
    statuses: list[int]
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def webhook_receiver() -> Iterator[Callable[..., Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def start(*statuses: int) -> Receiver:
        server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
        receiver = Receiver(f"http://127.0.0.1:{server.server_port}/hooks/infery?source=it", list(statuses))

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        server.RequestHandlerClass = Handler
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return receiver

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def webhook_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff waits the worker asks for between webhook attempts, recorded instead of slept.

    Every worker of the test, loaded before or after this fixture, builds its job use case from the one WorkerWiring
    class: its webhook sender is the wiring's own, with a sleep that records.
    """
    sleeps: list[float] = []
    build = vars(WorkerWiring)["webhook_sender"].func  # the cached_property's own builder

    def recording_sender(wiring: WorkerWiring) -> webhooks.HttpWebhookSender:
        return dataclasses.replace(build(wiring), sleep=sleeps.append)

    monkeypatch.setattr(WorkerWiring, "webhook_sender", property(recording_sender))
    return sleeps


# runtime URLs that reach the real model through the asynchronous endpoint (the worker's path to it)
ASYNC_PROXIES: set[str] = set()


@pytest.fixture
def model_proxy(
    async_inference: LocalAsyncInference, model_server_url: str, s3: Any
) -> Iterator[Callable[[Callable[[bytes], None]], str]]:
    """The real model (real-time, or the asynchronous endpoint in front of it) behind a proxy that calls
    ``on_request(body)`` with each invocation's request body before forwarding it; an asynchronous invocation's
    body is the S3 object it names."""
    servers: list[ThreadingHTTPServer] = []

    def start(on_request: Callable[[bytes], None]) -> str:
        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                input_location = self.headers.get("X-Amzn-SageMaker-InputLocation")
                if input_location:
                    bucket, _, key = input_location.removeprefix("s3://").partition("/")
                    on_request(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
                    target = urlsplit(async_inference.url)
                else:
                    on_request(body)
                    target = urlsplit(model_server_url)
                assert target.hostname is not None
                connection = HTTPConnection(target.hostname, target.port, timeout=120)
                connection.request(
                    "POST",
                    self.path,
                    body=body,
                    headers={
                        name: value
                        for name, value in self.headers.items()
                        if name.lower().startswith("x-amzn-sagemaker") or name.lower() == "content-type"
                    },
                )
                answer = connection.getresponse()
                payload = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                connection.close()

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        ASYNC_PROXIES.add(f"http://127.0.0.1:{server.server_port}")
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
