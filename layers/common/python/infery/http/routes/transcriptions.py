"""POST /v1/audio/transcriptions and /v1/audio/translations: the synchronous call, OpenAI's."""

from __future__ import annotations

import json
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.metrics import MetricUnit

from infery.domain.errors import ModelTimeout
from infery.domain.ids import idempotency_id
from infery.http.routes.dependencies import new_router
from infery.observability import logger, metrics

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.router import APIGatewayRouter

    from infery.domain.inference import Task
    from infery.domain.keys import ApiKeyItem
    from infery.domain.transcription import LoadedAudio, TranscriptionRequest
    from infery.http.routes.dependencies import Dependencies

_REPLAYED_EVENT_SECONDS = 300


def router(deps: Dependencies) -> APIGatewayRouter:
    router = new_router()

    @router.post("/v1/audio/transcriptions")
    def create_transcription() -> Response[str]:
        from infery.domain.inference import Task

        return _transcribe(deps, Task.TRANSCRIBE)

    @router.post("/v1/audio/translations")
    def create_translation() -> Response[str]:
        from infery.domain.inference import Task

        return _transcribe(deps, Task.TRANSLATE)

    return router


def _transcribe(deps: Dependencies, task: Task) -> Response[str]:
    from infery.http.idempotency import idempotency_key, request_fingerprint

    key, rate_limit_headers = deps.authenticate()
    request = deps.transcription_request(task)
    once_key = idempotency_key(deps.event.headers)
    run = partial(_run_transcription, deps, key, request, once_key)
    answer, replay_headers = deps.once(key, once_key, partial(request_fingerprint, request), run)
    body = answer["body"]
    if body is None:  # a replay of an answer too large for its record: rendered again from the stored result
        body = run()["body"]
    return Response(
        status_code=200,
        content_type=answer["content_type"],
        body=body,
        headers={**answer["headers"], **rate_limit_headers, **replay_headers},
    )


def _check_client_still_waiting(deps: Dependencies) -> None:
    """Raise once API Gateway has given up on this request: its client was told nothing was charged."""
    started_ms = (deps.event.get("requestContext") or {}).get("requestTimeEpoch")
    waited_seconds = time.time() - started_ms / 1000 if started_ms else 0.0
    # an event much older than any gateway waits is a recorded one replayed (sam local invoke, tests): no deadline
    if deps.settings.api_deadline_seconds < waited_seconds < _REPLAYED_EVENT_SECONDS:
        raise ModelTimeout(
            "The request took longer than the API's time limit; nothing was charged. Retry, or "
            "send long audio through POST /v1/uploads as a job.",
            code="timeout",
        )


def _audio(deps: Dependencies, key: ApiKeyItem, request: TranscriptionRequest) -> LoadedAudio:
    """The request's audio: sent in it, read from the upload it names, or fetched from its URL into the bucket (the
    model reads those from S3 too, so a file past the 6 MB invocation body fits)."""
    if request.audio is not None:
        return request.audio
    if request.url is not None:  # fetched now, inside this call's time limit, into the key's uploads
        from infery.domain.ids import new_upload_id

        # a key that cannot pay is told so before anything is fetched or stored
        deps.wiring.transcription.check_balance(key, request)
        return deps.wiring.audio_by_url.fetch(
            key.key_id, request.url, upload_id=new_upload_id(), max_bytes=deps.settings.max_sync_audio_bytes
        )
    assert request.upload_id is not None  # a request has its audio, names an upload or gives a URL
    from infery.domain.transcription import LoadedAudio

    return LoadedAudio.stored(*deps.wiring.audio_store.load_upload(key.key_id, request.upload_id))


def _run_transcription(
    deps: Dependencies, key: ApiKeyItem, request: TranscriptionRequest, idempotency_key: str | None
) -> dict[str, Any]:
    still_waiting = partial(_check_client_still_waiting, deps)
    still_waiting()  # it may have queued for a worker so long that the gateway answered already
    loaded: list[LoadedAudio] = []

    def load_audio() -> LoadedAudio:
        loaded.append(_audio(deps, key, request))
        return loaded[0]

    if idempotency_key is None:
        outcome = deps.wiring.transcription.transcribe(
            key, request, load_audio(), request_id=deps.request_id(), check_client_waiting=still_waiting
        )
    else:  # loaded only when the request was not charged already: a replay fetches no URL again
        outcome = deps.wiring.transcription.transcribe_once(
            key,
            request,
            load_audio,
            idempotency_id=idempotency_id(key.key_id, idempotency_key),
            check_client_waiting=still_waiting,
        )
    if request.upload_id is not None:  # charged: the upload no longer counts as the key's open work
        deps.wiring.job_service.upload_used(key.key_id, request.upload_id)
    metrics.add_metric(name="AudioSeconds", unit=MetricUnit.Seconds, value=outcome.audio_seconds)
    metrics.add_metric(name="CreditsCharged", unit=MetricUnit.Count, value=outcome.credits_used)
    logger.info(
        "transcribed",
        extra={
            "task": request.task.value,
            "audio_format": loaded[0].format.value if loaded else None,  # None: a stored result rendered again
            "audio_seconds": outcome.audio_seconds,
            "credits_used": outcome.credits_used,
        },
    )
    body = outcome.rendered.body
    return {
        "status": 200,
        "content_type": outcome.rendered.content_type,
        "body": body if isinstance(body, str) else json.dumps(body),
        "headers": {
            "x-infery-credits-used": str(outcome.credits_used),
            "x-infery-credits-balance": str(outcome.balance_after),
        },
    }
