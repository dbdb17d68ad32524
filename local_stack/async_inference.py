"""SageMaker Asynchronous Inference, locally: what moto lacks, in front of the real model server.

boto3's ``invoke_endpoint_async`` posts to ``/endpoints/{name}/async-invocations`` with the request's S3
location in headers. As SageMaker does, this server answers 202 at once with the output location, then in
the background reads the input from S3 (moto), posts it to the model container's ``POST /invocations``,
writes the response (or the failure) to the endpoint config's S3 paths and publishes SageMaker's
notification to its SNS topics, which moto delivers to the worker's queue. At most
MaxConcurrentInvocationsPerInstance invocations run at once; the rest wait in order, as on one instance.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .template import AsyncEndpointConfig

_ASYNC_PATH = re.compile(r"^/endpoints/([^/]+)/async-invocations$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


@dataclass(frozen=True)
class _Invocation:
    """One accepted invocation, as the background run needs it: the request, where its answer goes, when it came."""

    endpoint: AsyncEndpointConfig
    inference_id: str
    input_location: str
    timeout_seconds: int
    content_type: str
    output_location: str
    failure_location: str
    received: str


class LocalAsyncInference(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        endpoints: list[AsyncEndpointConfig],
        model_url: str,
        s3_client: Any,
        sns_client: Any,
        region: str,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.endpoints = {endpoint.endpoint_name: endpoint for endpoint in endpoints}
        self.model_url = model_url.rstrip("/")
        self.s3 = s3_client
        self.sns = sns_client
        self.region = region
        workers = max((endpoint.max_concurrent_invocations for endpoint in endpoints), default=1)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="async-inference")
        self._thread: threading.Thread | None = None
        self._in_flight = 0
        self._idle = threading.Condition()
        super().__init__((host, port), _AsyncInvocationHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="local-async-inference", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def wait_until_idle(self, timeout: float) -> bool:
        """True once no invocation is queued or running (its notification is published by then)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def invoke(
        self,
        endpoint: AsyncEndpointConfig,
        inference_id: str,
        input_location: str,
        timeout_seconds: int,
        content_type: str,
    ) -> tuple[str, str]:
        invocation = _Invocation(
            endpoint,
            inference_id,
            input_location,
            timeout_seconds,
            content_type,
            output_location=f"{endpoint.output_path.rstrip('/')}/{inference_id}.out",
            failure_location=f"{endpoint.failure_path.rstrip('/')}/{inference_id}-error.out",
            received=_now(),
        )
        with self._idle:
            self._in_flight += 1
        self.pool.submit(self._run_counted, invocation)
        return invocation.output_location, invocation.failure_location

    def _run_counted(self, invocation: _Invocation) -> None:
        try:
            self._run(invocation)
        except Exception as exc:  # a notification that cannot be published is lost, as a crashed instance's is
            print(f"asynchronous invocation failed: {exc!r}", flush=True)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _run(self, invocation: _Invocation) -> None:
        request_parameters = {
            "contentType": invocation.content_type,
            "endpointName": invocation.endpoint.endpoint_name,
            "inputLocation": invocation.input_location,
        }
        notification: dict[str, Any] = {
            "awsRegion": self.region,
            "receivedTime": invocation.received,
            "requestParameters": request_parameters,
            "inferenceId": invocation.inference_id,
            "eventVersion": "1.0",
            "eventSource": "aws:sagemaker",
            "eventName": "InferenceResult",
        }
        try:
            bucket, key = _split(invocation.input_location)
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            status, payload = self._call_model(body, invocation.content_type, invocation.timeout_seconds)
        except TimeoutError:
            status, payload = 0, b""
            notification["failureReason"] = (
                f"InvocationTimeout: the invocation ran past {invocation.timeout_seconds} s."
            )
        except Exception as exc:  # the input could not be read, the model server is down...
            status, payload = 0, json.dumps({"error": str(exc), "code": "internal"}).encode()
            notification["failureReason"] = f"InternalFailure: {exc}"
        if status == 200:
            self._put(invocation.output_location, payload)
            notification.update(
                invocationStatus="Completed",
                eventTime=_now(),
                responseParameters={"contentType": "application/json", "outputLocation": invocation.output_location},
            )
            topic = invocation.endpoint.success_topic
        else:
            if payload:
                self._put(invocation.failure_location, payload)
            side = "client" if 400 <= status < 500 else "server"
            notification.setdefault(
                "failureReason",
                f"ClientError: Received {side} error ({status}) from model. See the endpoint's logs.",
            )
            notification.update(
                invocationStatus="Failed",
                eventTime=_now(),
                responseParameters={
                    "contentType": "application/json",
                    **({"failureLocation": invocation.failure_location} if payload else {}),
                },
            )
            topic = invocation.endpoint.error_topic
        if topic:
            self.sns.publish(TopicArn=topic, Message=json.dumps(notification))

    def _call_model(self, body: bytes, content_type: str, timeout_seconds: int) -> tuple[int, bytes]:
        request = urllib.request.Request(  # noqa: S310 - the model server on loopback
            f"{self.model_url}/invocations",
            data=body,
            method="POST",
            headers={"Content-Type": content_type},
        )
        deadline = time.monotonic() + timeout_seconds
        try:
            with urllib.request.urlopen(request, timeout=timeout_seconds) as response:  # noqa: S310 - loopback
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except (TimeoutError, urllib.error.URLError) as error:
            if time.monotonic() >= deadline - 1 or isinstance(getattr(error, "reason", error), TimeoutError):
                raise TimeoutError from error
            raise

    def _put(self, uri: str, body: bytes) -> None:
        bucket, key = _split(uri)
        self.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")


class _AsyncInvocationHandler(BaseHTTPRequestHandler):
    server: LocalAsyncInference
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as the local gateway's: no 40 ms wait for a delayed ACK between headers and body

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = _ASYNC_PATH.match(self.path)
        endpoint = self.server.endpoints.get(match.group(1)) if match else None
        if endpoint is None:
            self._send(400, {"message": "Endpoint not found or not asynchronous."}, "ValidationError")
            return
        input_location = self.headers.get("X-Amzn-SageMaker-InputLocation", "")
        if not input_location.startswith("s3://"):
            self._send(400, {"message": "InputLocation must be an S3 URI."}, "ValidationError")
            return
        inference_id = self.headers.get("X-Amzn-SageMaker-Inference-Id") or f"local-{time.time_ns()}"
        timeout_seconds = int(self.headers.get("X-Amzn-SageMaker-InvocationTimeoutSeconds") or 900)
        output_location, failure_location = self.server.invoke(
            endpoint,
            inference_id,
            input_location,
            timeout_seconds,
            self.headers.get("X-Amzn-SageMaker-Content-Type") or "application/json",
        )
        self._send(
            202,
            {"InferenceId": inference_id},
            headers={
                "X-Amzn-SageMaker-OutputLocation": output_location,
                "X-Amzn-SageMaker-FailureLocation": failure_location,
            },
        )

    def _send(
        self, status: int, body: dict[str, Any], error_type: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if error_type:
            self.send_header("x-amzn-ErrorType", error_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
