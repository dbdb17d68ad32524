"""What the API's routes share: the request being served (its id, body and query), the caller's key counted against
its rate limit, the settings, the wiring's collaborators and Idempotency-Key handling. One per handler instance, so
two instances (two Lambda environments, or two loads of the handler in a test) share nothing but their records."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from infery.http.errors import JSON_CONTENT_TYPE
from infery.observability import logger

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

    from infery.domain.inference import Task
    from infery.domain.keys import ApiKeyItem
    from infery.domain.transcription import TranscriptionRequest
    from infery.http.idempotency import Idempotency
    from infery.settings import ApiSettings
    from infery.wiring import Wiring


class Dependencies:
    """Handed to each router when the handler builds it; read by the routes while they serve a request."""

    def __init__(self, app: APIGatewayRestResolver, settings: ApiSettings, wiring: Wiring, handler_module: str) -> None:
        self.app = app
        self.settings = settings
        self.wiring = wiring
        # the handler's module name: Idempotency-Key records are named after it
        self.handler_module = handler_module

    @property
    def event(self) -> APIGatewayProxyEvent:
        return self.app.current_event

    def transcription_request(self, task: Task, *, for_job: bool = False) -> TranscriptionRequest:
        """The request's fields and audio, checked against this deployment's limits (a job's webhook too)."""
        from infery.http.request_parsing import parse_transcription_request

        return parse_transcription_request(
            task,
            self.event.headers.get("content-type"),
            self.body(),
            max_audio_bytes=self.settings.max_sync_audio_bytes,
            # what an upload takes (a job's file), named in the 413 of a request too large for a synchronous call
            max_upload_bytes=self.settings.max_job_bytes,
            for_job=for_job,
            allow_http_webhooks=self.settings.webhook_allow_http,
            allow_private_webhooks=self.settings.webhook_allow_private_addresses,
        )

    def request_id(self) -> str:
        return self.event.request_context.request_id

    def body(self) -> bytes | str:
        """The request's body: a form's bytes, decoded from API Gateway's base64, or a JSON body's text as it is."""
        from infery.http.request_parsing import event_body

        return event_body(self.event.body, self.event.is_base64_encoded)

    def query(self) -> dict[str, str]:
        return self.event.query_string_parameters or {}

    def authenticate(self) -> tuple[ApiKeyItem, dict[str, str]]:
        """The caller's key, after counting this request against its rate limit; and the rate-limit headers."""
        key = self.wiring.keys.authenticate(self.event.headers.get("authorization"))
        logger.append_keys(key_id=key.key_id)
        limit = key.rate_limit_per_minute
        default = self.settings.default_rate_limit_per_minute
        state = self.wiring.rate_limiter.acquire(key.key_id, default if limit is None else limit, key.credit_shards)
        headers = state.headers() if state else {}
        self.app.context["rate_limit_headers"] = headers  # a request refused after this was counted: say so there too
        return key, headers

    @cached_property
    def idempotency(self) -> Idempotency:
        from infery.http.idempotency import Idempotency

        return Idempotency(self.wiring, self.handler_module)

    def once(
        self,
        key: ApiKeyItem,
        idempotency_key: str | None,
        fingerprint: Callable[[], str],
        work: Callable[[], dict[str, Any]],
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """``work()``'s answer, once per (key, Idempotency-Key) when the header was sent; and the replay's headers
        (infery.http.idempotency)."""
        return self.idempotency.once(
            key.key_id,
            idempotency_key,
            request_id=self.request_id(),
            lambda_context=self.app.lambda_context,
            fingerprint=fingerprint,
            work=work,
        )


def new_router() -> APIGatewayRouter:
    return APIGatewayRouter()  # type: ignore[no-untyped-call]  # powertools leaves its __init__ untyped


def json_response(status: int, body: object, headers: dict[str, str]) -> Response[str]:
    return Response(status, JSON_CONTENT_TYPE, json.dumps(body), headers=headers)
