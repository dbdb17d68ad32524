"""local_stack.api_gateway: the REST API proxy event, route matching and the template's gateway responses."""

from __future__ import annotations

import base64
import json
import socket
import threading

import pytest

from local_stack.api_gateway import LocalApiGateway, LocalApiServer, _route_pattern, build_event
from local_stack.template import LocalTemplate, load_template

MULTIPART = "multipart/form-data; boundary=xyz"


def event_for(
    method: str = "POST",
    raw_path: str = "/v1/audio/transcriptions",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    resource: str = "/v1/audio/transcriptions",
    path_parameters: dict[str, str] | None = None,
) -> dict:
    return build_event(method, raw_path, headers or [], body, resource, path_parameters or {}, "req-123", "203.0.113.9")


def test_a_multipart_body_is_base64_encoded_and_decodes_to_the_same_bytes():
    body = b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\n\x00\xff\xfe RIFF\r\n--xyz--\r\n'
    event = event_for(headers=[("Content-Type", MULTIPART)], body=body)
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == body


def test_an_octet_stream_body_is_binary_too():
    event = event_for(headers=[("content-type", "application/octet-stream")], body=b"\x00\x01")
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == b"\x00\x01"


def test_a_json_body_stays_text():
    body = json.dumps({"model": "whisper-1", "audio": "UklGRg=="}).encode()
    event = event_for(headers=[("Content-Type", "application/json; charset=utf-8")], body=body)
    assert event["isBase64Encoded"] is False
    assert event["body"] == body.decode()


def test_no_body_is_null():
    event = event_for("GET", "/v1/models", resource="/v1/models")
    assert event["body"] is None and event["isBase64Encoded"] is False


def test_the_query_string_is_split_into_single_and_multi_value_maps():
    event = event_for("GET", "/v1/models?limit=5&tag=a&tag=b&empty=", resource="/v1/models")
    assert event["path"] == "/v1/models"
    assert event["queryStringParameters"] == {"limit": "5", "tag": "b", "empty": ""}
    assert event["multiValueQueryStringParameters"] == {"limit": ["5"], "tag": ["a", "b"], "empty": [""]}
    assert event_for("GET", "/v1/models", resource="/v1/models")["queryStringParameters"] is None


def test_repeated_headers_are_kept_in_multi_value_headers():
    event = event_for(
        headers=[
            ("Content-Type", "application/json"),
            ("X-Trace", "1"),
            ("X-Trace", "2"),
            ("User-Agent", "OpenAI/Python 1.0"),
        ]
    )
    assert event["multiValueHeaders"]["X-Trace"] == ["1", "2"]
    assert event["headers"]["X-Trace"] == "2" and event["headers"]["Content-Type"] == "application/json"
    assert event["requestContext"]["identity"] == {"sourceIp": "203.0.113.9", "userAgent": "OpenAI/Python 1.0"}


def test_the_request_context_and_route_fields():
    event = event_for(
        "GET", "/v1/models/whisper-1", resource="/v1/models/{model_id}", path_parameters={"model_id": "whisper-1"}
    )
    context = event["requestContext"]
    assert (event["httpMethod"], event["resource"], event["pathParameters"]) == (
        "GET",
        "/v1/models/{model_id}",
        {"model_id": "whisper-1"},
    )
    assert (context["requestId"], context["stage"], context["path"]) == ("req-123", "prod", "/prod/v1/models/whisper-1")
    assert (context["httpMethod"], context["resourcePath"]) == ("GET", "/v1/models/{model_id}")
    assert isinstance(context["requestTimeEpoch"], int)
    assert event_for()["pathParameters"] is None


def test_the_event_is_json_serialisable_as_lambda_receives_it():
    event = event_for(headers=[("Content-Type", MULTIPART)], body=bytes(range(256)))
    assert json.loads(json.dumps(event)) == event


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/models/abc", {"model_id": "abc"}),
        ("/v1/models/whisper-large-v3", {"model_id": "whisper-large-v3"}),
        ("/v1/models/a/b", None),
        ("/v1/models/", None),
        ("/v1/models", None),
        ("/v1/models/abc/", None),
    ],
)
def test_a_path_parameter_matches_exactly_one_segment(path, expected):
    found = _route_pattern("/v1/models/{model_id}").match(path)
    assert (found.groupdict() if found else None) == expected


def test_static_routes_match_only_themselves_and_greedy_parameters_match_many_segments():
    pattern = _route_pattern("/v1/audio/transcriptions")
    assert pattern.match("/v1/audio/transcriptions")
    assert not pattern.match("/v1/audio/transcriptions/x") and not pattern.match("/v1/audio/transcriptionsX")
    assert _route_pattern("/files/{proxy+}").match("/files/a/b.wav").groupdict() == {"proxy": "a/b.wav"}


@pytest.fixture(scope="module")
def gateway() -> LocalApiGateway:
    gateway = object.__new__(LocalApiGateway)  # __init__ would start the handlers' process pools
    gateway.gateway_responses = LocalTemplate(load_template()).gateway_responses()
    return gateway


def test_an_unknown_url_is_a_404_in_openai_error_shape(gateway):
    status, headers, body = gateway.gateway_response(
        "MISSING_AUTHENTICATION_TOKEN", 403, "req-9", "DELETE", "/v1/files/abc", "Missing Authentication Token"
    )
    assert status == 404
    assert headers == {"Content-Type": "application/json", "x-request-id": "req-9"}
    error = json.loads(body)["error"]
    assert error == {
        "message": "Unknown request URL: DELETE /v1/files/abc.",
        "type": "invalid_request_error",
        "param": None,
        "code": "unknown_url",
    }


@pytest.mark.parametrize(
    ("kind", "default_status", "status", "error_type", "code"),
    [
        ("REQUEST_TOO_LARGE", 413, 413, "invalid_request_error", "audio_too_large"),
        ("THROTTLED", 429, 429, "rate_limit_error", "rate_limited"),
        ("INTEGRATION_TIMEOUT", 504, 504, "server_error", "timeout"),
        ("DEFAULT_5XX", 502, 502, "server_error", None),
        ("UNAUTHORIZED", 401, 401, "invalid_request_error", None),  # not defined: falls back to DEFAULT_4XX
        ("AUTHORIZER_FAILURE", 500, 500, "server_error", None),  # not defined: falls back to DEFAULT_5XX
    ],
)
def test_each_gateway_response_is_openai_shaped_json_with_a_request_id(
    gateway, kind, default_status, status, error_type, code
):
    got_status, headers, body = gateway.gateway_response(
        kind, default_status, "req-1", "POST", "/v1/audio/transcriptions", "Internal server error"
    )
    error = json.loads(body)["error"]
    assert got_status == status and headers["x-request-id"] == "req-1"
    assert headers["Content-Type"] == "application/json"
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == (error_type, code)


def test_the_default_responses_carry_the_gateways_message_json_escaped(gateway):
    _, _, body = gateway.gateway_response("DEFAULT_4XX", 400, "r", "POST", "/v1/x", 'Invalid "body"\n')
    assert json.loads(body)["error"]["message"] == 'Invalid "body"\n'


def test_the_413_points_to_the_upload_flow_and_the_429_says_when_to_retry(gateway):
    _, _, body = gateway.gateway_response("REQUEST_TOO_LARGE", 413, "r", "POST", "/v1/audio/transcriptions", "")
    assert "POST /v1/uploads" in json.loads(body)["error"]["message"]
    _, headers, _ = gateway.gateway_response("THROTTLED", 429, "r", "GET", "/v1/models", "")
    assert headers["Retry-After"] == "1"  # the template's '1', unquoted


def test_repeated_content_types_encode_the_body_as_the_handler_reads_it():
    """Found by the hostile-input review: the body was encoded for the first Content-Type while the handler read the
    last, so a multipart body arrived as mangled text."""
    body = b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\n\x00\xff\r\n--xyz--\r\n'
    event = event_for(headers=[("Content-Type", "application/json"), ("Content-Type", MULTIPART)], body=body)
    assert event["headers"]["Content-Type"] == MULTIPART
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == body


@pytest.fixture
def live_gateway(gateway):
    server = LocalApiServer(("127.0.0.1", 0), gateway, log_requests=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def raw_request(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        # methods http.server has no do_ for: the gateway's answer to a route it does not have, not an HTML 501
        (b"TRACE /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n\r\n", 404, "unknown_url"),
        (b"QUERY /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 404, "unknown_url"),
        # a Content-Length that is no number: a 400, not a crashed request thread and a closed connection
        (b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n", 400, None),
        (b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400, None),
        # a request line http.server cannot parse
        (b"GARBAGE\r\n\r\n", 400, None),
    ],
)
def test_what_http_server_refuses_itself_is_json_in_openai_shape(live_gateway, request_bytes, status, code):
    answered, headers, body = raw_request(live_gateway, request_bytes)
    assert answered == status
    assert headers["content-type"] == "application/json" and headers["x-request-id"]
    error = json.loads(body)["error"]
    assert error["message"] and "<" not in error["message"]
    if code is not None:
        assert error["code"] == code
