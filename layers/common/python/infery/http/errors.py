"""The one place where domain errors become HTTP responses."""

from __future__ import annotations

import json

from aws_lambda_powertools.event_handler import Response

from infery.domain.errors import InferyError, InternalError

JSON_CONTENT_TYPE = "application/json"


def error_response(error: InferyError) -> Response[str]:
    return Response(
        status_code=error.status_code,
        content_type=JSON_CONTENT_TYPE,
        body=json.dumps(error.to_body()),
        headers=error.headers,
    )


def unexpected_error_response(request_id: str) -> Response[str]:
    return error_response(
        InternalError(
            f"The server had an error while processing your request; nothing was charged. Retry, and quote "
            f"request id {request_id} if it persists."
        )
    )
