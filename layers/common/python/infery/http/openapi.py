"""The API's contract as an OpenAPI 3.1 document, built from the handler's route table and the models it answers with.

powertools' resolver can write a document itself, but only for routes whose parameters and return values are
typed with pydantic models; infery's routes read the raw event (multipart, base64 JSON) and return a Response.
So the schemas are written here, as pydantic models, and reuse the code's own models and limits wherever they
exist (a job's fields, a segment, usage totals, the field limits of a request): a change to those changes the
document. ``openapi_document(routes)`` fails for a route that is neither described here nor excluded, so a new
route cannot ship without its contract (tests/unit/test_openapi.py compares the committed openapi.json with what
this module generates; `make openapi` regenerates it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import models_json_schema

from infery.adapters.job_store import JOB_PRIVATE_FIELDS, Job
from infery.domain.inference import Segment, Word
from infery.domain.transcription import (
    FILENAME_MAX_CHARACTERS,
    MODEL_MAX_CHARACTERS,
    PROMPT_MAX_CHARACTERS,
    WEBHOOK_URL_MAX_CHARACTERS,
    ResponseFormat,
)
from infery.usecases.usage import RequestUsage, UsageTotals

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
SCHEMAS = "#/components/schemas/{model}"
# What a route is that the API contract leaves out: the web console's page and its files (not JSON, no key).
EXCLUDED_ROUTES = frozenset({("GET", "/console"), ("GET", "/console/{asset}")})


# --- responses -------------------------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, description="What went wrong, for a person to read")
    type: Literal["invalid_request_error", "insufficient_quota", "rate_limit_error", "server_error"]
    param: str | None = Field(description="The request field the error is about, if one is")
    code: str | None = Field(description="A stable, machine-readable reason, such as invalid_value")


class Error(BaseModel):
    """OpenAI's error shape; every error answer has it, with an x-request-id header."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


class Transcription(BaseModel):
    """response_format json (the default)."""

    model_config = ConfigDict(extra="forbid")

    text: str
    credits_used: int = Field(ge=0)


class VerboseTranscription(BaseModel):
    """response_format verbose_json: ``words`` only when word timestamps were asked for."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["transcribe", "translate"]
    language: str
    duration: float = Field(ge=0)
    text: str
    segments: list[Segment]
    words: list[Word] | None = None
    credits_used: int = Field(ge=0)


# A job as GET /v1/jobs/{id} shows it (Job.public_view()), so a field added to a job shows up here.
JobView = create_model(
    "JobView",
    __config__=ConfigDict(extra="forbid"),
    __doc__="A transcription job; ``result`` once it has succeeded (in the job's format, or the one asked for).",
    id=(str, Field(pattern=r"^job_[0-9a-f]{32}$")),
    object=(Literal["transcription.job"], ...),
    **{name: (info.annotation, info) for name, info in Job.model_fields.items() if name not in JOB_PRIVATE_FIELDS},
    result=(Transcription | VerboseTranscription | str | None, None),
)


class CreatedJob(JobView):  # type: ignore[misc, valid-type]
    """The job a POST .../jobs queued, with the secret its webhooks are signed with (shown this once)."""

    webhook_secret: str


class JobList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["list"]
    data: list[JobView]  # type: ignore[valid-type]
    has_more: bool


class Upload(BaseModel):
    """Where to POST the file (a presigned S3 form: every entry of ``fields``, then the file last, as "file")."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^upl_[0-9a-f]{32}$")
    object: Literal["upload"]
    method: Literal["POST"]
    upload_url: str
    fields: dict[str, str]
    max_bytes: int = Field(gt=0)
    expires_in: int = Field(gt=0)
    job_id: str | None = Field(
        default=None,
        pattern=r"^job_[0-9a-f]{32}$",
        description="The job the file starts when it lands (unless start_job was false)",
    )
    webhook_secret: str | None = None


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["list"]
    data: list[Model]


class UsagePeriod(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str
    end: str


class DayUsage(UsageTotals):
    date: str


class ModelUsage(UsageTotals):
    model: str


class DayModelUsage(UsageTotals):
    date: str
    model: str


class Usage(BaseModel):
    """The calling key's balance, its totals for the period, per day and per model, and its recent requests."""

    model_config = ConfigDict(extra="forbid")

    key_id: str
    name: str
    object: Literal["usage"]
    balance: int
    period: UsagePeriod
    credits_added: int
    total: UsageTotals
    by_day: list[DayUsage]
    by_model: list[ModelUsage]
    by_day_and_model: list[DayModelUsage]
    recent_requests: list[RequestUsage]


# --- requests --------------------------------------------------------------------------------------------------------

# no control characters, nor bidirectional embeddings, overrides and isolates (they make a name display as another)
_FILENAME_CHARACTERS = r"^[^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*$"
_UPLOAD_ID = Field(
    default=None,
    pattern=r"^upl_[0-9a-f]{32}$",
    description="An upload made with POST /v1/uploads (start_job false), instead of the file",
)
_MODEL = Field(
    min_length=1,
    max_length=MODEL_MAX_CHARACTERS,
    description="whisper-1, or the deployed model's own name (GET /v1/models)",
)
_LANGUAGE = Field(default=None, min_length=1, max_length=16, description="ISO-639-1, such as en or de")
_PROMPT = Field(default=None, max_length=PROMPT_MAX_CHARACTERS, description="Text that guides spelling and style")
_TEMPERATURE = Field(default=None, description="From 0 to 1; a JSON number, or the same number as text")
_WEBHOOK_URL = Field(
    default=None,
    max_length=WEBHOOK_URL_MAX_CHARACTERS,
    pattern=r"^https?://",
    description="Where the job's outcome is POSTed, signed (https on port 443 on AWS)",
)
_FILENAME = Field(default=None, max_length=FILENAME_MAX_CHARACTERS, pattern=_FILENAME_CHARACTERS)
Temperature = float | str  # a number from 0 to 1 (Field bounds below), or the same as text, as forms send it
Granularity = Literal["word", "segment"]


def _temperature_schema(schema: dict[str, Any]) -> None:
    schema.pop("anyOf", None)
    schema["anyOf"] = [
        {"type": "number", "minimum": 0, "maximum": 1},
        {"type": "string", "description": "the same number, as text"},
        {"type": "null"},
    ]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TranscriptionJson(_Strict):
    """The JSON variant: the audio base64-encoded in ``audio`` (or ``file_base64`` with a ``filename``), or an
    ``upload_id``. The audio is MP3, MP4, M4A, WAV, WebM, OGG or FLAC, told from its bytes; at most 4 MiB."""

    model: str = _MODEL
    audio: str | None = Field(default=None, description="The audio file, base64-encoded (a data: URL works too)")
    file_base64: str | None = Field(default=None, description="The same as audio, under OpenAI-compatible name")
    filename: str | None = _FILENAME
    upload_id: str | None = _UPLOAD_ID
    language: str | None = _LANGUAGE
    prompt: str | None = _PROMPT
    response_format: ResponseFormat = ResponseFormat.JSON
    temperature: Temperature | None = Field(
        default=None, json_schema_extra=_temperature_schema, description=_TEMPERATURE.description
    )
    timestamp_granularities: list[Granularity] | None = Field(
        default=None, description="word adds words to verbose_json (only with verbose_json)"
    )


class TranslationJson(_Strict):
    """As a transcription, into English: no language, no timestamp granularities."""

    model: str = _MODEL
    audio: str | None = TranscriptionJson.model_fields["audio"]
    file_base64: str | None = TranscriptionJson.model_fields["file_base64"]
    filename: str | None = _FILENAME
    upload_id: str | None = _UPLOAD_ID
    prompt: str | None = _PROMPT
    response_format: ResponseFormat = ResponseFormat.JSON
    temperature: Temperature | None = TranscriptionJson.model_fields["temperature"]


class TranscriptionJobJson(TranscriptionJson):
    webhook_url: str | None = _WEBHOOK_URL


class TranslationJobJson(TranslationJson):
    webhook_url: str | None = _WEBHOOK_URL


def _binary(schema: dict[str, Any]) -> None:
    schema.clear()
    schema.update({"type": "string", "format": "binary"})


# A form's fields are text or absent, never null: optional ones default to None without being nullable.
_FORM_UPLOAD_ID = Field(default=None, pattern=r"^upl_[0-9a-f]{32}$", description=_UPLOAD_ID.description)
_FORM_LANGUAGE = Field(default=None, min_length=1, max_length=16, description=_LANGUAGE.description)
_FORM_PROMPT = Field(default=None, max_length=PROMPT_MAX_CHARACTERS, description=_PROMPT.description)
_FORM_TEMPERATURE = Field(default=None, ge=0, le=1, description="From 0 to 1")
_FORM_WEBHOOK_URL = Field(
    default=None, max_length=WEBHOOK_URL_MAX_CHARACTERS, pattern=r"^https?://", description=_WEBHOOK_URL.description
)


class TranscriptionForm(_Strict):
    """multipart/form-data, as the openai SDK sends it; the form must end with its closing boundary."""

    file: bytes = Field(
        default=None,
        json_schema_extra=_binary,
        description="The audio file (MP3, MP4, M4A, WAV, WebM, OGG or FLAC), at most 4 MiB",
    )
    model: str = _MODEL
    upload_id: str = _FORM_UPLOAD_ID
    language: str = _FORM_LANGUAGE
    prompt: str = _FORM_PROMPT
    response_format: ResponseFormat = ResponseFormat.JSON
    temperature: float = _FORM_TEMPERATURE
    timestamp_granularities__: list[Granularity] = Field(
        default=None, alias="timestamp_granularities[]", description="word adds words to verbose_json"
    )


class TranslationForm(_Strict):
    file: bytes = TranscriptionForm.model_fields["file"]
    model: str = _MODEL
    upload_id: str = _FORM_UPLOAD_ID
    prompt: str = _FORM_PROMPT
    response_format: ResponseFormat = ResponseFormat.JSON
    temperature: float = _FORM_TEMPERATURE


class TranscriptionJobForm(TranscriptionForm):
    webhook_url: str = _FORM_WEBHOOK_URL


class TranslationJobForm(TranslationForm):
    webhook_url: str = _FORM_WEBHOOK_URL


class UploadRequest(_Strict):
    """POST /v1/uploads (every field optional; no body at all is an upload that starts a json job)."""

    model: str | None = Field(default=None, min_length=1, max_length=MODEL_MAX_CHARACTERS)
    language: str | None = _LANGUAGE
    prompt: str | None = _PROMPT
    response_format: ResponseFormat = ResponseFormat.JSON
    temperature: Temperature | None = TranscriptionJson.model_fields["temperature"]
    timestamp_granularities: list[Granularity] | None = None
    webhook_url: str | None = _WEBHOOK_URL
    filename: str | None = _FILENAME
    start_job: bool = Field(default=True, description="false: the upload is for a later sync call by upload_id")


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
            ]
        }
    },
    "text/plain": {"schema": {"type": "string"}, "example": "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"},
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
        {200: _TRANSCRIPT},
        _SYNC_ERRORS,
        "OpenAI's POST /v1/audio/transcriptions: the openai SDK works unchanged.",
        {"multipart/form-data": "TranscriptionForm", "application/json": "TranscriptionJson"},
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
        "Create an upload (a presigned POST for files up to 25 MB)",
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

_MODELS: tuple[type[BaseModel], ...] = (
    Error,
    Transcription,
    VerboseTranscription,
    JobView,
    CreatedJob,
    JobList,
    Upload,
    ModelList,
    Usage,
    TranscriptionJson,
    TranslationJson,
    TranscriptionJobJson,
    TranslationJobJson,
    TranscriptionForm,
    TranslationForm,
    TranscriptionJobForm,
    TranslationJobForm,
    UploadRequest,
)


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
            f"routes without a contract: {missing}; describe them in infery/openapi.py "
            "(OPERATIONS), then run `make openapi`"
        )
    stale = sorted(set(OPERATIONS) - set(routes))
    if stale:
        raise RouteNotDescribed(f"described but not routed: {stale}; remove them from infery/openapi.py")
    _, definitions = models_json_schema([(model, "serialization") for model in _MODELS], ref_template=SCHEMAS)
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
