"""Large files and jobs: presigned uploads, S3 batch drops (inbox/), the SQS worker, job polling, signed webhooks.

The bucket and the queues are made from template.yaml (local_stack.template.create_buckets / create_queues) on the
session's serialised moto server, with the template's S3 -> SQS notification: every object that lands under
uploads/ or inbox/ puts moto's own S3 event message on the JobsQueue, as S3 does on AWS. The tests take those
messages off the queue and hand them to the worker's lambda_handler as Lambda's SQS event source mapping does
(local_stack.queue_poller.sqs_event), setting ApproximateReceiveCount where a redelivery is the point. The worker
and the transcribe handler are the real app.py files, cold-started with the template's environment; the model is
the real Whisper server, which reads the audio from moto's S3 by reference.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote_plus, urlsplit

import boto3
import pytest
import requests
import whisper_server
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from boto3.dynamodb.conditions import Attr
from infery import job_service, webhooks
from infery.jobs import Job, JobStatus
from infery.settings import get_settings

from local_stack.async_inference import LocalAsyncInference
from local_stack.queue_poller import sqs_event
from local_stack.template import LocalTemplate, async_endpoints, create_buckets, create_queues, create_topics
from tests.integration.support import (
    ROOT,
    TRANSCRIPTIONS,
    Api,
    LambdaContext,
    Reply,
    assert_error,
    assert_ok,
    free_port,
)
from tests.speech import encode, synthesize_wav, word_recall

WORKER_SOURCE = ROOT / "functions" / "worker" / "app.py"
UPLOADS = "/v1/uploads"
TRANSCRIPTION_JOBS = "/v1/audio/transcriptions/jobs"
SEEDED = 50
SHORT_SCRIPT = "The quick brown fox jumps over the lazy dog."
SHORT_WORDS = ("quick", "brown", "fox", "lazy", "dog")
BUSY = ({"message": "The endpoint is busy."}, {"x-amzn-ErrorType": "ServiceUnavailable"})
NOT_AUDIO = b"This is a plain text file that someone dropped into the batch folder by mistake.\n" * 40
TEXT_CONTENT_TYPES = {"text": "text/plain", "srt": "text/plain", "vtt": "text/plain"}


# ---------------------------------------------------------------------------------------------------------------
# fixtures: the bucket and queues, the worker, the queue, a webhook receiver


@pytest.fixture(scope="session")
def short_wav() -> bytes:
    """About 3 s of espeak-ng speech: quick to transcribe, and one credit."""
    return synthesize_wav(SHORT_SCRIPT)


@pytest.fixture(scope="session")
def audio_resources(moto_url: str, local_template: LocalTemplate) -> dict[str, str]:
    """The template's AudioBucket, JobsQueue and JobsDeadLetterQueue on the session's moto (made once)."""
    credentials = {"endpoint_url": moto_url, "region_name": local_template.region,
                   "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    s3, sqs = boto3.client("s3", **credentials), boto3.client("sqs", **credentials)
    bucket = local_template.physical_name("AudioBucket")
    existing_buckets = {entry["Name"] for entry in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing_buckets:  # another fixture of the session may have made them already
        create_queues(local_template, sqs)
        create_topics(local_template, boto3.client("sns", **credentials))
        create_buckets(local_template, s3)
    environment = local_template.function_environment("WorkerFunction")
    return {"bucket": environment["AUDIO_BUCKET_NAME"], "queue_url": environment["JOBS_QUEUE_URL"],
            "queue_arn": local_template.get_att("JobsQueue", "Arn"),
            "results_queue_url": local_template.resolve({"Ref": "InferenceResultsQueue"}),
            "results_queue_arn": local_template.get_att("InferenceResultsQueue", "Arn"),
            "jobs_table": environment["JOBS_TABLE_NAME"],
            "reservations_table": environment["RESERVATIONS_TABLE_NAME"],
            "ledger_table": environment["LEDGER_TABLE_NAME"]}


@pytest.fixture(autouse=True)
def storage_endpoints(monkeypatch: pytest.MonkeyPatch, aws_environment: None, moto_url: str,
                      audio_resources: dict[str, str]) -> None:
    """S3 and SQS at moto, for the handlers and for the model server (which reads audio_s3_uri with boto3)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", moto_url)
    whisper_server._s3_client.cache_clear()  # built on first use, from the environment of that moment


@pytest.fixture(scope="session")
def async_inference(model_server_url: str, moto_url: str, local_template: LocalTemplate,
                    audio_resources: dict[str, str]) -> Iterator[LocalAsyncInference]:
    """The local stack's asynchronous endpoint (local_stack/async_inference.py) in front of the real model server."""
    credentials = {"endpoint_url": moto_url, "region_name": local_template.region,
                   "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    server = LocalAsyncInference(async_endpoints(local_template), model_server_url, boto3.client("s3", **credentials),
                                 boto3.client("sns", **credentials), local_template.region)
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
            messages = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                                AttributeNames=["All"]).get("Messages", [])
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
        return self.reservations_table.scan(FilterExpression=Attr("key_id").eq(item.key_id),
                                            ConsistentRead=True)["Items"]

    def drop(self, item: Any, name: str, audio: bytes) -> str:
        """A batch user's drop: the file put straight into inbox/<key_id>/."""
        key = f"inbox/{item.key_id}/{name}"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=audio)
        return key


@pytest.fixture
def store(s3: Any, audio_resources: dict[str, str]) -> Store:
    dynamodb = boto3.resource("dynamodb")
    return Store(dynamodb.Table(audio_resources["jobs_table"]), dynamodb.Table(audio_resources["reservations_table"]),
                 s3, audio_resources["bucket"])


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
            messages = sqs.receive_message(QueueUrl=self.results_queue_url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=0, AttributeNames=["All"]).get("Messages", [])
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
        context = LambdaContext(function_name="infery-it-WorkerFunction",
                                invoked_function_arn="arn:aws:lambda:us-east-1:000000000000:function:"
                                                     "infery-it-WorkerFunction")
        return self.module.lambda_handler(event, context)


LoadWorker = Callable[..., Worker]


@pytest.fixture
def load_worker(monkeypatch: pytest.MonkeyPatch, storage_endpoints: None, local_template: LocalTemplate,
                audio_resources: dict[str, str], async_inference: LocalAsyncInference,
                model_server_url: str) -> Iterator[LoadWorker]:
    """Import the worker's app.py afresh (a new Lambda instance) with the environment template.yaml gives it.
    The real model server is reached as the worker reaches it: through the asynchronous endpoint."""

    def load(runtime_url: str, **environment: str) -> Worker:
        emulated = runtime_url == model_server_url or runtime_url in ASYNC_PROXIES
        if runtime_url == model_server_url:
            runtime_url = async_inference.url
        worker_environment = {name: value for name, value in local_template.function_environment("WorkerFunction")
                              .items() if not name.startswith("POWERTOOLS_METRICS")}
        # the webhook receivers of these tests listen on 127.0.0.1, which a deployed worker refuses (SSRF)
        for name, value in {**worker_environment, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": runtime_url,
                            "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true", **environment}.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        spec = importlib.util.spec_from_file_location("app", WORKER_SOURCE)  # Lambda's name for the handler module
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        # built now, from this instance's environment (clients are built on first use: see load_api)
        assert module.wiring.sagemaker_runtime_for_jobs is not None
        return Worker(module, audio_resources["queue_arn"], async_inference if emulated else None,
                      audio_resources["results_queue_url"], audio_resources["results_queue_arn"])

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

    ``deliver``'s ``sleep`` default is bound when webhooks.py is imported, so patching time.sleep would not reach
    it; the job service calls ``deliver`` through job_service's module global, which every loaded worker shares.
    """
    sleeps: list[float] = []
    monkeypatch.setattr(job_service, "deliver", functools.partial(webhooks.deliver, sleep=sleeps.append))
    return sleeps


# runtime URLs that reach the real model through the asynchronous endpoint (the worker's path to it)
ASYNC_PROXIES: set[str] = set()


@pytest.fixture
def model_proxy(async_inference: LocalAsyncInference, model_server_url: str,
                s3: Any) -> Iterator[Callable[[Callable[[bytes], None]], str]]:
    """The real model (real-time, or the asynchronous endpoint in front of it) behind a proxy that calls
    ``on_request(body)`` with each invocation's request body before forwarding it; an asynchronous invocation's
    body is the S3 object it names."""
    servers: list[ThreadingHTTPServer] = []

    def start(on_request: Callable[[bytes], None]) -> str:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                input_location = self.headers.get("X-Amzn-SageMaker-InputLocation")
                if input_location:
                    bucket, _, key = input_location.removeprefix("s3://").partition("/")
                    on_request(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
                    target = urlsplit(async_inference.url)
                else:
                    on_request(body)
                    target = urlsplit(model_server_url)
                connection = HTTPConnection(target.hostname, target.port, timeout=120)
                connection.request("POST", self.path, body=body,
                                    headers={name: value for name, value in self.headers.items()
                                             if name.lower().startswith("x-amzn-sagemaker")
                                             or name.lower() == "content-type"})
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


# ---------------------------------------------------------------------------------------------------------------
# helpers


def hand_built_message(body: dict[str, Any] | str, receive_count: int = 1) -> dict[str, Any]:
    """An SQS message as receive_message returns it, for bodies no S3 event produces."""
    return {"MessageId": str(uuid.uuid4()), "ReceiptHandle": uuid.uuid4().hex,
            "Body": body if isinstance(body, str) else json.dumps(body),
            "Attributes": {"ApproximateReceiveCount": str(receive_count), "SentTimestamp": "1795600000000"}}


def s3_test_event(bucket: str) -> dict[str, Any]:
    """What S3 sends once when a bucket's notification is configured."""
    return hand_built_message({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-25T11:00:00.000Z",
                               "Bucket": bucket})


def event_for(messages: list[dict[str, Any]], object_key: str) -> list[dict[str, Any]]:
    """The S3 event messages (from moto's notification) about ``object_key``; exactly one is expected."""
    found = [message for message in messages
             if any(record["s3"]["object"]["key"] == quote_plus(object_key)
                    for record in json.loads(message["Body"]).get("Records", []))]
    assert len(found) == 1, [message["Body"] for message in messages]
    assert json.loads(found[0]["Body"])["Records"][0]["eventName"].startswith("ObjectCreated:")
    return found


def drop_and_receive(store: Store, queue: JobsQueue, item: Any, name: str, audio: bytes) -> list[dict[str, Any]]:
    """Drop a file into the key's inbox/ and take the S3 event message its arrival put on the queue."""
    object_key = store.drop(item, name, audio)
    return event_for(queue.drain(), object_key)


def redelivered(worker: Worker, messages: list[dict[str, Any]], receive_count: int) -> set[str]:
    """The ids of the messages SQS will deliver again: those in batchItemFailures, or all of them when the handler
    raised (powertools raises BatchProcessingError when every record of the batch failed; the event source mapping
    then retries the whole batch)."""
    try:
        response = worker.deliver(messages, receive_count=receive_count)
    except BatchProcessingError:
        return {message["MessageId"] for message in messages}
    return {failure["itemIdentifier"] for failure in response["batchItemFailures"]}


def assert_no_batch_failures(response: dict[str, Any]) -> None:
    assert response == {"batchItemFailures": []}, response


def ledger_of(accounts: Any, item: Any) -> list[dict[str, Any]]:
    return accounts.ledger(item)


def entries_of(accounts: Any, item: Any, request_id: str) -> dict[str, dict[str, Any]]:
    """One request's ledger entries by kind (entry ids are request_id#kind: one of each at most)."""
    return {entry["kind"]: entry for entry in ledger_of(accounts, item) if entry["request_id"] == request_id}


def ledger_sum(accounts: Any, item: Any) -> int:
    return sum(int(entry["credits"]) for entry in ledger_of(accounts, item))


def assert_charged_once(accounts: Any, store: Store, item: Any, request_id: str, seeded: int = SEEDED) -> int:
    """One reserve and one settle, both for ``request_id``, nothing else charged; returns the credits billed."""
    charges = [entry for entry in ledger_of(accounts, item) if entry["kind"] != "topup"]
    assert {entry["request_id"] for entry in charges} == {request_id}, charges
    entries = entries_of(accounts, item, request_id)
    assert set(entries) == {"reserve", "settle"}, entries
    assert entries["reserve"]["entry_id"] == f"{request_id}#reserve"
    billed = int(entries["settle"]["billed_credits"])
    assert billed >= 1
    assert accounts.balance(item) == seeded - billed
    assert ledger_sum(accounts, item) == seeded - billed
    assert store.open_reservations(item) == []
    return billed


def assert_nothing_charged(accounts: Any, store: Store, item: Any, seeded: int = SEEDED) -> None:
    """The balance as seeded, nothing settled, every reservation given back."""
    assert accounts.balance(item) == seeded
    assert [entry for entry in ledger_of(accounts, item) if entry["kind"] == "settle"] == []
    assert ledger_sum(accounts, item) == seeded
    assert store.open_reservations(item) == []


def post_upload(api: Api, api_key: str | None, body: dict[str, Any] | None = None) -> Reply:
    payload = b"" if body is None else json.dumps(body).encode()
    return api.call("POST", UPLOADS, body=payload, content_type="application/json" if body is not None else None,
                    api_key=api_key)


def get_job(api: Api, api_key: str | None, job_id: str, *, result: bool = False, query: str = "") -> Reply:
    resource = "/v1/jobs/{job_id}/result" if result else "/v1/jobs/{job_id}"
    path = f"/v1/jobs/{job_id}" + ("/result" if result else "") + query
    return api.call("GET", path, api_key=api_key, resource=resource)


def upload_to_s3(upload: dict[str, Any], audio: bytes, filename: str = "meeting.wav") -> None:
    """What a client does with POST /v1/uploads' answer: a form POST of the fields and the file to upload_url."""
    answer = requests.post(upload["upload_url"], data=upload["fields"], files={"file": (filename, audio)},
                           timeout=30)
    assert answer.status_code in (200, 201, 204), answer.text


def decoded_policy(upload: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(upload["fields"]["policy"]))


def assert_transcript(text: str) -> None:
    assert word_recall(text, SHORT_WORDS) >= 0.8, text


# ---------------------------------------------------------------------------------------------------------------
# 1. the worker: S3 drops into inbox/ become transcribed, stored and charged jobs


def test_the_s3_test_event_is_acknowledged_and_starts_nothing(worker, store, accounts, audio_resources):
    api_key, item = accounts.new_key(SEEDED)
    assert_no_batch_failures(worker.deliver([s3_test_event(audio_resources["bucket"])]))
    assert store.jobs_of(item) == []
    assert_nothing_charged(accounts, store, item)


def test_an_inbox_drop_becomes_a_transcribed_job_charged_once(load_worker, model_proxy, store, jobs_queue, accounts,
                                                              short_wav):
    inferences: list[dict[str, Any]] = []
    worker = load_worker(model_proxy(lambda body: inferences.append(json.loads(body))))
    api_key, item = accounts.new_key(SEEDED)
    name = "weekly sync 2026-11-24.wav"  # S3 events URL-encode the key: the space arrives as '+'
    object_key = store.drop(item, name, short_wav)
    messages = event_for(jobs_queue.drain(), object_key)

    response = worker.deliver(messages)

    assert_no_batch_failures(response)
    job = store.only_job(item)
    assert job.status is JobStatus.SUCCEEDED, job
    assert job.error is None and job.progress == 1.0 and job.attempts == 1
    assert job.filename == name and job.source_uri == f"s3://{store.bucket}/{object_key}"
    assert job.job_id.startswith("job_")
    assert store.results_of(item) == [f"results/{item.key_id}/{job.job_id}.json"]
    stored_result = json.loads(store.s3.get_object(Bucket=store.bucket, Key=job.result_key)["Body"].read())
    assert_transcript(stored_result["text"])
    assert 1.5 < stored_result["duration"] < 6 and job.audio_seconds == pytest.approx(stored_result["duration"])
    billed = assert_charged_once(accounts, store, item, job.job_id)
    assert job.credits_used == billed == 1  # a 3 s clip: one started 5 s
    assert entries_of(accounts, item, job.job_id)["settle"]["model"] == job.options.model
    # the model read the file from the bucket itself: a 25 MB file would not fit SageMaker's 6 MB request body
    assert len(inferences) == 1
    assert inferences[0]["audio_s3_uri"] == job.source_uri and inferences[0].get("audio") is None


def test_an_inbox_drop_whose_name_has_a_plus_is_transcribed(worker, store, jobs_queue, accounts, short_wav):
    api_key, item = accounts.new_key(SEEDED)
    object_key = store.drop(item, "q1+q2 review.wav", short_wav)
    assert_no_batch_failures(worker.deliver(event_for(jobs_queue.drain(), object_key)))
    job = store.only_job(item)
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert_charged_once(accounts, store, item, job.job_id)


def test_objects_outside_a_known_keys_prefix_start_nothing(worker, store, jobs_queue, accounts, short_wav):
    api_key, item = accounts.new_key(SEEDED)
    ledger_before = ledger_of(accounts, item)
    strays = [f"inbox/key_{'0' * 16}/nobody's.wav",  # a well-formed key id that no key has
              f"inbox/not-a-key-id/{item.key_id}.wav",
              f"inbox/{item.key_id}",  # the prefix itself, no file name
              f"elsewhere/{item.key_id}/file.wav"]  # outside uploads/ and inbox/: S3 sends no event; the worker ignores
    for key in strays:
        store.s3.put_object(Bucket=store.bucket, Key=key, Body=short_wav)
    messages = jobs_queue.drain()
    assert len(messages) == 3  # the template's notification filters on uploads/ and inbox/
    hand_made = hand_built_message({"Records": [{
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": store.bucket}, "object": {"key": strays[3], "size": len(short_wav), "eTag": "x"}},
    }]})
    assert_no_batch_failures(worker.deliver([*messages, hand_made]))
    assert store.jobs_of(item) == []
    assert ledger_of(accounts, item) == ledger_before
    assert store.results_of(item) == []


def test_a_message_that_is_not_json_fails_alone_and_the_rest_of_the_batch_is_done(worker, audio_resources):
    garbage = hand_built_message("this is not an S3 event")
    test_event = s3_test_event(audio_resources["bucket"])
    response = worker.deliver([garbage, test_event])
    assert response == {"batchItemFailures": [{"itemIdentifier": garbage["MessageId"]}]}  # it goes to the DLQ


def test_a_job_message_for_an_unknown_job_is_acknowledged(worker):
    assert_no_batch_failures(worker.deliver([hand_built_message({"job_id": "job_" + "0" * 32})]))


# ---------------------------------------------------------------------------------------------------------------
# 2. at-least-once delivery: one object, one job, one result, one charge


def test_the_same_s3_event_delivered_twice_is_one_job_and_one_charge(worker, store, jobs_queue, accounts,
                                                                       short_wav):
    api_key, item = accounts.new_key(SEEDED)
    messages = drop_and_receive(store, jobs_queue, item, "standup.wav", short_wav)

    assert_no_batch_failures(worker.deliver(messages))
    first = store.only_job(item)
    ledger_after_first = ledger_of(accounts, item)
    assert_no_batch_failures(worker.deliver(messages, receive_count=2))  # SQS redelivers; S3 may send twice

    job = store.only_job(item)
    assert job.job_id == first.job_id and job.status is JobStatus.SUCCEEDED
    assert job.attempts == 1  # claimed once: the second delivery found it finished
    assert job.updated_at == first.updated_at
    assert ledger_of(accounts, item) == ledger_after_first
    assert store.results_of(item) == [f"results/{item.key_id}/{job.job_id}.json"]
    assert_charged_once(accounts, store, item, job.job_id)


def test_a_second_delivery_while_the_first_is_transcribing_is_acknowledged_and_charges_nothing(
        load_worker, model_proxy, store, jobs_queue, accounts, short_wav):
    """Two Lambda instances get the same S3 event at once: the second arrives while the first holds the job."""
    api_key, item = accounts.new_key(SEEDED)
    messages = drop_and_receive(store, jobs_queue, item, "all-hands.wav", short_wav)
    inference_started, second_delivery_done = threading.Event(), threading.Event()
    invocations: list[None] = []

    def hold(_: bytes) -> None:  # keep the first worker's inference in flight until the second delivery is handled
        invocations.append(None)
        inference_started.set()
        assert second_delivery_done.wait(60)

    model_url = model_proxy(hold)
    first_worker, second_worker = load_worker(model_url), load_worker(model_url)
    first_response: list[dict[str, Any]] = []
    first = threading.Thread(target=lambda: first_response.append(first_worker.deliver(messages)))
    first.start()
    try:
        assert inference_started.wait(60)
        running = store.only_job(item)
        assert running.status is JobStatus.RUNNING and running.lease_until > 0
        second_response = second_worker.deliver(messages)
        assert store.only_job(item).status is JobStatus.RUNNING  # the duplicate took nothing from the first
    finally:
        second_delivery_done.set()
        first.join(120)

    assert_no_batch_failures(second_response)  # acknowledged: the job is in good hands
    assert first_response and first_response[0] == {"batchItemFailures": []}
    assert len(invocations) == 1  # the model ran once
    job = store.only_job(item)
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 1
    assert store.results_of(item) == [f"results/{item.key_id}/{job.job_id}.json"]
    assert_charged_once(accounts, store, item, job.job_id)


def test_two_deliveries_started_together_make_one_job_and_one_charge(load_worker, model_server_url, store,
                                                                      jobs_queue, accounts, short_wav):
    """Both race from the start: to create the job, then to claim it."""
    api_key, item = accounts.new_key(SEEDED)
    messages = drop_and_receive(store, jobs_queue, item, "race.wav", short_wav)
    workers = [load_worker(model_server_url), load_worker(model_server_url)]
    barrier = threading.Barrier(2)
    responses: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def deliver(worker: Worker) -> None:
        try:
            barrier.wait(30)
            responses.append(worker.deliver(messages))
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=deliver, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert responses == [{"batchItemFailures": []}] * 2
    job = store.only_job(item)
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 1
    assert store.results_of(item) == [f"results/{item.key_id}/{job.job_id}.json"]
    assert_charged_once(accounts, store, item, job.job_id)


# ---------------------------------------------------------------------------------------------------------------
# 3. poisoned and refused drops: the job fails with a clear code, nothing is charged, nothing goes to the DLQ

CORRUPT_WAV = b"RIFF" + (4000).to_bytes(4, "little") + b"WAVEfmt " + bytes(range(256)) * 16


@pytest.mark.parametrize(("audio", "code"), [
    pytest.param(NOT_AUDIO, "unsupported_audio_format", id="text-file"),
    pytest.param(b"\x89PNG\r\n\x1a\n" + bytes(2048), "unsupported_audio_format", id="png-image"),
    pytest.param(b"", "empty_file", id="empty-object"),
    pytest.param(CORRUPT_WAV, "undecodable_audio", id="wav-header-then-garbage"),
])
def test_a_poisoned_drop_fails_its_job_clearly_and_charges_nothing(worker, store, jobs_queue, accounts, audio,
                                                                    code):
    api_key, item = accounts.new_key(SEEDED)
    messages = drop_and_receive(store, jobs_queue, item, "poison.wav", audio)

    for receive_count in (1, 2):  # the same event again must not retry, re-fail or charge anything
        assert_no_batch_failures(worker.deliver(messages, receive_count=receive_count))
        job = store.only_job(item)
        assert job.status is JobStatus.FAILED
        assert job.error is not None and job.error.code == code, job.error
        assert job.error.message and "Traceback" not in job.error.message
        assert job.attempts == 1 and job.result_key is None and job.credits_used is None
    assert store.results_of(item) == []
    assert_nothing_charged(accounts, store, item)
    charges = [entry for entry in ledger_of(accounts, item) if entry["kind"] != "topup"]
    if code == "undecodable_audio":  # the model had to try: its reservation came back whole
        assert {entry["kind"] for entry in charges} == {"reserve", "refund"}
    else:  # refused before any reservation
        assert charges == []


def test_a_drop_over_the_upload_limit_fails_as_too_large_and_charges_nothing(load_worker, fake_runtime, store,
                                                                               jobs_queue, accounts, short_wav):
    url, model = fake_runtime(200, {"never": "called"})
    worker = load_worker(url, MAX_UPLOAD_BYTES=str(len(short_wav) // 2))
    api_key, item = accounts.new_key(SEEDED)
    assert_no_batch_failures(worker.deliver(drop_and_receive(store, jobs_queue, item, "big.wav", short_wav)))
    job = store.only_job(item)
    assert job.status is JobStatus.FAILED and job.error is not None and job.error.code == "audio_too_large"
    assert model.calls == 0
    assert_nothing_charged(accounts, store, item)


@pytest.mark.parametrize(("credits", "policy", "code"), [
    pytest.param(0, {}, "insufficient_credits", id="no-credits"),
    pytest.param(SEEDED, {"allowed_models": ["some-other-model"]}, "model_not_allowed", id="model-not-allowed"),
])
def test_a_drop_the_key_may_not_pay_for_fails_and_charges_nothing(load_worker, fake_runtime, store, jobs_queue,
                                                                  accounts, short_wav, credits, policy, code):
    url, model = fake_runtime(200, {"never": "called"})
    worker = load_worker(url)
    api_key, item = accounts.new_key(credits, **policy)
    assert_no_batch_failures(worker.deliver(drop_and_receive(store, jobs_queue, item, "a.wav", short_wav)))
    job = store.only_job(item)
    assert job.status is JobStatus.FAILED and job.error is not None and job.error.code == code, job.error
    assert model.calls == 0
    assert_nothing_charged(accounts, store, item, credits)


def test_a_revoked_keys_drop_fails_and_charges_nothing(load_worker, fake_runtime, store, jobs_queue, accounts,
                                                       short_wav):
    url, model = fake_runtime(200, {"never": "called"})
    worker = load_worker(url)
    api_key, item = accounts.new_key(SEEDED)
    accounts.revoke(item)
    assert_no_batch_failures(worker.deliver(drop_and_receive(store, jobs_queue, item, "a.wav", short_wav)))
    for job in store.jobs_of(item):  # refusing to create the job at all would be as good
        assert job.status is JobStatus.FAILED and job.error is not None and job.error.code == "revoked_api_key"
    assert model.calls == 0
    assert_nothing_charged(accounts, store, item)


def test_an_expired_keys_drop_is_not_transcribed_or_charged(worker, store, jobs_queue, accounts, short_wav):
    api_key, item = accounts.new_key(SEEDED, expires_at="2020-01-01T00:00:00Z")
    assert_no_batch_failures(worker.deliver(drop_and_receive(store, jobs_queue, item, "a.wav", short_wav)))
    for job in store.jobs_of(item):
        assert job.status is JobStatus.FAILED and job.error is not None and job.error.code == "expired_api_key"
    assert_nothing_charged(accounts, store, item)


# ---------------------------------------------------------------------------------------------------------------
# 4. transient endpoint failures: retried through SQS, refunded each time, failed on the last delivery


def test_a_busy_endpoint_is_retried_by_sqs_and_the_last_delivery_fails_the_job(load_worker, fake_runtime, store,
                                                                                jobs_queue, accounts, short_wav,
                                                                                audio_resources):
    url, model = fake_runtime(503, *BUSY)
    worker = load_worker(url)
    assert get_settings().worker_max_receives == 3
    api_key, item = accounts.new_key(SEEDED)
    messages = drop_and_receive(store, jobs_queue, item, "busy.wav", short_wav)
    message_id = messages[0]["MessageId"]

    # a batch with an innocent message beside it: only the failing one is reported
    response = worker.deliver([*messages, s3_test_event(audio_resources["bucket"])], receive_count=1)
    assert response == {"batchItemFailures": [{"itemIdentifier": message_id}]}
    assert model.calls == 1
    job = store.only_job(item)
    assert job.status is JobStatus.QUEUED and job.lease_until == 0 and job.error is None
    entries = entries_of(accounts, item, job.job_id)
    assert set(entries) == {"reserve", "refund"}
    assert int(entries["refund"]["credits"]) == -int(entries["reserve"]["credits"]) >= 1
    assert_nothing_charged(accounts, store, item)

    assert redelivered(worker, messages, receive_count=2) == {message_id}  # alone in its batch, as BatchSize is 1
    assert store.only_job(item).status is JobStatus.QUEUED
    assert_nothing_charged(accounts, store, item)

    assert_no_batch_failures(worker.deliver(messages, receive_count=3))  # the last: failed here, not in the DLQ
    job = store.only_job(item)
    assert job.status is JobStatus.FAILED and job.error is not None and job.error.code
    assert job.attempts == 3
    assert "nothing was charged" in job.error.message
    assert store.results_of(item) == []
    assert_nothing_charged(accounts, store, item)

    assert_no_batch_failures(worker.deliver(messages, receive_count=4))  # a straggler changes nothing
    assert store.only_job(item).attempts == 3


def test_a_job_retried_after_a_transient_failure_succeeds_once_the_endpoint_recovers(
        load_worker, fake_runtime, model_server_url, store, jobs_queue, accounts, short_wav):
    url, _ = fake_runtime(503, *BUSY)
    busy_worker = load_worker(url)
    api_key, item = accounts.new_key(SEEDED)
    messages = drop_and_receive(store, jobs_queue, item, "retry.wav", short_wav)
    assert redelivered(busy_worker, messages, receive_count=1) == {messages[0]["MessageId"]}
    assert store.only_job(item).status is JobStatus.QUEUED

    recovered = load_worker(model_server_url)
    assert redelivered(recovered, messages, receive_count=2) == set()
    job = store.only_job(item)
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert store.results_of(item) == [f"results/{item.key_id}/{job.job_id}.json"]
    assert accounts.balance(item) == SEEDED - (job.credits_used or 0) and job.credits_used == 1
    assert [entry for entry in ledger_of(accounts, item) if entry["kind"] == "settle"] != []
    assert store.open_reservations(item) == []


def test_every_delivery_of_a_job_tries_the_endpoint_and_the_final_error_names_its_failure(
        load_worker, fake_runtime, store, jobs_queue, accounts, short_wav):
    url, model = fake_runtime(503, *BUSY)
    worker = load_worker(url)
    api_key, item = accounts.new_key(SEEDED)
    messages = drop_and_receive(store, jobs_queue, item, "busy.wav", short_wav)
    assert [redelivered(worker, messages, receive_count) != set() for receive_count in (1, 2, 3)] == [
        True, True, False]
    assert model.calls == 3
    job = store.only_job(item)
    assert job.error is not None and job.error.code == "model_unavailable"
    assert_nothing_charged(accounts, store, item)


# ---------------------------------------------------------------------------------------------------------------
# 5. signed webhooks


def create_job_with_webhook(api: Api, api_key: str, audio: bytes, webhook_url: str, **fields: Any) -> dict[str, Any]:
    reply = api.transcribe(api_key, audio, path=TRANSCRIPTION_JOBS, webhook_url=webhook_url, **fields)
    assert reply.status == 202, reply.text
    created = reply.json()
    assert created["status"] == "queued" and created["webhook_secret"].startswith("whsec_")
    return created


def test_a_finished_job_posts_one_signed_webhook(jobs_api, worker, store, jobs_queue, accounts, short_wav,
                                                 webhook_receiver, webhook_sleeps):
    receiver = webhook_receiver()
    api_key, item = accounts.new_key(SEEDED)
    created = create_job_with_webhook(jobs_api, api_key, short_wav, receiver.url, response_format="verbose_json")
    secret = created["webhook_secret"]

    assert_no_batch_failures(worker.deliver(jobs_queue.drain()))  # the job message, and the S3 event of its audio

    assert len(receiver.requests) == 1 and webhook_sleeps == []
    request = receiver.requests[0]
    assert request["path"] == "/hooks/infery?source=it"
    assert request["headers"]["Content-Type"] == "application/json"
    body, signature = request["body"], request["headers"][webhooks.SIGNATURE_HEADER]
    assert webhooks.verify(body, signature, secret)
    notification = json.loads(body)
    assert notification["id"] == created["id"] and notification["status"] == "succeeded"
    assert_transcript(notification["result"]["text"])
    assert notification["result"]["segments"]  # rendered in the job's response_format, verbose_json
    assert secret not in body.decode() and "key_hash" not in notification and "webhook_secret" not in notification

    # a forged or replayed notification does not verify
    timestamp = int(signature.split(",")[0].removeprefix("t="))
    tampered = body.replace(b'"succeeded"', b'"failed"')
    assert tampered != body and not webhooks.verify(tampered, signature, secret)
    assert not webhooks.verify(body + b" ", signature, secret)
    assert not webhooks.verify(body, signature, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert not webhooks.verify(body, signature, "whsec_" + "x" * 43)
    assert not webhooks.verify(body, signature, secret, now=timestamp + webhooks.DEFAULT_TOLERANCE_SECONDS + 1)
    assert not webhooks.verify(body, signature.split(",")[0], secret)  # no v1
    assert not webhooks.verify(body, "garbage", secret)
    forged = webhooks.sign(body, secret, timestamp)
    assert not webhooks.verify(body, forged[:-1] + ("1" if forged[-1] == "0" else "0"), secret)  # one digit off

    job = get_job(jobs_api, api_key, created["id"]).json()
    assert [attempt["status_code"] for attempt in job["webhook_attempts"]] == [200]
    assert "webhook_secret" not in job
    assert_charged_once(accounts, store, item, created["id"])


def test_an_uploads_webhook_is_signed_with_the_secret_post_uploads_returned(jobs_api, worker, store, jobs_queue,
                                                                            accounts, short_wav, webhook_receiver,
                                                                            webhook_sleeps):
    receiver = webhook_receiver()
    api_key, item = accounts.new_key(SEEDED)
    upload = post_upload(jobs_api, api_key, {"webhook_url": receiver.url}).json()
    other_secret = post_upload(jobs_api, api_key, {"webhook_url": receiver.url}).json()["webhook_secret"]
    secret = upload["webhook_secret"]
    assert secret.startswith("whsec_") and other_secret != secret  # one secret per job
    assert "webhook_secret" not in get_job(jobs_api, api_key, upload["job_id"]).json()
    upload_to_s3(upload, short_wav)
    assert_no_batch_failures(worker.deliver(event_for(jobs_queue.drain(), upload["fields"]["key"])))

    assert len(receiver.requests) == 1
    body, signature = receiver.requests[0]["body"], receiver.requests[0]["headers"][webhooks.SIGNATURE_HEADER]
    assert webhooks.verify(body, signature, secret)
    assert not webhooks.verify(body, signature, other_secret)
    assert json.loads(body)["id"] == upload["job_id"] and json.loads(body)["status"] == "succeeded"
    assert_charged_once(accounts, store, item, upload["job_id"])


def test_a_webhook_refused_twice_is_retried_with_backoff_and_every_attempt_is_recorded(
        jobs_api, worker, store, jobs_queue, accounts, short_wav, webhook_receiver, webhook_sleeps):
    receiver = webhook_receiver(500, 500)
    api_key, item = accounts.new_key(SEEDED)
    created = create_job_with_webhook(jobs_api, api_key, short_wav, receiver.url)

    assert_no_batch_failures(worker.deliver(jobs_queue.drain()))

    assert len(receiver.requests) == 3
    assert webhook_sleeps == list(webhooks.RETRY_DELAYS_SECONDS[:2])
    for request in receiver.requests:  # each attempt signed afresh, over the same notification
        assert webhooks.verify(request["body"], request["headers"][webhooks.SIGNATURE_HEADER],
                               created["webhook_secret"])
        assert request["body"] == receiver.requests[0]["body"]
    reply = get_job(jobs_api, api_key, created["id"])
    assert_ok(reply)
    job = reply.json()
    assert job["status"] == "succeeded"
    assert [attempt["status_code"] for attempt in job["webhook_attempts"]] == [500, 500, 200]
    assert all(attempt["at"] for attempt in job["webhook_attempts"])
    assert_charged_once(accounts, store, item, created["id"])


def test_a_webhook_that_never_answers_is_given_up_without_failing_the_job(jobs_api, worker, store, jobs_queue,
                                                                           accounts, webhook_sleeps):
    """A failed job notifies too; an unreachable receiver costs the attempts and nothing else."""
    unreachable = f"http://127.0.0.1:{free_port()}/hook"
    api_key, item = accounts.new_key(SEEDED)
    created = create_job_with_webhook(jobs_api, api_key, CORRUPT_WAV, unreachable)  # a WAV header: accepted

    assert_no_batch_failures(worker.deliver(jobs_queue.drain()))  # not retried through SQS for the webhook

    job = get_job(jobs_api, api_key, created["id"]).json()
    assert job["status"] == "failed" and job["error"]["code"] == "undecodable_audio"
    attempts = job["webhook_attempts"]
    assert len(attempts) == 1 + len(webhooks.RETRY_DELAYS_SECONDS)
    assert all(attempt.get("status_code") is None and attempt["error"] for attempt in attempts)
    assert webhook_sleeps == list(webhooks.RETRY_DELAYS_SECONDS)
    assert_nothing_charged(accounts, store, item)


# ---------------------------------------------------------------------------------------------------------------
# 6. the API: uploads, jobs, results


def test_an_upload_runs_its_job_on_arrival_and_the_result_comes_in_every_format(
        jobs_api, worker, store, jobs_queue, accounts, short_wav):
    api_key, item = accounts.new_key(SEEDED)
    other_key, _ = accounts.new_key(SEEDED)
    reply = post_upload(jobs_api, api_key, {"filename": "board meeting.wav", "response_format": "srt"})
    assert reply.status == 201, reply.text
    upload = reply.json()
    upload_id, job_id = upload["id"], upload["job_id"]
    object_key = f"uploads/{item.key_id}/{upload_id}"
    assert upload_id.startswith("upl_") and job_id == "job_" + upload_id.removeprefix("upl_")
    assert upload["method"] == "POST" and upload["fields"]["key"] == object_key
    assert urlsplit(upload["upload_url"]).path.rstrip("/").endswith(store.bucket)
    assert upload["max_bytes"] == get_settings().max_upload_bytes == 25_000_000
    assert upload["webhook_secret"] is None  # no webhook asked for
    conditions = decoded_policy(upload)["conditions"]
    assert ["content-length-range", 1, 25_000_000] in conditions
    assert {"key": object_key} in conditions and {"bucket": store.bucket} in conditions

    waiting = get_job(jobs_api, api_key, job_id)
    assert_ok(waiting)
    assert waiting.json()["status"] == "awaiting_upload" and "result" not in waiting.json()
    assert_error(get_job(jobs_api, api_key, job_id, result=True), 409, "job_not_finished")
    for other in (get_job(jobs_api, other_key, job_id), get_job(jobs_api, other_key, job_id, result=True)):
        assert_error(other, 404, "job_not_found")

    upload_to_s3(upload, short_wav)
    messages = event_for(jobs_queue.drain(), object_key)
    assert_no_batch_failures(worker.deliver(messages))

    finished = get_job(jobs_api, api_key, job_id)
    assert_ok(finished)
    view = finished.json()
    assert view["id"] == job_id and view["object"] == "transcription.job" and view["status"] == "succeeded"
    assert view["filename"] == "board meeting.wav" and view["upload_id"] == upload_id
    assert view["result"].startswith("1\n00:00:0") and " --> " in view["result"]  # the job's own format, srt
    for hidden in ("key_hash", "webhook_secret", "lease_until", "result_key", "source_uri"):
        assert hidden not in view
    assert_error(get_job(jobs_api, other_key, job_id), 404, "job_not_found")  # finished, and still not theirs
    billed = assert_charged_once(accounts, store, item, job_id)
    assert view["credits_used"] == billed

    ledger_before = ledger_of(accounts, item)
    results = {}
    for response_format in ("json", "text", "srt", "verbose_json", "vtt"):
        reply = get_job(jobs_api, api_key, job_id, result=True, query=f"?response_format={response_format}")
        assert_ok(reply)
        content_type = reply.header("content-type") or ""
        assert content_type.startswith(TEXT_CONTENT_TYPES.get(response_format, "application/json")), content_type
        assert reply.header("x-infery-credits-used") == str(billed)
        assert reply.header("x-infery-credits-balance") == str(SEEDED - billed)  # as on every successful answer
        results[response_format] = reply.text
    assert json.loads(results["json"]) == {"text": json.loads(results["json"])["text"], "credits_used": billed}
    assert_transcript(json.loads(results["json"])["text"])
    assert_transcript(results["text"])
    assert results["srt"].startswith("1\n") and "00:00:00," in results["srt"]
    assert results["vtt"].startswith("WEBVTT") and "00:00:00." in results["vtt"]
    verbose = json.loads(results["verbose_json"])
    assert verbose["task"] == "transcribe" and verbose["language"] == "en" and verbose["segments"]
    assert verbose["duration"] == pytest.approx(view["audio_seconds"])
    default = get_job(jobs_api, api_key, job_id, result=True)
    assert default.text == results["srt"] and (default.header("content-type") or "").startswith("text/plain")
    assert_error(get_job(jobs_api, api_key, job_id, result=True, query="?response_format=docx"), 400,
                 "invalid_value", param="response_format")
    assert ledger_of(accounts, item) == ledger_before  # reading a result costs nothing


def test_an_upload_for_the_sync_call_starts_no_job_and_is_transcribed_and_charged_once(
        load_api, model_proxy, worker, store, jobs_queue, accounts, short_wav):
    inferences: list[dict[str, Any]] = []
    jobs_api = load_api(model_proxy(lambda body: inferences.append(json.loads(body))))
    api_key, item = accounts.new_key(SEEDED)
    reply = post_upload(jobs_api, api_key, {"start_job": False})
    assert reply.status == 201, reply.text
    upload = reply.json()
    assert "job_id" not in upload
    upload_to_s3(upload, short_wav)
    object_key = f"uploads/{item.key_id}/{upload['id']}"
    assert_no_batch_failures(worker.deliver(event_for(jobs_queue.drain(), object_key)))
    assert store.jobs_of(item) == []  # its arrival started nothing
    assert_nothing_charged(accounts, store, item)

    reply = jobs_api.transcribe(api_key, None, upload_id=upload["id"], response_format="verbose_json")
    assert_ok(reply)
    transcript = reply.json()
    assert_transcript(transcript["text"])
    billed = assert_charged_once(accounts, store, item, reply.request_id)
    assert reply.header("x-infery-credits-used") == str(billed) == str(transcript["credits_used"])
    assert reply.header("x-infery-credits-balance") == str(SEEDED - billed)
    assert len(inferences) == 1  # by reference, from the key's own upload slot
    assert inferences[0]["audio_s3_uri"] == f"s3://{store.bucket}/{object_key}" and inferences[0].get("audio") is None


def test_an_upload_is_only_its_own_keys(jobs_api, store, jobs_queue, accounts, short_wav, fake_runtime, load_api):
    owner_key, _ = accounts.new_key(SEEDED)
    upload = post_upload(jobs_api, owner_key, {"start_job": False}).json()
    upload_to_s3(upload, short_wav)
    jobs_queue.drain()
    url, model = fake_runtime(200, {"never": "called"})
    api = load_api(url)
    thief_key, thief = accounts.new_key(SEEDED)
    not_uploaded = post_upload(api, thief_key, {"start_job": False}).json()["id"]
    for upload_id in (upload["id"], not_uploaded, "upl_" + "0" * 32):
        for reply in (api.transcribe(thief_key, None, upload_id=upload_id),
                      api.transcribe_json(thief_key, None, upload_id=upload_id),
                      api.transcribe(thief_key, None, path=TRANSCRIPTION_JOBS, upload_id=upload_id)):
            assert_error(reply, 404, "upload_not_found", param="upload_id")
    assert model.calls == 0
    assert store.jobs_of(thief) == []
    assert jobs_queue.drain() == []
    assert_nothing_charged(accounts, store, thief)


@pytest.mark.parametrize("upload_id", [
    "upl_123", "upl_" + "0" * 31, "upl_" + "A" * 32, "upl_" + "0" * 33, "0" * 32, "job_" + "0" * 32,
    "upl_" + "0" * 32 + "/../x", f"../key_{'0' * 16}/upl_{'0' * 32}", "",
])
def test_a_malformed_upload_id_is_400(upload_id, fake_runtime, load_api, accounts, store):
    url, model = fake_runtime(200, {"never": "called"})
    api = load_api(url)
    api_key, item = accounts.new_key(SEEDED)
    for reply in (api.transcribe(api_key, None, upload_id=upload_id),
                  api.transcribe_json(api_key, None, upload_id=upload_id),
                  api.transcribe(api_key, None, path=TRANSCRIPTION_JOBS, upload_id=upload_id)):
        assert_error(reply, 400, "invalid_upload_id", param="upload_id")
    assert model.calls == 0 and store.jobs_of(item) == []
    assert_nothing_charged(accounts, store, item)


def test_a_json_upload_id_that_is_not_a_string_is_400(fake_runtime, load_api, accounts):
    url, _ = fake_runtime(200, {"never": "called"})
    api_key, _ = accounts.new_key(SEEDED)
    reply = load_api(url).call("POST", TRANSCRIPTIONS, body=json.dumps({"model": "whisper-1", "upload_id": 7})
                               .encode(), content_type="application/json", api_key=api_key)
    assert_error(reply, 400, "invalid_upload_id", param="upload_id")


def test_a_file_and_an_upload_id_together_are_400(fake_runtime, load_api, accounts, store, short_wav):
    url, model = fake_runtime(200, {"never": "called"})
    api = load_api(url)
    api_key, item = accounts.new_key(SEEDED)
    upload_id = "upl_" + "0" * 32
    for reply in (api.transcribe(api_key, short_wav, upload_id=upload_id),
                  api.transcribe_json(api_key, short_wav, upload_id=upload_id),
                  api.transcribe(api_key, short_wav, path=TRANSCRIPTION_JOBS, upload_id=upload_id)):
        assert_error(reply, 400, "ambiguous_audio", param="upload_id")
    assert model.calls == 0 and store.jobs_of(item) == []
    assert_nothing_charged(accounts, store, item)


def test_an_upload_over_the_upload_limit_is_413_on_the_sync_call(fake_runtime, load_api, accounts, store,
                                                                jobs_queue, short_wav):
    url, model = fake_runtime(200, {"never": "called"})
    api = load_api(url, MAX_UPLOAD_BYTES=str(len(short_wav) // 2))
    api_key, item = accounts.new_key(SEEDED)
    upload = post_upload(api, api_key, {"start_job": False}).json()
    assert ["content-length-range", 1, len(short_wav) // 2] in decoded_policy(upload)["conditions"]
    upload_to_s3(upload, short_wav)  # moto does not enforce the policy's size range; S3 would refuse this
    jobs_queue.drain()
    error = assert_error(api.transcribe(api_key, None, upload_id=upload["id"]), 413, "audio_too_large",
                         param="upload_id")
    assert "MB" in error["message"]
    assert model.calls == 0
    assert_nothing_charged(accounts, store, item)


BAD_WEBHOOK_URLS = ["ftp://example.com/hook", "example.com/hook", "http://", "https:///path", "javascript:alert(1)",
                    "http://exa mple.com/", "https://example.com/" + "a" * 2100, ""]


@pytest.mark.parametrize("webhook_url", BAD_WEBHOOK_URLS)
def test_a_bad_webhook_url_is_400_and_creates_nothing(webhook_url, fake_runtime, load_api, accounts, store,
                                                      jobs_queue, short_wav):
    url, model = fake_runtime(200, {"never": "called"})
    api = load_api(url)
    api_key, item = accounts.new_key(SEEDED)
    for reply in (post_upload(api, api_key, {"webhook_url": webhook_url}),
                  api.transcribe(api_key, short_wav, path=TRANSCRIPTION_JOBS, webhook_url=webhook_url)):
        assert_error(reply, 400, "invalid_value", param="webhook_url")
    assert store.jobs_of(item) == []
    assert store.objects(f"uploads/{item.key_id}/") == []
    assert jobs_queue.drain() == []
    assert model.calls == 0
    assert_nothing_charged(accounts, store, item)


@pytest.mark.parametrize(("body", "content_type", "status", "code", "param"), [
    pytest.param({"file_size": 10}, "application/json", 400, "unknown_parameter", "file_size", id="unknown-field"),
    pytest.param({"upload_id": "upl_" + "0" * 32}, "application/json", 400, "unknown_parameter", "upload_id",
                 id="upload-id"),
    pytest.param({"start_job": "yes"}, "application/json", 400, "invalid_value", "start_job", id="start-job-text"),
    pytest.param({"response_format": "docx"}, "application/json", 400, "invalid_value", "response_format",
                 id="bad-format"),
    pytest.param({"language": "xx"}, "application/json", 400, "invalid_value", "language", id="bad-language"),
    pytest.param({"filename": "x" * 256}, "application/json", 400, "invalid_value", None, id="long-filename"),
    pytest.param({"model": "gpt-4o"}, "application/json", 400, "model_not_found", "model", id="unknown-model"),
    pytest.param(b"{not json", "application/json", 400, "invalid_json", None, id="invalid-json"),
    pytest.param(b"[]", "application/json", 400, "invalid_json", None, id="json-list"),
    pytest.param(b"filename=a.wav", "application/x-www-form-urlencoded", 415, "unsupported_content_type", None,
                 id="form-body"),
])
def test_a_bad_upload_request_is_refused_and_creates_nothing(body, content_type, status, code, param, jobs_api,
                                                             accounts, store):
    api_key, item = accounts.new_key(SEEDED)
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = jobs_api.call("POST", UPLOADS, body=payload, content_type=content_type, api_key=api_key)
    assert_error(reply, status, code, param=param)
    assert store.jobs_of(item) == []


def test_uploads_and_jobs_need_a_key(jobs_api, accounts, short_wav):
    api_key, _ = accounts.new_key(SEEDED)
    job_id = post_upload(jobs_api, api_key, {}).json()["job_id"]
    for reply in (post_upload(jobs_api, None, {}), jobs_api.transcribe(None, short_wav, path=TRANSCRIPTION_JOBS),
                  get_job(jobs_api, None, job_id), get_job(jobs_api, None, job_id, result=True),
                  post_upload(jobs_api, "inf_" + "x" * 40, {})):
        assert_error(reply, 401)


def test_an_upload_without_a_body_is_a_default_job(jobs_api, accounts, store):
    api_key, item = accounts.new_key(SEEDED)
    reply = post_upload(jobs_api, api_key)
    assert reply.status == 201, reply.text
    job = store.job(reply.json()["job_id"])
    assert job.status is JobStatus.AWAITING_UPLOAD and job.key_id == item.key_id
    assert job.options.response_format.value == "json" and job.options.task == "transcribe"


@pytest.mark.parametrize("job_id", ["job_" + "0" * 32, "upl_" + "0" * 32, "nothing", "job_"])
def test_an_unknown_job_is_404(job_id, jobs_api, accounts):
    api_key, _ = accounts.new_key(SEEDED)
    for reply in (get_job(jobs_api, api_key, job_id), get_job(jobs_api, api_key, job_id, result=True)):
        assert_error(reply, 404, "job_not_found", param="job_id")


def test_a_job_with_a_file_is_queued_with_202_and_charges_nothing_yet(jobs_api, store, jobs_queue, accounts,
                                                                      short_wav):
    api_key, item = accounts.new_key(SEEDED)
    reply = jobs_api.transcribe(api_key, short_wav, path=TRANSCRIPTION_JOBS, response_format="text",
                                filename="interview.wav")
    assert reply.status == 202, reply.text
    created = reply.json()
    job_id = created["id"]
    assert created["object"] == "transcription.job" and created["status"] == "queued"
    assert created["options"]["response_format"] == "text" and created["filename"] == "interview.wav"
    assert created["webhook_secret"] is None and "result" not in created

    messages = jobs_queue.drain()
    job_messages = [json.loads(message["Body"]) for message in messages if "job_id" in json.loads(message["Body"])]
    assert job_messages == [{"job_id": job_id}]
    job = store.job(job_id)
    assert job.status is JobStatus.QUEUED and job.key_id == item.key_id
    stored = store.objects(f"uploads/{item.key_id}/")  # the audio went to the key's own prefix
    assert len(stored) == 1 and job.source_uri == f"s3://{store.bucket}/{stored[0]}"
    assert store.s3.get_object(Bucket=store.bucket, Key=stored[0])["Body"].read() == short_wav
    event_for(messages, stored[0])  # its arrival is an S3 event too; the worker ignores it (no job of that upload)
    assert_error(get_job(jobs_api, api_key, job_id, result=True), 409, "job_not_finished")
    assert {entry["kind"] for entry in ledger_of(accounts, item)} == {"topup"}  # nothing reserved until it runs
    assert accounts.balance(item) == SEEDED


def test_a_queued_job_with_a_file_runs_once_through_the_worker(jobs_api, worker, store, jobs_queue, accounts,
                                                               short_wav):
    api_key, item = accounts.new_key(SEEDED)
    reply = jobs_api.transcribe(api_key, short_wav, path=TRANSCRIPTION_JOBS, response_format="text")
    assert reply.status == 202, reply.text
    job_id = reply.json()["id"]
    messages = jobs_queue.drain()
    assert len(messages) == 2  # the job message and the S3 event of its stored audio
    assert_no_batch_failures(worker.deliver(messages))
    assert_no_batch_failures(worker.deliver(messages, receive_count=2))
    result = get_job(jobs_api, api_key, job_id, result=True)
    assert_ok(result)
    assert (result.header("content-type") or "").startswith("text/plain")
    assert_transcript(result.text)
    assert store.only_job(item).job_id == job_id
    assert_charged_once(accounts, store, item, job_id)


def test_the_sync_call_takes_no_webhook(fake_runtime, load_api, accounts, short_wav):
    url, model = fake_runtime(200, {"never": "called"})
    api_key, item = accounts.new_key(SEEDED)
    reply = load_api(url).transcribe(api_key, short_wav, webhook_url="https://example.com/hook")
    assert_error(reply, 400, "unknown_parameter", param="webhook_url")
    assert model.calls == 0


# ---------------------------------------------------------------------------------------------------------------
# issue 9: what was checked and priced is what is transcribed and billed


def test_an_upload_swapped_during_the_call_is_refused_and_nothing_is_charged(
        load_api, model_proxy, worker, store, jobs_queue, accounts, short_wav, s3):
    """Found by the security review: re-uploading to the same slot while the call ran got 180 s transcribed on a
    1-credit reservation. The model now reads only the ETag that was checked."""
    long_audio = synthesize_wav(" ".join([SHORT_SCRIPT] * 12))
    api_key, item = accounts.new_key(SEEDED)
    upload = post_upload(load_api(model_proxy(lambda body: None)), api_key, {"start_job": False}).json()
    upload_to_s3(upload, short_wav)
    object_key = f"uploads/{item.key_id}/{upload['id']}"
    jobs_queue.drain()

    def swap(_: bytes) -> None:  # between the API's check and the model's read, as the attacker did
        s3.put_object(Bucket=store.bucket, Key=object_key, Body=long_audio)

    reply = load_api(model_proxy(swap)).transcribe(api_key, None, upload_id=upload["id"])
    assert_error(reply, 400, "audio_changed", param="file")
    assert accounts.balance(item) == SEEDED and ledger_sum(accounts, item) == SEEDED
    assert set(entries_of(accounts, item, reply.request_id)) == {"reserve", "refund"}


def _silent_flac(seconds: float) -> bytes:
    """Silence as FLAC: a few KB declaring minutes, as in the review's 38 KB, 3-minute file."""
    import io as _io
    from fractions import Fraction

    import av
    import numpy as np
    output = _io.BytesIO()
    with av.open(output, "w", format="flac") as target:
        stream = target.add_stream("flac", rate=16_000)
        stream.layout = "mono"
        samples = np.zeros((1, 16_000), dtype=np.int16)
        for second in range(int(seconds)):
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 16_000, second * 16_000, Fraction(1, 16_000)
            target.mux(stream.encode(frame))
        target.mux(stream.encode(None))
    return output.getvalue()


def test_a_small_file_declaring_minutes_reserves_minutes_and_credits_used_agree_everywhere(jobs_api, accounts):
    """Found by the review: 38 KB of FLAC silence on a 15-credit key reserved 4, billed 15, left 21 unpaid, and the
    body said 36. The reservation now pays for the declared duration: 402 when it cannot, else one number."""
    flac = _silent_flac(180)
    assert len(flac) < 60_000
    poor_key, poor = accounts.new_key(15)
    assert_error(jobs_api.transcribe(poor_key, flac, filename="silence.flac"), 402, "insufficient_credits")
    accounts.assert_untouched(poor, 15)

    api_key, item = accounts.new_key(SEEDED)
    reply = jobs_api.transcribe(api_key, flac, filename="silence.flac")
    assert_ok(reply)
    entries = entries_of(accounts, item, reply.request_id)
    billed = int(entries["settle"]["billed_credits"])
    assert billed == 36 == reply.json()["credits_used"] == int(reply.header("x-infery-credits-used"))
    assert not entries["settle"].get("unpaid_credits")
    assert accounts.balance(item) == SEEDED - billed == ledger_sum(accounts, item)


def _mp3_declaring(audio: bytes, declared_frames: int) -> bytes:
    """An MP3 whose Xing/Info header claims ``declared_frames`` frames: mutagen believes it, the decoder does not."""
    mp3 = bytearray(encode(audio, "mp3"))
    tag = max(mp3.find(b"Xing"), mp3.find(b"Info"))
    assert tag > 0, "libmp3lame wrote no Xing/Info header"
    assert int.from_bytes(mp3[tag + 4: tag + 8], "big") & 1, "the header carries no frame count"
    mp3[tag + 8: tag + 12] = declared_frames.to_bytes(4, "big")
    return bytes(mp3)


def test_audio_longer_than_its_header_declares_is_refused_by_the_model_and_nothing_is_charged(jobs_api, accounts):
    long_speech = synthesize_wav(" ".join([SHORT_SCRIPT] * 8))  # about 25 s
    lying = _mp3_declaring(long_speech, declared_frames=60)  # about 1.5 s
    api_key, item = accounts.new_key(SEEDED)
    reply = jobs_api.transcribe(api_key, lying, filename="lying.mp3")
    assert_error(reply, 400, "audio_longer_than_declared", param="file")
    assert accounts.balance(item) == SEEDED == ledger_sum(accounts, item)
