"""POST /v1/audio/transcriptions, POST /v1/audio/translations, GET /v1/models: a thin adapter over infery."""

from __future__ import annotations

import base64
import json

import boto3
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from infery.credits import CreditStore
from infery.endpoint_client import WhisperEndpoint
from infery.errors import InferyError, NotFound
from infery.http_errors import JSON_CONTENT_TYPE, error_response, unexpected_error_response
from infery.inference import Task
from infery.keys import KeyStore
from infery.observability import logger, metrics
from infery.service import TranscriptionService
from infery.settings import get_settings
from infery.transcription_request import parse_transcription_request

settings = get_settings()
# Inference must not be retried by the SDK: a retry would run (and risk charging) the audio twice.
_runtime_config = Config(read_timeout=settings.endpoint_timeout_seconds, connect_timeout=3,
                         retries={"total_max_attempts": 1})
_dynamodb = boto3.client("dynamodb")
service = TranscriptionService(
    settings,
    KeyStore(boto3.resource("dynamodb").Table(settings.keys_table_name)),
    CreditStore(_dynamodb, settings.keys_table_name, settings.ledger_table_name),
    WhisperEndpoint(boto3.client("sagemaker-runtime", config=_runtime_config), settings.sagemaker_endpoint_name),
)

app = APIGatewayRestResolver()


def _request_id() -> str:
    return app.current_event.request_context.request_id


def _body_bytes() -> bytes:
    event = app.current_event
    if event.body is None:
        return b""
    return base64.b64decode(event.body) if event.is_base64_encoded else event.body.encode()


def _transcribe(task: Task) -> Response:
    key = service.keys.authenticate(app.current_event.headers.get("authorization"))
    logger.append_keys(key_id=key.key_id)
    request = parse_transcription_request(
        task, app.current_event.headers.get("content-type"), _body_bytes(),
        max_audio_bytes=settings.max_sync_audio_bytes, max_upload_bytes=settings.max_upload_bytes)
    outcome = service.transcribe(key, request, request_id=_request_id())
    metrics.add_metric(name="AudioSeconds", unit=MetricUnit.Seconds, value=outcome.audio_seconds)
    metrics.add_metric(name="CreditsCharged", unit=MetricUnit.Count, value=outcome.credits_used)
    logger.info("transcribed", extra={"task": task.value, "audio_format": request.audio_format.value,
                                      "audio_seconds": outcome.audio_seconds, "credits_used": outcome.credits_used})
    body = outcome.rendered.body
    return Response(
        status_code=200,
        content_type=outcome.rendered.content_type,
        body=body if isinstance(body, str) else json.dumps(body),
        headers={"x-infery-credits-used": str(outcome.credits_used),
                 "x-infery-credits-balance": str(outcome.balance_after)},
    )


@app.post("/v1/audio/transcriptions")
def create_transcription() -> Response:
    return _transcribe(Task.TRANSCRIBE)


@app.post("/v1/audio/translations")
def create_translation() -> Response:
    return _transcribe(Task.TRANSLATE)


@app.get("/v1/models")
def list_models() -> Response:
    service.keys.authenticate(app.current_event.headers.get("authorization"))
    models = [service.catalog.describe(name) for name in service.catalog.names()]
    return Response(200, JSON_CONTENT_TYPE, json.dumps({"object": "list", "data": models}))


@app.get("/v1/models/<model_id>")
def retrieve_model(model_id: str) -> Response:
    service.keys.authenticate(app.current_event.headers.get("authorization"))
    if model_id not in service.catalog.names():
        raise NotFound(f"The model '{model_id}' does not exist on this deployment.", param="model",
                       code="model_not_found")
    return Response(200, JSON_CONTENT_TYPE, json.dumps(service.catalog.describe(model_id)))


@app.exception_handler(InferyError)
def handle_infery_error(error: InferyError) -> Response:
    logger.info("request refused", extra={"status": error.status_code, "code": error.code})
    return error_response(error)


@app.exception_handler(Exception)
def handle_unexpected_error(error: Exception) -> Response:
    logger.exception("unexpected error")
    return unexpected_error_response(_request_id())


@app.not_found
def handle_not_found(_: Exception) -> Response:
    return error_response(NotFound(f"Unknown request URL: {app.current_event.http_method} "
                                   f"{app.current_event.path}.", code="unknown_url"))


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    response = app.resolve(event, context)
    request_id = event.get("requestContext", {}).get("requestId", context.aws_request_id)
    response.setdefault("multiValueHeaders", {})["x-request-id"] = [request_id]
    return response
