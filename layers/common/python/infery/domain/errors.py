"""Domain errors and their one mapping to OpenAI-shaped HTTP errors.

Every error a client can see is an ``InferyError``; handlers never build error
bodies themselves, so the status codes and the shape stay in one place.
"""

from __future__ import annotations

import re
from typing import Any

# Text written for operators that must never reach a client, whichever component wrote the message: errno
# prefixes (FFmpeg's "[Errno 1094995529] Invalid data ..."), our buckets' object URIs and our resources' ARNs.
_INTERNAL_TEXT = (
    (re.compile(r"\[Errno -?\d+\]\s*"), ""),
    (re.compile(r"(['\"])s3://[^'\"]*\1"), r"\1(the stored file)\1"),
    (re.compile(r"s3://[^\s'\"<>]+"), "(the stored file)"),
    (re.compile(r"(['\"])arn:aws[\w-]*:[^'\"]*\1"), r"\1(an AWS resource)\1"),
    (re.compile(r"arn:aws[\w-]*:[^\s'\"<>]+"), "(an AWS resource)"),
)


# C0 and C1 control characters and unpaired surrogates: a message that quotes a client's value (a key's first
# characters, a model name, a field name) shows them escaped (\x00, \n, \ud800), never as raw bytes.
_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def public_message(message: str) -> str:
    """``message`` without the internal details a client must not see (see _INTERNAL_TEXT), and with any control
    character a quoted value brought in written out."""
    for pattern, replacement in _INTERNAL_TEXT:
        message = pattern.sub(replacement, message)
    return _CONTROL_CHARACTERS.sub(lambda found: repr(found.group(0))[1:-1], message)


class InferyError(Exception):
    status_code = 400
    error_type = "invalid_request_error"
    default_code: str | None = None

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        message = public_message(message)  # clients see it: the API's answers, a job's error
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = headers or {}

    def to_body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class InvalidRequest(InferyError):
    status_code = 400


class AuthenticationFailed(InferyError):
    status_code = 401
    default_code = "invalid_api_key"


class InsufficientCredits(InferyError):
    # 402, not OpenAI's 429: the openai SDK retries 429s, and retrying an empty balance is pointless.
    status_code = 402
    error_type = "insufficient_quota"
    default_code = "insufficient_credits"


class PermissionDenied(InferyError):
    status_code = 403
    default_code = "permission_denied"


class NotFound(InferyError):
    status_code = 404
    default_code = "not_found"


class MethodNotAllowed(InferyError):
    status_code = 405
    default_code = "method_not_allowed"


class PayloadTooLarge(InferyError):
    status_code = 413
    default_code = "payload_too_large"


class UnsupportedMediaType(InferyError):
    status_code = 415
    default_code = "unsupported_media_type"


class Conflict(InferyError):
    status_code = 409
    default_code = "conflict"


class RateLimited(InferyError):
    # OpenAI's shape and headers, so the openai SDK backs off and retries after Retry-After.
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class TooMuchOpenWork(RateLimited):
    """The key holds as many open uploads and jobs as it may: a 429 the SDK backs off from, with its own code."""

    default_code = "too_many_open_jobs"


class ModelFailed(InferyError):
    """The model server answered, but with an error of its own."""

    status_code = 502
    error_type = "server_error"
    default_code = "model_error"


class ModelUnavailable(InferyError):
    status_code = 503
    error_type = "server_error"
    default_code = "model_unavailable"


class ModelTimeout(InferyError):
    status_code = 504
    error_type = "server_error"
    default_code = "model_timeout"


class InternalError(InferyError):
    status_code = 500
    error_type = "server_error"
    default_code = "internal_error"
