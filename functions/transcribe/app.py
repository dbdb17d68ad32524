"""The public API (transcriptions, translations, uploads, jobs, models, usage): a thin adapter over infery."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import boto3
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from infery.async_inference import ProgressReader
from infery.credits import CreditStore
from infery.endpoint_client import WhisperEndpoint
from infery.errors import Conflict, InferyError, InsufficientCredits, InvalidRequest, ModelTimeout, NotFound
from infery.http_errors import JSON_CONTENT_TYPE, error_response, unexpected_error_response
from infery.inference import Task
from infery.job_views import JobPresenter
from infery.jobs import Job, JobStatus, JobStore, job_id_for_upload, new_job, new_job_id
from infery.keys import ApiKeyItem, KeyStore
from infery.observability import logger, metrics
from infery.rate_limits import RateLimiter
from infery.service import TranscriptionService
from infery.settings import get_settings
from infery.storage import AudioStore, new_upload_id
from infery.transcription_request import (
    JOB_ID_PATTERN,
    ResponseFormat,
    TranscriptionRequest,
    parse_transcription_request,
    parse_upload_request,
)
from infery.usage import period, usage_report

settings = get_settings()
# Inference must not be retried by the SDK: a retry would run (and risk charging) the audio twice.
_runtime_config = Config(read_timeout=settings.endpoint_timeout_seconds, connect_timeout=3,
                         retries={"total_max_attempts": 1})
_dynamodb = boto3.client("dynamodb")
service = TranscriptionService(
    settings,
    KeyStore(boto3.resource("dynamodb").Table(settings.keys_table_name)),
    CreditStore(_dynamodb, settings.keys_table_name, settings.ledger_table_name, settings.reservations_table_name),
    WhisperEndpoint(boto3.client("sagemaker-runtime", config=_runtime_config), settings.sagemaker_endpoint_name),
)

_s3 = boto3.client("s3")
audio_store = AudioStore(_s3, settings.audio_bucket_name, max_upload_bytes=settings.max_upload_bytes,
                         upload_expiry_seconds=settings.upload_expiry_seconds)
jobs = JobStore(boto3.resource("dynamodb").Table(settings.jobs_table_name))
job_views = JobPresenter(audio_store, model_progress=ProgressReader(_s3, settings.audio_bucket_name))
_sqs = boto3.client("sqs")
rate_limiter = RateLimiter(boto3.resource("dynamodb").Table(settings.rate_limits_table_name))
# A retried request with the same Idempotency-Key (per key) gets the first answer back and is charged once.
idempotency_config = IdempotencyConfig(event_key_jmespath="[key_id, idempotency_key]",
                                       payload_validation_jmespath="request_sha256",
                                       expires_after_seconds=settings.idempotency_ttl_seconds)
idempotency_store = DynamoDBPersistenceLayer(table_name=settings.idempotency_table_name)

app = APIGatewayRestResolver()


def _request_id() -> str:
    return app.current_event.request_context.request_id


def _body_bytes() -> bytes:
    event = app.current_event
    if event.body is None:
        return b""
    return base64.b64decode(event.body) if event.is_base64_encoded else event.body.encode()


def _authenticate() -> tuple[ApiKeyItem, dict[str, str]]:
    """The caller's key, after counting this request against its rate limit; and the rate-limit headers."""
    key = service.keys.authenticate(app.current_event.headers.get("authorization"))
    logger.append_keys(key_id=key.key_id)
    limit = key.rate_limit_per_minute
    state = rate_limiter.acquire(key.key_id, settings.default_rate_limit_per_minute if limit is None else limit)
    headers = state.headers() if state else {}
    app.append_context(rate_limit_headers=headers)  # a request refused after this was counted: say so there too
    return key, headers


def _idempotency_key() -> str | None:
    value = app.current_event.headers.get("idempotency-key")
    if value is None:
        return None
    if not 1 <= len(value) <= 255 or not value.isprintable():
        raise InvalidRequest("The Idempotency-Key header must be 1 to 255 printable characters.",
                             param="Idempotency-Key", code="invalid_idempotency_key")
    return value


def _fingerprint(request: TranscriptionRequest) -> str:
    """What makes two requests the same, independent of how they were encoded (multipart boundaries differ)."""
    options = request.model_dump(exclude={"audio"}, mode="json")
    digest = hashlib.sha256(request.audio)
    digest.update(json.dumps(options, sort_keys=True).encode())
    return digest.hexdigest()


_REPLAYED_EVENT_SECONDS = 300


def _check_client_still_waiting(*_: object) -> None:
    """Raise once API Gateway has given up on this request: its client was told nothing was charged."""
    started_ms = app.current_event.get("requestContext", {}).get("requestTimeEpoch")
    waited_seconds = time.time() - started_ms / 1000 if started_ms else 0.0
    # an event much older than any gateway waits is a recorded one replayed (sam local invoke, tests): no deadline
    if settings.api_deadline_seconds < waited_seconds < _REPLAYED_EVENT_SECONDS:
        raise ModelTimeout("The request took longer than the API's time limit; nothing was charged. Retry, or "
                           "send long audio through POST /v1/uploads as a job.", code="timeout")


def _run_transcription(key: ApiKeyItem, request: TranscriptionRequest) -> dict:
    _check_client_still_waiting()  # it may have queued for a worker so long that the gateway answered already
    if request.upload_id:
        # the audio is in S3: the model reads it from there, so a file past the 6 MB invocation body fits
        request = request.with_stored_audio(*audio_store.load_upload(key.key_id, request.upload_id))
    outcome = service.transcribe(key, request, request_id=_request_id(), before_settle=_check_client_still_waiting)
    metrics.add_metric(name="AudioSeconds", unit=MetricUnit.Seconds, value=outcome.audio_seconds)
    metrics.add_metric(name="CreditsCharged", unit=MetricUnit.Count, value=outcome.credits_used)
    logger.info("transcribed", extra={"task": request.task.value, "audio_format": request.audio_format.value,
                                      "audio_seconds": outcome.audio_seconds, "credits_used": outcome.credits_used})
    body = outcome.rendered.body
    return {"content_type": outcome.rendered.content_type,
            "body": body if isinstance(body, str) else json.dumps(body),
            "headers": {"x-infery-credits-used": str(outcome.credits_used),
                        "x-infery-credits-balance": str(outcome.balance_after)}}


@idempotent_function(data_keyword_argument="idempotent_request", persistence_store=idempotency_store,
                     config=idempotency_config)
def _run_transcription_once(idempotent_request: dict, key: ApiKeyItem, request: TranscriptionRequest) -> dict:
    return {**_run_transcription(key, request), "request_id": _request_id()}


def _transcribe(task: Task) -> Response:
    key, rate_limit_headers = _authenticate()
    request = parse_transcription_request(
        task, app.current_event.headers.get("content-type"), _body_bytes(),
        max_audio_bytes=settings.max_sync_audio_bytes, max_upload_bytes=settings.max_upload_bytes)
    idempotency_key = _idempotency_key()
    if idempotency_key is None:
        result = _run_transcription(key, request)
    else:
        try:
            result = _run_transcription_once(
                idempotent_request={"key_id": key.key_id, "idempotency_key": idempotency_key,
                                    "request_sha256": _fingerprint(request)},
                key=key, request=request)
        except IdempotencyAlreadyInProgressError as exc:
            raise Conflict("A request with this Idempotency-Key is still running. Retry once it has finished.",
                           param="Idempotency-Key", code="idempotency_key_in_progress") from exc
        except IdempotencyValidationError as exc:
            raise InvalidRequest("This Idempotency-Key was used with a different request. Use a new key for a "
                                 "new request.", param="Idempotency-Key", code="idempotency_key_reused") from exc
        if result["request_id"] != _request_id():
            # the first answer, replayed: this request changed nothing
            rate_limit_headers = {**rate_limit_headers, "idempotent-replayed": "true",
                                  "x-infery-original-request-id": result["request_id"]}
    return Response(status_code=200, content_type=result["content_type"], body=result["body"],
                    headers={**result["headers"], **rate_limit_headers})


@app.post("/v1/audio/transcriptions")
def create_transcription() -> Response:
    return _transcribe(Task.TRANSCRIBE)


@app.post("/v1/audio/translations")
def create_translation() -> Response:
    return _transcribe(Task.TRANSLATE)


def _json_response(status: int, body: dict, headers: dict[str, str]) -> Response:
    return Response(status, JSON_CONTENT_TYPE, json.dumps(body), headers=headers)


def _require_minimum_credit(key: ApiKeyItem, model: str) -> None:
    """402 unless the key's balance covers the smallest charge a request can have: an upload or a job made
    without it would only fail later, in the worker."""
    minimum = max(1, service.pricing.credits_for(0, model))
    if key.credits < minimum:
        raise InsufficientCredits(
            f"This key's balance is {key.credits} credits; an upload or a job needs at least {minimum}. Top up the "
            "key's credits to continue.", headers={"x-infery-credits-balance": str(key.credits)})


@app.post("/v1/uploads")
def create_upload() -> Response:
    """A presigned POST into the key's own prefix; unless start_job is false, the file starts a job on arrival."""
    key, rate_limit_headers = _authenticate()
    upload = parse_upload_request(app.current_event.headers.get("content-type"), _body_bytes(),
                                  service.catalog.default_model,
                                  allow_http_webhooks=settings.webhook_allow_private_addresses)
    _require_minimum_credit(key, service.catalog.resolve(upload.job.model))
    upload_id = new_upload_id()
    presigned = audio_store.presigned_upload(key.key_id, upload_id)
    body = {"id": upload_id, "object": "upload", "method": "POST", "upload_url": presigned["url"],
            "fields": presigned["fields"], "max_bytes": settings.max_upload_bytes,
            "expires_in": settings.upload_expiry_seconds}
    if upload.start_job:
        job = new_job(job_id=job_id_for_upload(upload_id), key_id=key.key_id, key_hash=key.key_hash,
                      options=upload.job.options(), status=JobStatus.AWAITING_UPLOAD,
                      source_uri=audio_store.upload_uri(key.key_id, upload_id),
                      upload_id=upload_id, filename=upload.filename, webhook_url=upload.job.webhook_url)
        jobs.create(job)
        body |= {"job_id": job.job_id, "webhook_secret": job.webhook_secret}
    return _json_response(201, body, rate_limit_headers)


def _create_job(task: Task) -> Response:
    key, rate_limit_headers = _authenticate()
    request = parse_transcription_request(
        task, app.current_event.headers.get("content-type"), _body_bytes(),
        max_audio_bytes=settings.max_sync_audio_bytes, max_upload_bytes=settings.max_upload_bytes, for_job=True,
        allow_http_webhooks=settings.webhook_allow_private_addresses)
    _require_minimum_credit(key, service.catalog.resolve(request.model))
    if request.upload_id:
        source_uri = audio_store.check_upload(key.key_id, request.upload_id)  # 404 unless it arrived
    else:
        source_uri = audio_store.put_upload(key.key_id, new_upload_id(), request.audio).uri
    job = new_job(job_id=new_job_id(), key_id=key.key_id, key_hash=key.key_hash, options=request.options(),
                  status=JobStatus.QUEUED, source_uri=source_uri, upload_id=request.upload_id,
                  filename=request.filename, webhook_url=request.webhook_url)
    jobs.create(job)
    _sqs.send_message(QueueUrl=settings.jobs_queue_url, MessageBody=json.dumps({"job_id": job.job_id}))
    return _json_response(202, {**job_views.view(job), "webhook_secret": job.webhook_secret},
                          rate_limit_headers)


@app.post("/v1/audio/transcriptions/jobs")
def create_transcription_job() -> Response:
    return _create_job(Task.TRANSCRIBE)


@app.post("/v1/audio/translations/jobs")
def create_translation_job() -> Response:
    return _create_job(Task.TRANSLATE)


def _own_job(key: ApiKeyItem, job_id: str) -> Job:
    # an id of another shape is no job: not looked up (a DynamoDB key past 2 KB would fail the read)
    job = jobs.get(job_id) if JOB_ID_PATTERN.fullmatch(job_id) else None
    if job is None or job.key_id != key.key_id:  # another key's job is as invisible as a missing one
        shown = job_id if len(job_id) <= 40 else job_id[:40] + "..."
        raise NotFound(f"No job with id '{shown}'.", param="job_id", code="job_not_found")
    return job


def _response_format_query() -> ResponseFormat | None:
    value = (app.current_event.query_string_parameters or {}).get("response_format")
    if value is None:
        return None
    try:
        return ResponseFormat(value)
    except ValueError:
        raise InvalidRequest(f"'response_format' must be one of {', '.join(f.value for f in ResponseFormat)}.",
                             param="response_format", code="invalid_value") from None


@app.get("/v1/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    key, rate_limit_headers = _authenticate()
    return _json_response(200, job_views.view(_own_job(key, job_id), _response_format_query()),
                          rate_limit_headers)


@app.get("/v1/jobs/<job_id>/result")
def get_job_result(job_id: str) -> Response:
    """The transcript alone, as the sync call would have answered it (text/plain for text, srt and vtt)."""
    key, rate_limit_headers = _authenticate()
    job = _own_job(key, job_id)
    rendered = job_views.render_result(job, _response_format_query())
    body = rendered.body
    return Response(200, rendered.content_type, body if isinstance(body, str) else json.dumps(body),
                    headers={**rate_limit_headers, "x-infery-credits-used": str(job.credits_used or 0),
                             # the key's balance as read (consistently) when it was authenticated, moments ago
                             "x-infery-credits-balance": str(key.credits)})


@app.get("/v1/models")
def list_models() -> Response:
    _, rate_limit_headers = _authenticate()
    models = [service.catalog.describe(name) for name in service.catalog.names()]
    return Response(200, JSON_CONTENT_TYPE, json.dumps({"object": "list", "data": models}),
                    headers=rate_limit_headers)


@app.get("/v1/models/<model_id>")
def retrieve_model(model_id: str) -> Response:
    _, rate_limit_headers = _authenticate()
    if model_id not in service.catalog.names():
        raise NotFound(f"The model '{model_id}' does not exist on this deployment.", param="model",
                       code="model_not_found")
    return Response(200, JSON_CONTENT_TYPE, json.dumps(service.catalog.describe(model_id)),
                    headers=rate_limit_headers)


@app.get("/v1/usage")
def get_usage() -> Response:
    """The calling key's balance, its totals per day and per model, and its recent requests."""
    key, rate_limit_headers = _authenticate()
    query = app.current_event.query_string_parameters or {}
    try:
        days = int(query.get("days", "30"))
    except ValueError:
        days = 0
    if not 1 <= days <= 366:
        raise InvalidRequest("'days' must be a whole number from 1 to 366.", param="days", code="invalid_days")
    since, until = period(days=days)
    entries = service.credits.ledger(key.key_id, since=since, until=until)
    report = usage_report(entries, balance=service.credits.balance(key.key_hash), since=since, until=until)
    return Response(200, JSON_CONTENT_TYPE, json.dumps({"key_id": key.key_id, "name": key.name, **report}),
                    headers=rate_limit_headers)


@app.exception_handler(InferyError)
def handle_infery_error(error: InferyError) -> Response:
    logger.info("request refused", extra={"status": error.status_code, "code": error.code})
    response = error_response(error)
    # the error's own headers (a 429's remaining 0, Retry-After) win over the counted request's
    response.headers = {**app.context.get("rate_limit_headers", {}), **response.headers}
    return response


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
    idempotency_config.register_lambda_context(context)
    response = app.resolve(event, context)
    request_id = event.get("requestContext", {}).get("requestId", context.aws_request_id)
    response.setdefault("multiValueHeaders", {})["x-request-id"] = [request_id]
    return response
