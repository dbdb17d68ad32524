"""A local stand-in for API Gateway (REST API, Lambda proxy integration).

It turns each HTTP request into the same event API Gateway sends, runs the real
handler in a pool of worker processes (one event per process at a time, as
Lambda does), and answers with the handler's response. Its own refusals (no
route, request too large, timeout, crashed handler) use the gateway responses
from template.yaml, so they look as they do on AWS.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import signal
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .template import LocalTemplate

API_GATEWAY_MAX_BODY_BYTES = 10 * 1024 * 1024
LAMBDA_MAX_REQUEST_BYTES = 6_291_456
INTEGRATION_TIMEOUT_SECONDS = 29.0
STAGE = "prod"

_worker_handler: Any = None


@dataclass
class _LambdaContext:
    function_name: str
    aws_request_id: str
    deadline: float
    memory_limit_in_mb: int = 1024
    function_version: str = "$LATEST"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:000000000000:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def _load_handler(environment: dict[str, str], layer_paths: list[str], source: str, handler_name: str) -> None:
    global _worker_handler
    # Ctrl-C reaches the whole process group; the parent shuts the pool down, the workers just stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(environment)
    # Lambda mounts each layer at /opt and puts /opt/python on sys.path; these are the same folders here
    sys.path[:0] = [path for path in layer_paths if path not in sys.path]
    spec = importlib.util.spec_from_file_location(f"lambda_{Path(source).parent.name}", source)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _worker_handler = getattr(module, handler_name)


def _invoke(function_name: str, event: dict[str, Any], timeout_seconds: float) -> dict[str, Any]:
    context = _LambdaContext(function_name, str(uuid.uuid4()), time.monotonic() + timeout_seconds)
    return _worker_handler(event, context)


class LocalFunction:
    """One Lambda function: its code, environment and a pool of warm execution environments."""

    def __init__(
        self, local: LocalTemplate, logical_id: str, concurrency: int, extra_environment: dict[str, str]
    ) -> None:
        source, handler_name = local.function_source(logical_id)
        environment = {**local.function_environment(logical_id), **extra_environment}
        properties = local.resources[logical_id]["Properties"]
        globals_ = local.template.get("Globals", {}).get("Function", {})
        self.timeout_seconds = float(properties.get("Timeout", globals_.get("Timeout", 3)))
        self.name = local.physical_name(logical_id)
        self.concurrency = concurrency
        self.pool = ProcessPoolExecutor(
            max_workers=concurrency,
            initializer=_load_handler,
            initargs=(environment, local.layer_python_paths(), str(source), handler_name),
        )

    def invoke(self, event: dict[str, Any], timeout_seconds: float) -> dict[str, Any]:
        return self.pool.submit(_invoke, self.name, event, self.timeout_seconds).result(timeout=timeout_seconds)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class Route:
    method: str
    resource: str
    pattern: re.Pattern[str]
    function: LocalFunction


def _route_pattern(resource: str) -> re.Pattern[str]:
    regex = re.sub(r"\\\{(\w+)\\\+\\\}", r"(?P<\1>.+)", re.escape(resource))
    regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", regex)
    return re.compile(f"^{regex}$")


class LocalApiGateway:
    def __init__(self, local: LocalTemplate, concurrency: int, extra_environment: dict[str, str]) -> None:
        self.gateway_responses = local.gateway_responses()
        self.functions: dict[str, LocalFunction] = {}
        self.routes: list[Route] = []
        for method, resource, logical_id in local.api_routes():
            if logical_id not in self.functions:
                self.functions[logical_id] = LocalFunction(local, logical_id, concurrency, extra_environment)
            self.routes.append(Route(method, resource, _route_pattern(resource), self.functions[logical_id]))

    def warm_up(self) -> None:
        """Start every worker now, so the first request does not pay the imports (a cold start)."""
        for function in self.functions.values():
            list(function.pool.map(time.sleep, [0.5] * function.concurrency))

    def close(self) -> None:
        for function in self.functions.values():
            function.close()

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            found = route.pattern.match(path)
            if found and route.method in (method, "ANY"):
                return route, found.groupdict()
        return None

    def gateway_response(
        self, kind: str, default_status: int, request_id: str, method: str, path: str, error_message: str
    ) -> tuple[int, dict[str, str], bytes]:
        """Render one of template.yaml's GatewayResponses, with the $context variables we know."""
        family = "DEFAULT_5XX" if default_status >= 500 else "DEFAULT_4XX"
        definition = self.gateway_responses.get(kind) or self.gateway_responses.get(family, {})
        default_template = '{"message": $context.error.messageString}'
        template = definition.get("ResponseTemplates", {}).get("application/json", default_template)
        body = (
            template.replace("$context.error.messageString", json.dumps(error_message))
            .replace("$context.httpMethod", method)
            .replace("$context.path", path)
            .replace("$context.requestId", request_id)
        )
        headers = {"Content-Type": "application/json"}
        for name, value in definition.get("ResponseParameters", {}).get("Headers", {}).items():
            headers[name] = request_id if value == "context.requestId" else value.strip("'")
        return int(definition.get("StatusCode", default_status)), headers, body.encode()


def build_event(
    method: str,
    raw_path: str,
    headers: list[tuple[str, str]],
    body: bytes,
    resource: str,
    path_parameters: dict[str, str],
    request_id: str,
    source_ip: str,
) -> dict[str, Any]:
    """The event API Gateway's REST API sends with a Lambda proxy integration (payload format 1.0)."""
    url = urlsplit(raw_path)
    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        multi_headers.setdefault(name, []).append(value)
    query = parse_qs(url.query, keep_blank_values=True)
    # the last Content-Type, as the event's single-value map has it: the handler and the encoding below must agree
    content_type = next((value for name, value in reversed(headers) if name.lower() == "content-type"), "")
    media_type = content_type.split(";")[0].strip().lower()
    # BinaryMediaTypes in template.yaml: these bodies reach Lambda base64-encoded
    is_binary = media_type in ("multipart/form-data", "application/octet-stream")
    if is_binary:
        event_body: str | None = base64.b64encode(body).decode()
    else:
        event_body = body.decode("utf-8", errors="replace") if body else None
    return {
        "resource": resource,
        "path": url.path,
        "httpMethod": method,
        "headers": {name: values[-1] for name, values in multi_headers.items()} or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {name: values[-1] for name, values in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": path_parameters or None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/{STAGE}{url.path}",
            "stage": STAGE,
            "requestId": request_id,
            "requestTimeEpoch": int(time.time() * 1000),
            "protocol": "HTTP/1.1",
            "identity": {"sourceIp": source_ip, "userAgent": multi_headers.get("User-Agent", [""])[-1]},
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": "127.0.0.1",
        },
        "body": event_body,
        "isBase64Encoded": is_binary,
    }


class GatewayRequestHandler(BaseHTTPRequestHandler):
    server: LocalApiServer
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: the headers and the body are two writes; on a kept-alive connection Nagle's algorithm holds the
    # body until the client's delayed ACK of the headers, 40 ms on Linux, every request (benchmarks.stack_vs_model)
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if self.server.verbose:
            super().log_message(format, *args)

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        super().log_message(format, *args)  # errors are shown whatever the verbosity

    def _log_request_line(self, status: int, headers: dict[str, str]) -> None:
        """One line per API request: time, method, path, status, milliseconds, and the credits it cost."""
        if not self.server.log_requests:
            return
        elapsed_ms = (time.monotonic() - getattr(self, "_started", time.monotonic())) * 1000
        used = next((value for name, value in headers.items() if name.lower() == "x-infery-credits-used"), None)
        line = f"{time.strftime('%H:%M:%S')} {self.command} {urlsplit(self.path).path} {status} {elapsed_ms:.0f} ms"
        if used is not None:
            line += f" {used} credit{'' if used == '1' else 's'}"
        print(line, flush=True)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._proxy()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a method it has no do_ for, a malformed request line, headers too long) in the
        gateway's JSON error shape, never its HTML page. A method the API has no route for gets what API Gateway
        answers for any unknown route."""
        self.close_connection = True
        self.command = getattr(self, "command", None) or ""  # unset when the request line itself was malformed
        self.request_version = "HTTP/1.1"  # still HTTP/0.9 then, which would send the body without a status line
        path = urlsplit(getattr(self, "path", None) or "/").path
        if code == HTTPStatus.NOT_IMPLEMENTED:
            kind, status, words = "MISSING_AUTHENTICATION_TOKEN", 403, "Missing Authentication Token"
        else:
            kind, status, words = ("DEFAULT_5XX" if code >= 500 else "DEFAULT_4XX"), code, HTTPStatus(code).phrase
        self._send(*self.server.gateway.gateway_response(kind, status, str(uuid.uuid4()), self.command, path, words))

    def _proxy(self) -> None:
        self._started = time.monotonic()
        gateway = self.server.gateway
        request_id = str(uuid.uuid4())
        path = urlsplit(self.path).path
        declared_length = self.headers.get("Content-Length") or "0"
        if not declared_length.isdigit():
            self.send_error(HTTPStatus.BAD_REQUEST)  # the gateway refuses it before any route is looked at
            return
        length = int(declared_length)
        if length > API_GATEWAY_MAX_BODY_BYTES:
            self.close_connection = True  # the body is left unread, as the gateway drops it
            self._send(
                *gateway.gateway_response("REQUEST_TOO_LARGE", 413, request_id, self.command, path, "Request Too Large")
            )
            return
        body = self.rfile.read(length) if length else b""
        matched = gateway.match(self.command, path)
        if matched is None:
            self._send(
                *gateway.gateway_response(
                    "MISSING_AUTHENTICATION_TOKEN", 403, request_id, self.command, path, "Missing Authentication Token"
                )
            )
            return
        route, path_parameters = matched
        event = build_event(
            self.command,
            self.path,
            list(self.headers.items()),
            body,
            route.resource,
            path_parameters,
            request_id,
            self.client_address[0],
        )
        if len(json.dumps(event)) > LAMBDA_MAX_REQUEST_BYTES:
            # Lambda refuses the invocation; API Gateway answers 413
            self._send(
                *gateway.gateway_response("REQUEST_TOO_LARGE", 413, request_id, self.command, path, "Request Too Large")
            )
            return
        try:
            result = route.function.invoke(event, INTEGRATION_TIMEOUT_SECONDS)
        except FutureTimeout:
            self._send(
                *gateway.gateway_response(
                    "INTEGRATION_TIMEOUT", 504, request_id, self.command, path, "Endpoint request timed out"
                )
            )
            return
        except Exception as exc:  # the handler crashed: API Gateway says 502
            self.log_error("handler crashed: %r", exc)
            self._send(
                *gateway.gateway_response("DEFAULT_5XX", 502, request_id, self.command, path, "Internal server error")
            )
            return
        self._send_lambda_result(result)

    def _send_lambda_result(self, result: dict[str, Any]) -> None:
        headers: dict[str, str] = dict(result.get("headers") or {})
        for name, values in (result.get("multiValueHeaders") or {}).items():
            headers[name] = ", ".join(str(value) for value in values)
        body = result.get("body") or ""
        payload = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
        self._send(int(result.get("statusCode", 200)), headers, payload)

    def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self._log_request_line(status, headers)


class LocalApiServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default of 5 makes the kernel reset connections when clients arrive in a burst
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], gateway: LocalApiGateway, *, log_requests: bool = True, verbose: bool = False
    ) -> None:
        self.gateway = gateway
        self.log_requests = log_requests  # one line per request (method, path, status, ms, credits)
        self.verbose = verbose  # and http.server's own access line too
        super().__init__(address, GatewayRequestHandler)
