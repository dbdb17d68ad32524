"""Uploads and jobs: POST /v1/uploads (a presigned POST for large files), POST .../jobs, GET /v1/jobs..."""

from __future__ import annotations

import json
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.event_handler import Response

from infery.domain.errors import InvalidRequest
from infery.http.routes.dependencies import json_response, new_router

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.router import APIGatewayRouter

    from infery.domain.keys import ApiKeyItem
    from infery.domain.transcription import ResponseFormat, TranscriptionRequest, UploadRequest
    from infery.http.routes.dependencies import Dependencies


def router(deps: Dependencies) -> APIGatewayRouter:
    router = new_router()

    @router.post("/v1/uploads")
    def create_upload() -> Response[str]:
        """A presigned POST into the key's own prefix; unless start_job is false, the file starts a job on arrival."""
        from infery.http.idempotency import idempotency_key, route_fingerprint
        from infery.http.request_parsing import parse_upload_request

        key, rate_limit_headers = deps.authenticate()
        upload = parse_upload_request(
            deps.event.headers.get("content-type"),
            deps.body(),
            deps.wiring.catalog.default_model,
            allow_http_webhooks=deps.settings.webhook_allow_http,
            allow_private_webhooks=deps.settings.webhook_allow_private_addresses,
        )
        deps.wiring.job_service.admit(key, upload.job.model)
        answer, replay_headers = deps.once(
            key,
            idempotency_key(deps.event.headers),
            lambda: route_fingerprint(deps.event.path, upload.model_dump_json()),
            partial(_new_upload, deps, key, upload),
        )
        return json_response(answer["status"], answer["body"], {**rate_limit_headers, **replay_headers})

    @router.post("/v1/audio/transcriptions/jobs")
    def create_transcription_job() -> Response[str]:
        return _create_job(deps, "transcribe")

    @router.post("/v1/audio/translations/jobs")
    def create_translation_job() -> Response[str]:
        return _create_job(deps, "translate")

    @router.get("/v1/jobs/<job_id>")
    def get_job(job_id: str) -> Response[str]:
        key, rate_limit_headers = deps.authenticate()
        job = deps.wiring.job_service.own_job(key, job_id)
        return json_response(200, deps.wiring.job_presenter.view(job, _response_format_query(deps)), rate_limit_headers)

    @router.get("/v1/jobs/<job_id>/result")
    def get_job_result(job_id: str) -> Response[str]:
        """The transcript alone, as the sync call would have answered it (text/plain for text, srt and vtt)."""
        key, rate_limit_headers = deps.authenticate()
        job = deps.wiring.job_service.own_job(key, job_id)
        response_format = _response_format_query(deps)
        rendered = deps.wiring.job_presenter.render_result(job, response_format)
        body = rendered.body
        large = deps.wiring.job_presenter.large_result(job, rendered, response_format or job.options.response_format)
        if large is not None:
            # larger than a function may answer: a link to the transcript, which HTTP clients follow
            return json_response(
                303,
                {
                    "url": large.url,
                    "bytes": large.size,
                    "expires_in": large.expires_in,
                    "message": "The transcript is larger than an API answer may be: download it from url.",
                },
                {**rate_limit_headers, "Location": large.url, "x-infery-credits-used": str(job.credits_used or 0)},
            )
        return Response(
            200,
            rendered.content_type,
            body if isinstance(body, str) else json.dumps(body),
            headers={
                **rate_limit_headers,
                "x-infery-credits-used": str(job.credits_used or 0),
                # the key's balance as read (consistently) when it was authenticated, moments ago; a sharded key was
                # read from one shard, and its balance is every shard's
                "x-infery-credits-balance": str(
                    deps.wiring.credits.balance(key.key_hash) if key.credit_shards > 1 else key.credits
                ),
            },
        )

    @router.get("/v1/jobs")
    def list_jobs() -> Response[str]:
        """The calling key's most recent jobs, newest first, without their transcripts (GET /v1/jobs/{id}/result)."""
        key, rate_limit_headers = deps.authenticate()
        value = deps.query().get("limit", "20")
        limit = int(value) if value.isdigit() and len(value) <= 3 else 0
        if not 1 <= limit <= 100:
            raise InvalidRequest("'limit' must be a whole number from 1 to 100.", param="limit", code="invalid_value")
        found, has_more = deps.wiring.job_service.list_jobs(key, limit)
        # a listing reads no transcript from S3: each job's view without its result
        data = [deps.wiring.job_presenter.view(job.model_copy(update={"result_key": None})) for job in found]
        return json_response(200, {"object": "list", "data": data, "has_more": has_more}, rate_limit_headers)

    return router


def _new_upload(deps: Dependencies, key: ApiKeyItem, upload: UploadRequest) -> dict[str, Any]:
    created = deps.wiring.job_service.create_upload(key, upload)
    body = {
        "id": created.upload_id,
        "object": "upload",
        "method": "POST",
        "upload_url": created.presigned_post["url"],
        "fields": created.presigned_post["fields"],
        "max_bytes": deps.settings.max_job_bytes,  # what the presigned POST takes: a job's file
        "expires_in": deps.settings.upload_expiry_seconds,
    }
    if created.job is not None:
        body |= {"job_id": created.job.job_id, "webhook_secret": created.job.webhook_secret}
    return {"status": 201, "body": body}


def _create_job(deps: Dependencies, task_name: Literal["transcribe", "translate"]) -> Response[str]:
    from infery.domain.inference import Task
    from infery.http.idempotency import idempotency_key, request_fingerprint, route_fingerprint

    task = Task(task_name)
    key, rate_limit_headers = deps.authenticate()
    request = deps.transcription_request(task, for_job=True)
    # the file, if it is here: a header that says 1 Hz or ten hours is refused before it is stored
    deps.wiring.job_service.admit(key, request.model, request.audio)
    answer, replay_headers = deps.once(
        key,
        idempotency_key(deps.event.headers),
        lambda: route_fingerprint(deps.event.path, request_fingerprint(request)),
        partial(_new_job, deps, key, request),
    )
    return json_response(answer["status"], answer["body"], {**rate_limit_headers, **replay_headers})


def _new_job(deps: Dependencies, key: ApiKeyItem, request: TranscriptionRequest) -> dict[str, Any]:
    job = deps.wiring.job_service.create_job(key, request)
    return {"status": 202, "body": {**deps.wiring.job_presenter.view(job), "webhook_secret": job.webhook_secret}}


def _response_format_query(deps: Dependencies) -> ResponseFormat | None:
    value = deps.query().get("response_format")
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
