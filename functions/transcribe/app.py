"""The public API (transcriptions, translations, uploads, jobs, models, usage): a thin adapter over infery."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from infery import snapstart
from infery.domain.errors import Conflict, InferyError, InternalError, InvalidRequest, ModelTimeout, NotFound
from infery.domain.ids import idempotency_id
from infery.http.errors import JSON_CONTENT_TYPE, error_response, unexpected_error_response
from infery.observability import logger, metrics
from infery.settings import get_api_settings
from infery.wiring import Wiring

# A cold start imports what every request needs, no more (benchmarks/cold_start.py measures it): what only some
# routes use (request parsing and its pydantic models, usage reports, powertools Idempotency) is imported by the
# route that uses it, on its first call.
if TYPE_CHECKING:
    from infery.domain.inference import Task
    from infery.domain.keys import ApiKeyItem
    from infery.domain.transcription import LoadedAudio, ResponseFormat, TranscriptionRequest, UploadRequest

settings = get_api_settings()
# every collaborator (clients, stores, the use cases), each built on its first use
wiring = Wiring(settings)
app = APIGatewayRestResolver()


def _before_snapshot() -> None:
    snapstart.prepare(wiring)
    _idempotent_execute_once()


# With Lambda SnapStart (template.yaml) the snapshot holds what the first requests need, and every copy restored
# from it reseeds what must differ between copies; elsewhere nothing is registered.
snapstart.register(before_snapshot=_before_snapshot, after_restore=snapstart.restored)


def _request_id() -> str:
    return app.current_event.request_context.request_id


def _body() -> bytes | str:
    """The request's body: a form's bytes, decoded from API Gateway's base64, or a JSON body's text as it is."""
    from infery.http.request_parsing import event_body

    event = app.current_event
    return event_body(event.body, event.is_base64_encoded)


def _authenticate() -> tuple[ApiKeyItem, dict[str, str]]:
    """The caller's key, after counting this request against its rate limit; and the rate-limit headers."""
    key = wiring.keys.authenticate(app.current_event.headers.get("authorization"))
    logger.append_keys(key_id=key.key_id)
    limit = key.rate_limit_per_minute
    state = wiring.rate_limiter.acquire(key.key_id, settings.default_rate_limit_per_minute if limit is None else limit)
    headers = state.headers() if state else {}
    app.append_context(rate_limit_headers=headers)  # a request refused after this was counted: say so there too
    return key, headers


def _idempotency_key() -> str | None:
    value = app.current_event.headers.get("idempotency-key")
    if value is None:
        return None
    if not 1 <= len(value) <= 255 or not value.isprintable():
        raise InvalidRequest(
            "The Idempotency-Key header must be 1 to 255 printable characters.",
            param="Idempotency-Key",
            code="invalid_idempotency_key",
        )
    return value


def _fingerprint(request: TranscriptionRequest) -> str:
    """What makes two requests the same, independent of how they were encoded (multipart boundaries differ)."""
    options = request.model_dump(exclude={"audio"}, mode="json")
    # the fields a fingerprint has had since the first deployment, so a retry sent across a deployment still matches
    options |= {
        "audio_format": request.audio.format.value if request.audio else None,
        "audio_s3_uri": None,
        "audio_s3_etag": None,
    }
    digest = hashlib.sha256(request.audio.data if request.audio else b"")
    digest.update(json.dumps(options, sort_keys=True).encode())
    return digest.hexdigest()


_REPLAYED_EVENT_SECONDS = 300


def _check_client_still_waiting(*_: object) -> None:
    """Raise once API Gateway has given up on this request: its client was told nothing was charged."""
    started_ms = (app.current_event.get("requestContext") or {}).get("requestTimeEpoch")
    waited_seconds = time.time() - started_ms / 1000 if started_ms else 0.0
    # an event much older than any gateway waits is a recorded one replayed (sam local invoke, tests): no deadline
    if settings.api_deadline_seconds < waited_seconds < _REPLAYED_EVENT_SECONDS:
        raise ModelTimeout(
            "The request took longer than the API's time limit; nothing was charged. Retry, or "
            "send long audio through POST /v1/uploads as a job.",
            code="timeout",
        )


# An Idempotency-Key's record is a DynamoDB item (400 KB at most): a larger answer is rendered again on replay
# from the result stored in S3 before the charge, not stored in the record.
_INLINE_ANSWER_CHARACTERS = 256 * 1024


def _audio(key: ApiKeyItem, request: TranscriptionRequest) -> LoadedAudio:
    """The request's audio: sent in it, or read from the upload it names (the model reads that from S3 too, so a
    file past the 6 MB invocation body fits)."""
    if request.audio is not None:
        return request.audio
    assert request.upload_id is not None  # a request has its audio or names an upload
    from infery.domain.transcription import LoadedAudio

    return LoadedAudio.stored(*wiring.audio_store.load_upload(key.key_id, request.upload_id))


def _run_transcription(key: ApiKeyItem, request: TranscriptionRequest, idempotency_key: str | None) -> dict:
    _check_client_still_waiting()  # it may have queued for a worker so long that the gateway answered already
    audio = _audio(key, request)
    if idempotency_key is None:
        outcome = wiring.transcription.transcribe(
            key, request, audio, request_id=_request_id(), check_client_waiting=_check_client_still_waiting
        )
    else:
        outcome = wiring.transcription.transcribe_once(
            key,
            request,
            audio,
            idempotency_id=idempotency_id(key.key_id, idempotency_key),
            check_client_waiting=_check_client_still_waiting,
        )
    if request.upload_id is not None:  # charged: the upload no longer counts as the key's open work
        wiring.job_service.upload_used(key.key_id, request.upload_id)
    metrics.add_metric(name="AudioSeconds", unit=MetricUnit.Seconds, value=outcome.audio_seconds)
    metrics.add_metric(name="CreditsCharged", unit=MetricUnit.Count, value=outcome.credits_used)
    logger.info(
        "transcribed",
        extra={
            "task": request.task.value,
            "audio_format": audio.format.value,
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


def _execute_once(idempotent_request: dict, run: Callable[[], dict]) -> dict:
    answer = run()
    if len(answer.get("body", "")) > _INLINE_ANSWER_CHARACTERS:
        app.append_context(large_answer_body=answer["body"])  # this response sends it; the record does not keep it
        answer = {**answer, "body": None}
    return {**answer, "request_id": _request_id()}


@cache
def _idempotent_execute_once() -> Callable[..., dict]:
    """``_execute_once``, once per (key, Idempotency-Key); built on first use, with its DynamoDB store."""
    from aws_lambda_powertools.utilities.idempotency import idempotent_function

    return idempotent_function(
        data_keyword_argument="idempotent_request",
        persistence_store=wiring.idempotency_store,
        config=wiring.idempotency_config,
    )(_execute_once)


def _once(key: ApiKeyItem, fingerprint: Callable[[], str], run: Callable[[], dict]) -> tuple[dict, dict[str, str]]:
    """``run()``'s answer, once per (key, Idempotency-Key) when the header is sent: a retry gets the first answer
    back, with headers that say it is a replay, and changes nothing. ``fingerprint()`` (a hash of the whole request)
    is computed only then."""
    idempotency_key = _idempotency_key()
    if idempotency_key is None:
        return run(), {}
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyPersistenceLayerError,
        IdempotencyValidationError,
    )

    # the remaining time of this invocation: a record left in progress by a timed-out one expires with it
    wiring.idempotency_config.register_lambda_context(app.lambda_context)
    try:
        request = {"key_id": key.key_id, "idempotency_key": idempotency_key, "request_sha256": fingerprint()}
        answer = _idempotent_execute_once()(idempotent_request=request, run=run)
    except IdempotencyAlreadyInProgressError as exc:
        raise Conflict(
            "A request with this Idempotency-Key is still running. Retry once it has finished.",
            param="Idempotency-Key",
            code="idempotency_key_in_progress",
        ) from exc
    except IdempotencyValidationError as exc:
        raise InvalidRequest(
            "This Idempotency-Key was used with a different request. Use a new key for a new request.",
            param="Idempotency-Key",
            code="idempotency_key_reused",
        ) from exc
    except IdempotencyPersistenceLayerError as exc:
        if "to success" not in str(exc):
            raise
        # the work was done (and a transcription charged) but its answer could not be recorded: say so, not
        # "nothing was charged"; a retry with the same key is charged nothing more
        raise InternalError(
            "The request was processed, but its answer could not be saved. Retry with the same "
            "Idempotency-Key in a minute to get it; you will not be charged again.",
            code="answer_not_saved",
        ) from exc
    if answer["request_id"] == _request_id():
        return answer, {}
    # the first answer, replayed: this request changed nothing
    return answer, {"idempotent-replayed": "true", "x-infery-original-request-id": answer["request_id"]}


def _route_fingerprint(*parts: str | bytes) -> str:
    """What makes two requests the same: the route and what was asked, however it was encoded."""
    digest = hashlib.sha256(app.current_event.path.encode())
    for part in parts:
        digest.update(b"\0" + (part if isinstance(part, bytes) else part.encode()))
    return digest.hexdigest()


def _transcribe(task: Task) -> Response:
    from infery.http.request_parsing import parse_transcription_request

    key, rate_limit_headers = _authenticate()
    request = parse_transcription_request(
        task,
        app.current_event.headers.get("content-type"),
        _body(),
        max_audio_bytes=settings.max_sync_audio_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    idempotency_key = _idempotency_key()
    answer, replay_headers = _once(
        key, lambda: _fingerprint(request), lambda: _run_transcription(key, request, idempotency_key)
    )
    body = answer["body"]
    if body is None:
        body = app.context.get("large_answer_body")
    if body is None:  # a replay of an answer too large for its record: rendered again from the stored result
        body = _run_transcription(key, request, idempotency_key)["body"]
    return Response(
        status_code=200,
        content_type=answer["content_type"],
        body=body,
        headers={**answer["headers"], **rate_limit_headers, **replay_headers},
    )


@app.post("/v1/audio/transcriptions")
def create_transcription() -> Response:
    from infery.domain.inference import Task

    return _transcribe(Task.TRANSCRIBE)


@app.post("/v1/audio/translations")
def create_translation() -> Response:
    from infery.domain.inference import Task

    return _transcribe(Task.TRANSLATE)


def _json_response(status: int, body: dict, headers: dict[str, str]) -> Response:
    return Response(status, JSON_CONTENT_TYPE, json.dumps(body), headers=headers)


@app.post("/v1/uploads")
def create_upload() -> Response:
    """A presigned POST into the key's own prefix; unless start_job is false, the file starts a job on arrival."""
    from infery.http.request_parsing import parse_upload_request

    key, rate_limit_headers = _authenticate()
    upload = parse_upload_request(
        app.current_event.headers.get("content-type"),
        _body(),
        wiring.catalog.default_model,
        allow_http_webhooks=settings.webhook_allow_http,
        allow_private_webhooks=settings.webhook_allow_private_addresses,
    )
    wiring.job_service.admit(key, upload.job.model)
    answer, replay_headers = _once(
        key, lambda: _route_fingerprint(upload.model_dump_json()), lambda: _new_upload(key, upload)
    )
    return _json_response(answer["status"], answer["body"], {**rate_limit_headers, **replay_headers})


def _new_upload(key: ApiKeyItem, upload: UploadRequest) -> dict:
    created = wiring.job_service.create_upload(key, upload)
    body = {
        "id": created.upload_id,
        "object": "upload",
        "method": "POST",
        "upload_url": created.presigned_post["url"],
        "fields": created.presigned_post["fields"],
        "max_bytes": settings.max_upload_bytes,
        "expires_in": settings.upload_expiry_seconds,
    }
    if created.job is not None:
        body |= {"job_id": created.job.job_id, "webhook_secret": created.job.webhook_secret}
    return {"status": 201, "body": body}


def _create_job(task: Task) -> Response:
    from infery.http.request_parsing import parse_transcription_request

    key, rate_limit_headers = _authenticate()
    request = parse_transcription_request(
        task,
        app.current_event.headers.get("content-type"),
        _body(),
        max_audio_bytes=settings.max_sync_audio_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        for_job=True,
        allow_http_webhooks=settings.webhook_allow_http,
        allow_private_webhooks=settings.webhook_allow_private_addresses,
    )
    # the file, if it is here: a header that says 1 Hz or ten hours is refused before it is stored
    wiring.job_service.admit(key, request.model, request.audio)
    answer, replay_headers = _once(
        key, lambda: _route_fingerprint(_fingerprint(request)), lambda: _new_job(key, request)
    )
    return _json_response(answer["status"], answer["body"], {**rate_limit_headers, **replay_headers})


def _new_job(key: ApiKeyItem, request: TranscriptionRequest) -> dict:
    job = wiring.job_service.create_job(key, request)
    return {"status": 202, "body": {**wiring.job_presenter.view(job), "webhook_secret": job.webhook_secret}}


@app.post("/v1/audio/transcriptions/jobs")
def create_transcription_job() -> Response:
    from infery.domain.inference import Task

    return _create_job(Task.TRANSCRIBE)


@app.post("/v1/audio/translations/jobs")
def create_translation_job() -> Response:
    from infery.domain.inference import Task

    return _create_job(Task.TRANSLATE)


def _response_format_query() -> ResponseFormat | None:
    value = (app.current_event.query_string_parameters or {}).get("response_format")
    if value is None:
        return None
    from infery.domain.transcription import ResponseFormat

    try:
        return ResponseFormat(value)
    except ValueError:
        raise InvalidRequest(
            f"'response_format' must be one of {', '.join(f.value for f in ResponseFormat)}.",
            param="response_format",
            code="invalid_value",
        ) from None


@app.get("/v1/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    key, rate_limit_headers = _authenticate()
    return _json_response(
        200,
        wiring.job_presenter.view(wiring.job_service.own_job(key, job_id), _response_format_query()),
        rate_limit_headers,
    )


@app.get("/v1/jobs/<job_id>/result")
def get_job_result(job_id: str) -> Response:
    """The transcript alone, as the sync call would have answered it (text/plain for text, srt and vtt)."""
    key, rate_limit_headers = _authenticate()
    job = wiring.job_service.own_job(key, job_id)
    rendered = wiring.job_presenter.render_result(job, _response_format_query())
    body = rendered.body
    return Response(
        200,
        rendered.content_type,
        body if isinstance(body, str) else json.dumps(body),
        headers={
            **rate_limit_headers,
            "x-infery-credits-used": str(job.credits_used or 0),
            # the key's balance as read (consistently) when it was authenticated, moments ago
            "x-infery-credits-balance": str(key.credits),
        },
    )


@app.get("/v1/jobs")
def list_jobs() -> Response:
    """The calling key's most recent jobs, newest first, without their transcripts (GET /v1/jobs/{id}/result)."""
    key, rate_limit_headers = _authenticate()
    value = (app.current_event.query_string_parameters or {}).get("limit", "20")
    limit = int(value) if value.isdigit() and len(value) <= 3 else 0
    if not 1 <= limit <= 100:
        raise InvalidRequest("'limit' must be a whole number from 1 to 100.", param="limit", code="invalid_value")
    found, has_more = wiring.job_service.list_jobs(key, limit)
    # a listing reads no transcript from S3: each job's view without its result
    data = [wiring.job_presenter.view(job.model_copy(update={"result_key": None})) for job in found]
    return _json_response(200, {"object": "list", "data": data, "has_more": has_more}, rate_limit_headers)


@app.get("/v1/models")
def list_models() -> Response:
    _, rate_limit_headers = _authenticate()
    models = [wiring.catalog.describe(name) for name in wiring.catalog.names()]
    return Response(200, JSON_CONTENT_TYPE, json.dumps({"object": "list", "data": models}), headers=rate_limit_headers)


@app.get("/v1/models/<model_id>")
def retrieve_model(model_id: str) -> Response:
    _, rate_limit_headers = _authenticate()
    if model_id not in wiring.catalog.names():
        raise NotFound(
            f"The model '{model_id}' does not exist on this deployment.", param="model", code="model_not_found"
        )
    return Response(200, JSON_CONTENT_TYPE, json.dumps(wiring.catalog.describe(model_id)), headers=rate_limit_headers)


@app.get("/v1/usage")
def get_usage() -> Response:
    """The calling key's balance, its totals per day and per model, and its recent requests."""
    from infery.usecases.usage import ledger_csv, period, usage_report

    key, rate_limit_headers = _authenticate()
    query = app.current_event.query_string_parameters or {}
    try:
        days = int(query.get("days", "30"))
    except ValueError:
        days = 0
    if not 1 <= days <= 366:
        raise InvalidRequest("'days' must be a whole number from 1 to 366.", param="days", code="invalid_days")
    usage_format = query.get("format", "json")
    if usage_format not in ("json", "csv"):
        raise InvalidRequest("'format' must be json or csv.", param="format", code="invalid_value")
    since, until = period(days=days)
    entries = wiring.credits.ledger(key.key_id, since=since, until=until)
    if usage_format == "csv":  # the period's ledger entries, as the operator's `infery usage --csv` writes them
        filename = f"infery-usage-{key.key_id}-{days}d.csv"
        return Response(
            200,
            "text/csv; charset=utf-8",
            ledger_csv(entries),
            headers={**rate_limit_headers, "Content-Disposition": f'attachment; filename="{filename}"'},
        )
    report = usage_report(entries, balance=wiring.credits.balance(key.key_hash), since=since, until=until)
    return Response(
        200,
        JSON_CONTENT_TYPE,
        json.dumps({"key_id": key.key_id, "name": key.name, **report}),
        headers=rate_limit_headers,
    )


# The web console: static files shipped with this function (functions/transcribe/console/), read at cold start.
# No key is needed to load them; the page calls the API with the key its user pastes.
_CONSOLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "console")
_CONSOLE_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# Its own script and style only; it talks to this API and to the audio bucket's presigned upload URL (large files),
# and to nothing else: a script injected into the page could otherwise send the pasted key to any host.
_CONSOLE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
    "connect-src 'self' {upload_origins}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@cache
def _console_headers() -> dict[str, str]:
    """The console's headers. Its connect-src names where POST /v1/uploads sends the browser: the origin of a
    presigned POST made as that route makes one (signed here, never used), so it is the bucket's endpoint when
    deployed and the local stack's S3 on this machine, with no other host or port allowed."""
    import urllib.parse

    upload = urllib.parse.urlsplit(wiring.audio_store.presigned_upload("key_console", "upl_console")["url"])
    origins = [f"{upload.scheme}://{upload.netloc}"]
    if upload.hostname and upload.hostname.endswith(".s3.amazonaws.com"):
        # the global name, which S3 answers with a redirect to the bucket's regional endpoint while a new bucket's
        # DNS settles: the browser follows it, so that host is allowed too
        regional = upload.hostname.removesuffix(".amazonaws.com") + f".{wiring.s3.meta.region_name}.amazonaws.com"
        origins.append(f"https://{regional}")
    return {
        "Content-Security-Policy": _CONSOLE_POLICY.format(upload_origins=" ".join(origins)),
        "X-Frame-Options": "DENY",  # as frame-ancestors 'none', for browsers that predate it
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def _load_console() -> dict[str, tuple[str, str]]:
    files: dict[str, tuple[str, str]] = {}
    for name in sorted(os.listdir(_CONSOLE_DIR)) if os.path.isdir(_CONSOLE_DIR) else []:
        content_type = _CONSOLE_TYPES.get(os.path.splitext(name)[1])
        if content_type:
            with open(os.path.join(_CONSOLE_DIR, name), encoding="utf-8") as file:
                files[name] = (content_type, file.read())
    return files


_console_files = _load_console()


def _console_file(name: str) -> Response:
    found = _console_files.get(name)
    if found is None:
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise NotFound(f"Unknown request URL: GET /console/{shown}.", code="unknown_url")
    content_type, body = found
    return Response(200, content_type, body, headers=_console_headers())


@app.get("/console")
def console_page() -> Response:
    return _console_file("index.html")


@app.get("/console/<asset>")
def console_asset(asset: str) -> Response:
    return _console_file(asset)


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
    return error_response(
        NotFound(f"Unknown request URL: {app.current_event.http_method} {app.current_event.path}.", code="unknown_url")
    )


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    response = app.resolve(event, context)
    request_id = event.get("requestContext", {}).get("requestId", context.aws_request_id)
    response.setdefault("multiValueHeaders", {})["x-request-id"] = [request_id]
    return response
