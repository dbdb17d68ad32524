"""Fixtures: the real transcribe handler against moto, the real Whisper server, and failing SageMaker stand-ins.

Which moto: a server, serialised. moto's ``mock_aws`` does let requests to a custom http://127.0.0.1 endpoint
pass through to a real server (checked: ``invoke_endpoint`` under ``mock_aws`` reached a local HTTP server), but
its in-process backend is not thread-safe: 20 threads charging one key at once crash inside moto with
``RuntimeError: dictionary changed size during iteration``. moto's ``ThreadedMotoServer`` serves requests on
parallel threads without a lock, so two TransactWriteItems conditioned on the same balance can both pass (seen:
11 of 20 one-credit charges accepted against a balance of 10), which DynamoDB never allows. So DynamoDB is
``local_stack.moto_server.BackgroundMotoServer``: moto's own server app (what ThreadedMotoServer runs) behind a
lock, one request at a time, which is the per-request atomicity DynamoDB guarantees. The handler reaches it
through AWS_ENDPOINT_URL_DYNAMODB and the SageMaker stand-ins through AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME: both
are real HTTP, nothing in botocore is patched.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from infery.adapters.credit_store import CreditStore
from infery.adapters.key_store import KeyStore
from infery.domain.keys import ApiKeyItem
from infery.settings import AccountTables, get_settings
from infery.wiring import AccountsWiring

from local_stack.moto_server import BackgroundMotoServer
from local_stack.processes import free_port
from local_stack.template import (
    LocalTemplate,
    create_buckets,
    create_queues,
    create_tables,
    create_topics,
    load_template,
)
from tests.support.api import MODEL_NAME, ROOT, Api
from tests.support.model_server import QuietHandler, running_model_server, serve_in_thread

APP_SOURCE = ROOT / "functions" / "transcribe" / "app.py"
RECONCILER_SOURCE = ROOT / "functions" / "reconciler" / "app.py"


@pytest.fixture(scope="session")
def local_template() -> LocalTemplate:
    return LocalTemplate(load_template(), stack_name="infery-it", parameter_overrides={"ModelName": MODEL_NAME})


@pytest.fixture(scope="session")
def function_environment(local_template: LocalTemplate) -> dict[str, str]:
    """The environment template.yaml gives TranscribeFunction (table names, endpoint name, pricing ...)."""
    return local_template.function_environment("TranscribeFunction")


@pytest.fixture(scope="session")
def moto_url(local_template: LocalTemplate) -> Iterator[str]:
    server = BackgroundMotoServer()
    server.start()
    client = boto3.client(
        "dynamodb",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )  # noqa: S106
    create_tables(local_template, client)  # the tables as template.yaml defines them, never a copy
    # the queues, topic and bucket too (the API stores an Idempotency-Key request's result before charging it)
    credentials = {
        "endpoint_url": server.url,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    create_queues(local_template, boto3.client("sqs", **credentials))
    create_topics(local_template, boto3.client("sns", **credentials))
    create_buckets(local_template, boto3.client("s3", **credentials))
    yield server.url
    server.stop()


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch, moto_url: str, function_environment: dict[str, str]) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"):
        monkeypatch.delenv(name, raising=False)
    environment = {
        **function_environment,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_DYNAMODB": moto_url,
        "AWS_ENDPOINT_URL_S3": moto_url,
        "AWS_ENDPOINT_URL_SQS": moto_url,
        "AWS_ENDPOINT_URL_SNS": moto_url,
        "POWERTOOLS_METRICS_NAMESPACE": "InferyIntegrationTests",
        # as the local stack does: the tests' webhook receivers listen on 127.0.0.1 over http, which a deployment
        # refuses (tests that check the refusal load the handler with "false")
        "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true",
        "WEBHOOK_ALLOW_HTTP": "true",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def model_server_url(function_environment: dict[str, str]) -> Iterator[str]:
    """The real Whisper server, answering as the SageMaker runtime does."""
    with running_model_server(endpoint_name=function_environment["SAGEMAKER_ENDPOINT_NAME"]) as (url, _):
        yield url


@dataclass
class FakeRuntime:
    """A stand-in for the SageMaker runtime, for failures a real model cannot produce on demand.

    It records every request it gets, so a test can prove the endpoint was (or was never) called.
    ``declared_length`` larger than the body makes it close the connection part way through the body.
    ``on_request`` runs while the "inference" is in flight.
    """

    status: int
    body: bytes
    headers: dict[str, str]
    delay: float = 0.0
    declared_length: int | None = None
    on_request: Callable[[], None] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return len(self.requests)


StartFake = Callable[..., tuple[str, FakeRuntime]]


@pytest.fixture
def fake_runtime() -> Iterator[StartFake]:
    servers: list[ThreadingHTTPServer] = []

    def start(
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        *,
        delay: float = 0.0,
        declared_length: int | None = None,
        on_request: Callable[[], None] | None = None,
    ) -> tuple[str, FakeRuntime]:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        fake = FakeRuntime(status, payload, headers or {}, delay, declared_length, on_request)

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                request_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.requests.append({"path": self.path, "body": request_body})
                if fake.on_request:
                    fake.on_request()
                time.sleep(fake.delay)
                self.send_response(fake.status)
                for name, value in {"Content-Type": "application/json", **fake.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(fake.declared_length or len(fake.body)))
                if fake.declared_length:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(fake.body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True  # the slow stand-in may still be sleeping when its test ends
        servers.append(server)
        return serve_in_thread(server), fake

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A URL on which nothing listens: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


LoadApi = Callable[..., Api]


@pytest.fixture
def load_api(monkeypatch: pytest.MonkeyPatch, aws_environment: None) -> Iterator[LoadApi]:
    """Import app.py afresh (a cold start) with the SageMaker runtime at ``runtime_url`` and extra environment.

    app.py reads its settings at import, so every load sets the environment first, clears the cached settings and
    executes the module again. Its clients are built on first use, from the environment of that moment: the runtime
    client is built now, so an instance keeps its own endpoint when a test loads another with a different one.
    """

    def load(runtime_url: str, **environment: str) -> Api:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime_url)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        module = _cold_start(APP_SOURCE)
        assert module.wiring.sagemaker_runtime is not None
        return Api(module.lambda_handler, module)

    yield load
    get_settings.cache_clear()


def _cold_start(source: Path) -> Any:
    """Execute a function's app.py afresh, with the settings read afresh from the environment.

    The module is named as Lambda names it (the handler is "app.lambda_handler"), and never put in sys.modules:
    powertools Idempotency keys its records by the decorated function's module, so two loads (two Lambda
    instances) must share that name to share their records, as they do on AWS.
    """
    get_settings.cache_clear()
    spec = importlib.util.spec_from_file_location(source.stem, source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def load_reconciler(
    monkeypatch: pytest.MonkeyPatch, aws_environment: None, local_template: LocalTemplate
) -> Iterator[Callable[..., Any]]:
    """Import functions/reconciler/app.py afresh, with the environment template.yaml gives ReconcilerFunction."""

    def load(**environment: str) -> Any:
        for name, value in {**local_template.function_environment("ReconcilerFunction"), **environment}.items():
            monkeypatch.setenv(name, value)
        return _cold_start(RECONCILER_SOURCE)

    yield load
    get_settings.cache_clear()


@pytest.fixture
def api(load_api: LoadApi, model_server_url: str) -> Api:
    """The handler wired to the real Whisper server."""
    return load_api(model_server_url)


@dataclass
class Accounts:
    """Seeds keys and credits the way operators do (KeyStore.create, CreditStore.top_up) and reads them back."""

    keys: KeyStore
    credits: CreditStore
    keys_table: Any
    ledger_table: Any
    reservations_table: Any

    def new_key(self, credits: int, **policy: Any) -> tuple[str, ApiKeyItem]:
        """A key with ``credits`` topped up; ``policy``: expires_at, rate_limit_per_minute, allowed_models."""
        api_key, item = self.keys.create(f"it-{uuid.uuid4().hex[:8]}", 0, **policy)
        if credits:
            self.credits.top_up(item, credits, request_id=f"seed-{uuid.uuid4()}")
        return api_key, item.model_copy(update={"credits": credits})

    def balance(self, item: ApiKeyItem) -> int:
        return self.credits.balance(item.key_hash)

    def stored_key(self, item: ApiKeyItem) -> dict[str, Any]:
        return self.keys_table.get_item(Key={"key_hash": item.key_hash}, ConsistentRead=True)["Item"]

    def fresh(self, item: ApiKeyItem) -> ApiKeyItem:
        """The key as the handler would read it now."""
        return ApiKeyItem.model_validate(self.stored_key(item))

    def revoke(self, item: ApiKeyItem) -> None:
        self.keys_table.update_item(
            Key={"key_hash": item.key_hash},
            UpdateExpression="SET #s = :revoked",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":revoked": "revoked"},
        )

    def ledger(self, item: ApiKeyItem, kind: str | None = None) -> list[dict[str, Any]]:
        entries = self.ledger_table.query(
            KeyConditionExpression="key_id = :k", ConsistentRead=True, ExpressionAttributeValues={":k": item.key_id}
        )["Items"]
        return [entry for entry in entries if kind is None or entry["kind"] == kind]

    def ledger_sum(self, item: ApiKeyItem) -> int:
        return sum(int(entry["credits"]) for entry in self.ledger(item))

    def request_entries(self, item: ApiKeyItem, request_id: str) -> dict[str, dict[str, Any]]:
        """The ledger entries of one request, by kind (entry ids are request_id#kind, so one of each at most)."""
        return {entry["kind"]: entry for entry in self.ledger(item) if entry["request_id"] == request_id}

    def ledger_size(self) -> int:
        """Every ledger item of every key: a request refused before its reservation must not add one anywhere."""
        count, arguments = 0, {"Select": "COUNT", "ConsistentRead": True}
        while True:  # a scan stops at 1 MB read: page on, or a growing ledger would stop being counted
            page = self.ledger_table.scan(**arguments)
            count += page["Count"]
            if "LastEvaluatedKey" not in page:
                return count
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def open_reservations(self, item: ApiKeyItem) -> list[dict[str, Any]]:
        items, arguments = (
            [],
            {
                "FilterExpression": "key_id = :k",
                "ConsistentRead": True,
                "ExpressionAttributeValues": {":k": item.key_id},
            },
        )
        while True:
            page = self.reservations_table.scan(**arguments)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                return items
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def assert_untouched(self, item: ApiKeyItem, balance: int) -> None:
        """Nothing was charged: the balance is as seeded, nothing was settled, every reservation was given back."""
        assert self.balance(item) == balance
        assert self.ledger(item, "settle") == []
        assert self.ledger_sum(item) == balance
        assert len(self.ledger(item, "reserve")) == len(self.ledger(item, "refund")) + len(self.ledger(item, "release"))
        assert self.open_reservations(item) == []

    @contextlib.contextmanager
    def refused_before_the_model(self, item: ApiKeyItem, balance: int, model: FakeRuntime) -> Iterator[None]:
        """What runs inside reaches neither the model nor the books: the stand-in was never called, nothing was
        charged, and no ledger entry was written (of any key)."""
        ledger_before = self.ledger_size()
        yield
        assert model.calls == 0, "a refused request reached the model"
        self.assert_untouched(item, balance)
        assert self.ledger_size() == ledger_before

    @contextlib.contextmanager
    def new_key_refused_before_the_model(self, credits: int, model: FakeRuntime) -> Iterator[str]:
        """A new key with ``credits``, whose requests inside reach neither ``model`` nor the books."""
        api_key, item = self.new_key(credits)
        with self.refused_before_the_model(item, credits, model):
            yield api_key


@pytest.fixture
def accounts(aws_environment: None, function_environment: dict[str, str]) -> Accounts:
    """The keys and credits as the operator's tool reaches them (infery.wiring), and their tables to read back."""
    tables = AccountTables(
        keys_table_name=function_environment["KEYS_TABLE_NAME"],
        ledger_table_name=function_environment["LEDGER_TABLE_NAME"],
        reservations_table_name=function_environment["RESERVATIONS_TABLE_NAME"],
    )
    wiring = AccountsWiring(tables)
    return Accounts(
        wiring.keys,
        wiring.credits,
        wiring.dynamodb.Table(tables.keys_table_name),
        wiring.dynamodb.Table(tables.ledger_table_name),
        wiring.dynamodb.Table(tables.reservations_table_name),
    )


@pytest.fixture(scope="session")
def wav(speech_files: dict[str, Path]) -> bytes:
    """The espeak-ng script as a 16-bit PCM WAV (about 11.7 s: it costs 3 credits)."""
    return speech_files["wav"].read_bytes()
