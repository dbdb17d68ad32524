"""errors: every client-visible error has a status code and an OpenAI-shaped body."""

from __future__ import annotations

import json

import pytest
from infery.domain import errors

ERROR_CLASSES = [
    (errors.InvalidRequest, 400, "invalid_request_error", None),
    (errors.AuthenticationFailed, 401, "invalid_request_error", "invalid_api_key"),
    (errors.InsufficientCredits, 402, "insufficient_quota", "insufficient_credits"),
    (errors.NotFound, 404, "invalid_request_error", "not_found"),
    (errors.MethodNotAllowed, 405, "invalid_request_error", "method_not_allowed"),
    (errors.PayloadTooLarge, 413, "invalid_request_error", "payload_too_large"),
    (errors.UnsupportedMediaType, 415, "invalid_request_error", "unsupported_media_type"),
    (errors.InternalError, 500, "server_error", "internal_error"),
    (errors.ModelFailed, 502, "server_error", "model_error"),
    (errors.ModelUnavailable, 503, "server_error", "model_unavailable"),
    (errors.ModelTimeout, 504, "server_error", "model_timeout"),
]
CLASS_NAMES = [row[0].__name__ for row in ERROR_CLASSES]


@pytest.mark.parametrize(("error_class", "status", "error_type", "default_code"), ERROR_CLASSES, ids=CLASS_NAMES)
def test_status_type_and_default_code(error_class, status, error_type, default_code):
    error = error_class("what went wrong")
    assert isinstance(error, errors.InferyError) and isinstance(error, Exception)
    assert (error.status_code, error.error_type, error.code) == (status, error_type, default_code)
    assert (error.message, str(error), error.param, error.headers) == ("what went wrong", "what went wrong", None, {})


@pytest.mark.parametrize("error_class", [row[0] for row in ERROR_CLASSES], ids=CLASS_NAMES)
def test_to_body_is_exactly_openais_error_object(error_class):
    error = error_class("The audio file is empty.", param="file", code="empty_file")
    body = error.to_body()
    assert list(body) == ["error"]
    assert body["error"] == {
        "message": "The audio file is empty.",
        "type": error.error_type,
        "param": "file",
        "code": "empty_file",
    }
    assert json.loads(json.dumps(body)) == body


def test_an_explicit_code_replaces_the_default_and_nulls_stay_null():
    assert errors.AuthenticationFailed("no key", code="missing_api_key").code == "missing_api_key"
    assert errors.InvalidRequest("bad").to_body() == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}
    }


def test_headers_travel_with_the_error_and_are_not_shared():
    first = errors.InsufficientCredits("empty", headers={"x-infery-credits-balance": "0"})
    second = errors.InsufficientCredits("empty")
    assert first.headers == {"x-infery-credits-balance": "0"} and second.headers == {}
    second.headers["x"] = "1"
    assert errors.InsufficientCredits("again").headers == {}


def test_error_body_builds_the_same_shape():
    assert errors.error_body("m", "server_error") == {
        "error": {"message": "m", "type": "server_error", "param": None, "code": None}
    }
