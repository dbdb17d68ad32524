"""The local stack's reading of template.yaml and its API Gateway events."""

from __future__ import annotations

import base64
import json

import pytest

from local_stack.api_gateway import LocalApiGateway, _route_pattern, build_event
from local_stack.template import LocalTemplate, load_template


@pytest.fixture(scope="module")
def local() -> LocalTemplate:
    return LocalTemplate(load_template(), parameter_overrides={"ModelName": "whisper-tiny.en"})


def test_short_form_tags_become_intrinsic_functions():
    template = load_template()
    environment = template["Globals"]["Function"]["Environment"]["Variables"]
    assert environment["KEYS_TABLE_NAME"] == {"Ref": "KeysTable"}
    assert environment["SAGEMAKER_ENDPOINT_NAME"] == {"Fn::GetAtt": ["WhisperEndpoint", "EndpointName"]}


def test_references_resolve_to_local_names_defaults_and_overrides(local):
    assert local.resolve({"Ref": "KeysTable"}) == "infery-local-KeysTable"
    assert local.resolve({"Ref": "SecondsPerCredit"}) == "5"
    assert local.resolve({"Ref": "ModelName"}) == "whisper-tiny.en"
    assert local.resolve({"Fn::Sub": "${AWS::StackName}-x-${KeysTable}"}) == "infery-local-x-infery-local-KeysTable"
    with pytest.raises(KeyError):
        local.resolve({"Ref": "NoSuchThing"})


def test_the_function_environment_is_the_templates(local):
    environment = local.function_environment("TranscribeFunction")
    assert environment["KEYS_TABLE_NAME"] == "infery-local-KeysTable"
    assert environment["LEDGER_TABLE_NAME"] == "infery-local-LedgerTable"
    assert environment["SAGEMAKER_ENDPOINT_NAME"] == "infery-local-WhisperEndpoint"
    assert environment["DEFAULT_MODEL"] == "whisper-tiny.en"


def test_routes_come_from_the_functions_api_events(local):
    assert sorted(local.api_routes()) == sorted([
        ("POST", "/v1/audio/transcriptions", "TranscribeFunction"),
        ("POST", "/v1/audio/translations", "TranscribeFunction"),
        ("GET", "/v1/models", "TranscribeFunction"),
        ("GET", "/v1/models/{model_id}", "TranscribeFunction"),
    ])


def test_path_parameters_match_one_segment():
    pattern = _route_pattern("/v1/models/{model_id}")
    assert pattern.match("/v1/models/whisper-1").groupdict() == {"model_id": "whisper-1"}
    assert pattern.match("/v1/models/a/b") is None and pattern.match("/v1/models/") is None
    assert _route_pattern("/files/{proxy+}").match("/files/a/b").groupdict() == {"proxy": "a/b"}


def test_multipart_events_are_base64_encoded_as_binary_media_types():
    body = b"--x\r\n\xff\xfe binary\r\n--x--"
    event = build_event("POST", "/v1/audio/transcriptions?debug=1&debug=2",
                        [("Content-Type", "multipart/form-data; boundary=x"), ("X-A", "1"), ("X-A", "2")],
                        body, "/v1/audio/transcriptions", {}, "rid-1", "127.0.0.1")
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == body
    assert event["path"] == "/v1/audio/transcriptions" and event["httpMethod"] == "POST"
    assert event["queryStringParameters"] == {"debug": "2"}
    assert event["multiValueQueryStringParameters"] == {"debug": ["1", "2"]}
    assert event["multiValueHeaders"]["X-A"] == ["1", "2"] and event["headers"]["X-A"] == "2"
    assert event["requestContext"]["requestId"] == "rid-1" and event["requestContext"]["stage"] == "prod"


def test_json_events_keep_their_body_as_text():
    event = build_event("POST", "/v1/audio/transcriptions", [("Content-Type", "application/json")], b'{"a": 1}',
                        "/v1/audio/transcriptions", {}, "rid-2", "127.0.0.1")
    assert event["isBase64Encoded"] is False and event["body"] == '{"a": 1}'


@pytest.mark.parametrize(("kind", "status", "code"), [
    ("MISSING_AUTHENTICATION_TOKEN", 404, "unknown_url"),
    ("REQUEST_TOO_LARGE", 413, "audio_too_large"),
    ("INTEGRATION_TIMEOUT", 504, "timeout"),
    ("DEFAULT_5XX", 502, None),
])
def test_gateway_responses_are_rendered_from_the_template_in_openai_shape(local, kind, status, code):
    gateway = object.__new__(LocalApiGateway)  # without its worker processes
    gateway.gateway_responses = local.gateway_responses()
    got_status, headers, body = gateway.gateway_response(kind, status, "rid-3", "GET", "/v1/nope", "Internal error")
    error = json.loads(body)["error"]
    assert got_status == status and headers["x-request-id"] == "rid-3"
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    if kind == "MISSING_AUTHENTICATION_TOKEN":
        assert "GET /v1/nope" in error["message"]
    if kind == "DEFAULT_5XX":
        assert error["message"] == "Internal error"
