"""Domain errors and their one mapping to OpenAI-shaped HTTP errors.

Every error a client can see is an ``InferyError``; handlers never build error
bodies themselves, so the status codes and the shape stay in one place.
"""

from __future__ import annotations

from typing import Any


class InferyError(Exception):
    status_code = 400
    error_type = "invalid_request_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
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
