"""Over HTTP: a hundred generated hostile requests against the real local stack.

The same strategies as tests/integration/test_hostile_generated.py (tests/support/hostile_requests.py), sent over a raw
socket so that repeated and huge headers, and a Content-Length that lies, reach the local API Gateway as a client
sent them (a declared length past the body is followed by a half-close, as a client that gave up would). Every
answer must be a 4xx in OpenAI's error shape with a readable message. A key of their own (with a rate limit the
run does not reach) is charged nothing: its ledger holds its top-up alone; and nothing is left behind under its
id: no job row, no object under uploads/.
"""

from __future__ import annotations

import collections
import http.client
import os
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.hostile_requests import (
    UPLOADS,
    HostileRequest,
    audio_with_lying_headers,
    bad_keys,
    base64_of_non_audio,
    check_refusal,
    cut_off_multipart,
    lying_multipart,
    poisoned_forms,
    poisoned_uploads,
    random_bodies,
    with_hostile_headers,
    wrong_boundaries,
)
from tests.support.stack import RunningStack

pytestmark = pytest.mark.e2e

EXAMPLES = 100
GATEWAY_MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit, which the local gateway applies too
CREDITS = 40
SENT: collections.Counter[str] = collections.Counter()


class HostileClient:
    def __init__(self, stack: RunningStack, api_key: str) -> None:
        url = urlsplit(stack.base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.api_key = api_key

    def send(self, request: HostileRequest) -> tuple[int, dict[str, str], bytes]:
        """The request as bytes on a socket of its own: its headers in order, its Content-Length as drawn."""
        declared = next((value for name, value in request.headers if name.lower() == "content-length"), None)
        lines = [f"{request.method} {request.path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Connection: close"]
        for name, value in request.headers:
            if name.lower() != "content-length":
                lines.append(f"{name}: {value.replace(chr(13), ' ').replace(chr(10), ' ')}")
        lines.append(f"Content-Length: {declared if declared is not None else len(request.body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
        with socket.create_connection((self.host, self.port), timeout=60) as sock:
            if declared is not None and int(declared) > GATEWAY_MAX_BODY_BYTES:
                sock.sendall(head)  # refused on the header alone: a body sent after it would meet a closed socket
            else:
                sock.sendall(head + request.body)
                if declared is not None and int(declared) > len(request.body):
                    sock.shutdown(socket.SHUT_WR)  # the client stopped early: the body ends here
            response = http.client.HTTPResponse(sock)
            response.begin()
            body = response.read()
            headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, body


@pytest.fixture(scope="module")
def hostile_key(stack: RunningStack) -> Iterator[tuple[str, str]]:
    key_id, api_key = stack.create_key("hostile-e2e", CREDITS, "--rate-limit", "100000")
    yield key_id, api_key
    # nothing charged: the top-up is the key's only ledger entry, and no reservation of it is open
    entries = stack.ledger(key_id)
    assert [entry["kind"] for entry in entries] == ["topup"], entries
    assert stack.key_row(key_id)["credits"] == CREDITS
    assert [row for row in stack.open_reservations() if row.get("key_id") == key_id] == []
    # nothing stored: no job row, no upload object
    environment = stack.environment
    assert stack.jobs_of(key_id) == []
    s3 = boto3.client("s3", endpoint_url=environment["AWS_ENDPOINT_URL_S3"],
                      region_name=environment["AWS_DEFAULT_REGION"],
                      aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"],
                      aws_session_token=environment["AWS_SESSION_TOKEN"])
    listing = s3.list_objects_v2(Bucket=environment["AUDIO_BUCKET_NAME"], Prefix=f"uploads/{key_id}/")
    assert listing.get("KeyCount", 0) == 0, listing.get("Contents")


def _kinds(api_key: str) -> list[st.SearchStrategy[HostileRequest]]:
    """One strategy per kind, drawn evenly (st.one_of would weigh the nested ones by their own branches)."""
    kinds = [random_bodies(api_key), cut_off_multipart(api_key), wrong_boundaries(api_key), lying_multipart(api_key),
             base64_of_non_audio(api_key), audio_with_lying_headers(api_key), poisoned_forms(api_key),
             poisoned_uploads(api_key)]
    refused = st.one_of(kinds)
    return [*kinds, with_hostile_headers(refused, api_key, over_http=True), lying_content_length(refused),
            bad_keys(refused)]


@st.composite
def lying_content_length(draw: st.DrawFn, base: st.SearchStrategy[HostileRequest]) -> HostileRequest:
    """A refused request whose Content-Length says less than was sent (the rest is never read), or more (the
    client half-closes: the body ends early), or more than the 10 MB the gateway takes."""
    request = draw(base)
    size = len(request.body)
    # not less on POST /v1/uploads: the part read may be nothing at all, which is a valid upload request
    shorter = st.nothing() if request.path == UPLOADS else st.integers(0, max(0, size - 1))
    declared = draw(st.one_of(shorter, st.integers(size + 1, size + 100_000), st.integers(10_485_761, 2**62)))
    return HostileRequest(f"lying Content-Length + {request.category}", request.path,
                          [*request.headers, ("Content-Length", str(declared))], request.body)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("CI") == "true",
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                 HealthCheck.large_base_example])
@given(data=st.data())
def test_generated_hostile_requests_over_http_are_4xx_and_cost_nothing(stack, hostile_key, data):
    _, api_key = hostile_key
    request = data.draw(data.draw(st.sampled_from(_kinds(api_key))))
    status, headers, body = HostileClient(stack, api_key).send(request)
    check_refusal(status, headers, body, request)
    SENT[request.category.split(",")[0].split(" (")[0]] += 1


def test_the_http_run_sent_its_hundred(capsys: Any):
    if not SENT:
        pytest.skip("the generated run did not run")
    with capsys.disabled():
        print(f"\nhostile requests sent over HTTP to the local stack: {sum(SENT.values())} ({dict(SENT)})")
    assert sum(SENT.values()) >= EXAMPLES
