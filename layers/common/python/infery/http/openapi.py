"""The API's contract as an OpenAPI 3.1 document, built from the handler's route table and the models it answers with.

powertools' resolver can write a document itself, but only for routes whose parameters and return values are
typed with pydantic models; infery's routes read the raw event (multipart, base64 JSON) and return a Response.
So the schemas are written as pydantic models (infery.http.openapi_schemas), and the operations here.
``openapi_document(routes)`` fails for a route that is neither described here nor excluded, so a new
route cannot ship without its contract (tests/unit/test_openapi.py compares the committed openapi.json with what
this module generates; `make openapi` regenerates it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic.json_schema import models_json_schema

from infery.http.openapi_schemas import MODELS

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
SCHEMAS = "#/components/schemas/{model}"
# What a route is that the API contract leaves out: the web console's page and its files (not JSON, no key).
EXCLUDED_ROUTES = frozenset({("GET", "/console"), ("GET", "/console/{asset}")})


# --- operations ------------------------------------------------------------------------------------------------------

_STATUS_TEXT = {
    400: "A bad field or one over its limit, missing or undecodable audio, a malformed or cut-off body",
    401: "No key, or a malformed, unknown, revoked or expired key",
    402: "The key's credits do not cover the request",
    403: "The key may not use this model",
    404: "No such upload, job or model",
    409: "A request with the same Idempotency-Key is still running, or the job has no result yet",
    413: "Audio (or a request) over the synchronous limit: use POST /v1/uploads",
    415: "Bytes that are not one of the seven audio formats, or a body neither multipart nor JSON",
    429: "Over the key's requests per minute (Retry-After says when to retry)",
    500: "Our fault; nothing was charged",
    502: "The model failed; the reservation was refunded",
    503: "The model is unavailable; the reservation was refunded",
    504: "The model (or the gateway) timed out; the reservation was refunded",
}
_REQUEST_ID = {
    "x-request-id": {
        "description": "The request's id (quote it to the operator)",
        "required": True,
        "schema": {"type": "string"},
    }
}
_CREDITS = {
    "x-infery-credits-used": {
        "description": "Credits this request cost",
        "required": True,
        "schema": {"type": "string", "pattern": r"^\d+$"},
    },
    "x-infery-credits-balance": {
        "description": "The key's balance after it",
        "required": True,
        "schema": {"type": "string", "pattern": r"^-?\d+$"},
    },
}
_TRANSCRIPT = {
    "application/json": {
        "schema": {
            "anyOf": [
                {"$ref": SCHEMAS.format(model="Transcription")},
                {"$ref": SCHEMAS.format(model="VerboseTranscription")},
                {"$ref": SCHEMAS.format(model="DiarizedTranscription")},
            ]
        }
    },
    "text/plain": {"schema": {"type": "string"}, "example": "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"},
}
# stream=true: OpenAI's events, as one body (see README on when they leave)
_EVENT_STREAM = {
    "text/event-stream": {
        "schema": {"type": "string"},
        "example": 'data: {"type": "transcript.text.delta", "delta": "Hello there."}\n\n'
        'data: {"type": "transcript.text.done", "text": "Hello there.", "usage": {"type": "duration", '
        '"seconds": 2.5}, "credits_used": 1}\n\n',
    }
}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retry with the same key (per API key) gets the first answer and is charged once",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[\x20-\x7e]+$"},
}
_RESPONSE_FORMAT_QUERY = {
    "name": "response_format",
    "in": "query",
    "required": False,
    "schema": {"$ref": SCHEMAS.format(model="ResponseFormat")},
}
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}


@dataclass(frozen=True)
class Operation:
    summary: str
    responses: dict[int, dict[str, Any]]  # status -> its content (the success), or {} for the error shape
    errors: tuple[int, ...]
    description: str = ""
    request: dict[str, str] = field(default_factory=dict)  # media type -> schema name
    parameters: tuple[dict[str, Any], ...] = ()
    success_headers: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ("audio",)


def _json(model: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": SCHEMAS.format(model=model)}}}


_SYNC_ERRORS = (400, 401, 402, 403, 404, 409, 413, 415, 429, 500, 502, 503, 504)
_JOB_ERRORS = (400, 401, 402, 403, 404, 409, 413, 415, 429, 500)
_READ_ERRORS = (400, 401, 404, 429, 500)

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/v1/audio/transcriptions"): Operation(
        "Transcribe audio",
        {200: {**_TRANSCRIPT, **_EVENT_STREAM}},
        _SYNC_ERRORS,
        "OpenAI's POST /v1/audio/transcriptions: the openai SDK works unchanged.",
        {"multipart/form-data": "TranscriptionSyncForm", "application/json": "TranscriptionSyncJson"},
        (_IDEMPOTENCY_KEY,),
        _CREDITS,
    ),
    ("POST", "/v1/audio/translations"): Operation(
        "Translate audio into English",
        {200: _TRANSCRIPT},
        _SYNC_ERRORS,
        "",
        {"multipart/form-data": "TranslationForm", "application/json": "TranslationJson"},
        (_IDEMPOTENCY_KEY,),
        _CREDITS,
    ),
    ("POST", "/v1/audio/transcriptions/jobs"): Operation(
        "Queue a transcription job",
        {202: _json("CreatedJob")},
        _JOB_ERRORS,
        "The synchronous call's fields, a file of at most 4 MiB or an upload_id, and a webhook_url.",
        {"multipart/form-data": "TranscriptionJobForm", "application/json": "TranscriptionJobJson"},
        (_IDEMPOTENCY_KEY,),
        tags=("jobs",),
    ),
    ("POST", "/v1/audio/translations/jobs"): Operation(
        "Queue a translation job",
        {202: _json("CreatedJob")},
        _JOB_ERRORS,
        "",
        {"multipart/form-data": "TranslationJobForm", "application/json": "TranslationJobJson"},
        (_IDEMPOTENCY_KEY,),
        tags=("jobs",),
    ),
    ("POST", "/v1/uploads"): Operation(
        "Create an upload (a presigned POST for files up to 1 GB; a synchronous call reads up to 25 MB)",
        {201: _json("Upload")},
        (400, 401, 402, 409, 415, 429, 500),
        "Unless start_job is false, the file starts a job when it lands.",
        {"application/json": "UploadRequest"},
        (_IDEMPOTENCY_KEY,),
        tags=("jobs",),
    ),
    ("GET", "/v1/jobs"): Operation(
        "List the key's jobs, newest first",
        {200: _json("JobList")},
        (400, 401, 429, 500),
        "",
        parameters=(
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
            },
        ),
        tags=("jobs",),
    ),
    ("GET", "/v1/jobs/{job_id}"): Operation(
        "Retrieve a job",
        {200: _json("JobView")},
        _READ_ERRORS,
        "Another key's job is a 404.",
        parameters=(_JOB_ID, _RESPONSE_FORMAT_QUERY),
        tags=("jobs",),
    ),
    ("GET", "/v1/jobs/{job_id}/result"): Operation(
        "A job's transcript, as the synchronous call answers it",
        {200: _TRANSCRIPT},
        (*_READ_ERRORS, 409),
        "",
        parameters=(_JOB_ID, _RESPONSE_FORMAT_QUERY),
        success_headers=_CREDITS,
        tags=("jobs",),
    ),
    ("GET", "/v1/models"): Operation("List models", {200: _json("ModelList")}, (401, 429, 500), tags=("models",)),
    ("GET", "/v1/models/{model_id}"): Operation(
        "Retrieve a model",
        {200: _json("Model")},
        (401, 404, 429, 500),
        parameters=({"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}},),
        tags=("models",),
    ),
    ("GET", "/v1/usage"): Operation(
        "The key's usage and balance",
        {200: {**_json("Usage"), "text/csv": {"schema": {"type": "string"}}}},
        (400, 401, 429, 500),
        "format=csv: the period's ledger entries, as `infery usage --csv` writes them.",
        parameters=(
            {
                "name": "days",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 366, "default": 30},
            },
            {
                "name": "format",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": ["json", "csv"], "default": "json"},
            },
        ),
        tags=("usage",),
    ),
}


class RouteNotDescribed(Exception):
    pass


def _operation(method: str, path: str, operation: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, content in operation.responses.items():
        responses[str(status)] = {
            "description": "Success",
            "headers": {**_REQUEST_ID, **operation.success_headers},
            "content": content,
        }
    for status in operation.errors:
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    body: dict[str, Any] = {}
    if operation.request:
        content = {
            media_type: {"schema": {"$ref": SCHEMAS.format(model=name)}}
            for media_type, name in operation.request.items()
        }
        if "multipart/form-data" in content:
            content["multipart/form-data"]["encoding"] = {"file": {"contentType": "application/octet-stream"}}
        body = {"requestBody": {"required": path != "/v1/uploads", "content": content}}
    words = path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
    return {
        "tags": list(operation.tags),
        "summary": operation.summary,
        **({"description": operation.description} if operation.description else {}),
        "operationId": f"{method.lower()}_{words}",
        **({"parameters": list(operation.parameters)} if operation.parameters else {}),
        **body,
        "responses": responses,
    }


def _error_response(status: int) -> dict[str, Any]:
    headers = dict(_REQUEST_ID)
    if status == 429:
        headers["Retry-After"] = {"description": "Seconds to wait", "schema": {"type": "string"}}
    return {"description": _STATUS_TEXT[status], "headers": headers, "content": _json("Error")}


def openapi_document(routes: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The document for these (method, OpenAPI path) routes: each must be described above, or excluded."""
    routes = sorted(set(routes) - EXCLUDED_ROUTES, key=lambda route: (route[1], route[0]))
    missing = [route for route in routes if route not in OPERATIONS]
    if missing:
        raise RouteNotDescribed(
            f"routes without a contract: {missing}; describe them in infery/http/openapi.py "
            "(OPERATIONS), then run `make openapi`"
        )
    stale = sorted(set(OPERATIONS) - set(routes))
    if stale:
        raise RouteNotDescribed(f"described but not routed: {stale}; remove them from infery/http/openapi.py")
    _, definitions = models_json_schema([(model, "serialization") for model in MODELS], ref_template=SCHEMAS)
    paths: dict[str, dict[str, Any]] = {}
    for method, path in routes:
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, OPERATIONS[(method, path)])
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "infery",
            "version": API_VERSION,
            "description": "A self-hostable, OpenAI-compatible speech-to-text API. Every request needs an "
            "inf_ key as a bearer token; errors have OpenAI's shape.",
        },
        "servers": [{"url": "/", "description": "the API's base URL, without /v1"}],
        "security": [{"bearerAuth": []}],
        "tags": [{"name": name} for name in ("audio", "jobs", "models", "usage")],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "description": "An inf_ key"}},
            "responses": {f"Error{status}": _error_response(status) for status in sorted(_STATUS_TEXT)},
            "schemas": dict(sorted(definitions["$defs"].items())),
        },
    }


def routes_of(resolver: Any) -> list[tuple[str, str]]:
    """(method, OpenAPI path) of every route a powertools resolver holds (its own route lists)."""
    return [
        (route.method.upper(), route.openapi_path) for route in [*resolver._static_routes, *resolver._dynamic_routes]
    ]


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
