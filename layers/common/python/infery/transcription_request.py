"""Parse a transcription/translation request, multipart or JSON base64, into one validated model."""

from __future__ import annotations

import base64
import binascii
import json
import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator
from requests_toolbelt.multipart.decoder import (
    ImproperBodyPartContentException,
    MultipartDecoder,
    NonMultipartContentTypeException,
)

from .audio import AudioFormat, sniff_audio_format
from .errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from .inference import Task
from .languages import WHISPER_LANGUAGE_CODES

UPLOAD_FLOW_HINT = "POST /v1/uploads"
UPLOAD_ID_PATTERN = re.compile(r"upl_[0-9a-f]{32}")


class ResponseFormat(StrEnum):
    JSON = "json"
    TEXT = "text"
    SRT = "srt"
    VERBOSE_JSON = "verbose_json"
    VTT = "vtt"


TimestampGranularity = Literal["word", "segment"]


class TranscriptionOptions(BaseModel):
    """How to transcribe: everything a request says except the audio (a job stores just this)."""

    task: Task
    model: str = Field(min_length=1)
    language: str | None = None
    prompt: str | None = None
    response_format: ResponseFormat = ResponseFormat.JSON
    temperature: float | None = Field(default=None, ge=0, le=1)
    timestamp_granularities: list[TimestampGranularity] = Field(default_factory=lambda: ["segment"])

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = value.strip().lower()
        if code not in WHISPER_LANGUAGE_CODES:
            raise ValueError(f"'{value}' is not a supported ISO-639-1 language code (for example 'en', 'de', 'ja')")
        return code

    @property
    def word_timestamps(self) -> bool:
        return self.response_format is ResponseFormat.VERBOSE_JSON and "word" in self.timestamp_granularities


class TranscriptionRequest(TranscriptionOptions):
    """What the client asked for, with the audio decoded and its container recognised.

    A request that names an upload (``upload_id``) has no audio until the handler loads it from S3
    (``with_stored_audio``); its ``audio_s3_uri`` then lets the model read the object itself, so
    files past the 6 MB invocation limit reach it.
    """

    audio: bytes = Field(default=b"", repr=False)
    audio_format: AudioFormat | None = None
    filename: str | None = None
    upload_id: str | None = None
    audio_s3_uri: str | None = None
    webhook_url: str | None = None

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and (not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value) or len(value) > 2048):
            raise ValueError("must be an http:// or https:// URL of at most 2048 characters")
        return value

    def options(self) -> TranscriptionOptions:
        return TranscriptionOptions.model_validate(self.model_dump(include=set(TranscriptionOptions.model_fields)))

    def with_stored_audio(self, audio: bytes, audio_s3_uri: str) -> TranscriptionRequest:
        return self.model_copy(update={"audio": audio, "audio_format": sniff_audio_format(audio),
                                       "audio_s3_uri": audio_s3_uri})


_COMMON_FIELDS = frozenset({"model", "prompt", "response_format", "temperature"})
_TRANSCRIPTION_ONLY_FIELDS = frozenset({"language", "timestamp_granularities"})
_AUDIO_FIELDS = {"multipart": frozenset({"file", "upload_id"}),
                 "json": frozenset({"audio", "file_base64", "filename", "upload_id"})}
_JOB_FIELDS = frozenset({"webhook_url"})
# the other fields and multipart boundaries around the audio
_ENVELOPE_ALLOWANCE = 64 * 1024
_DATA_URL_PREFIX = re.compile(r"^data:[\w.+/-]*;base64,")


def allowed_fields(task: Task, body_kind: str, for_job: bool = False) -> frozenset[str]:
    fields = _COMMON_FIELDS | _AUDIO_FIELDS[body_kind] | (_JOB_FIELDS if for_job else frozenset())
    return fields | _TRANSCRIPTION_ONLY_FIELDS if task is Task.TRANSCRIBE else fields


def _reject_unknown(fields: dict[str, Any], task: Task, body_kind: str, for_job: bool) -> None:
    unknown = sorted(set(fields) - allowed_fields(task, body_kind, for_job))
    if unknown:
        raise InvalidRequest(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0],
                             code="unknown_parameter")


def _check_size(size: int, max_bytes: int, max_upload_bytes: int, allowance: int = 0) -> None:
    """Refuse audio over ``max_bytes``; ``allowance`` covers the envelope when ``size`` is the whole body."""
    if size > max_bytes + allowance:
        raise PayloadTooLarge(
            f"The audio is {size / 1e6:.1f} MB, larger than the {max_bytes / 1e6:.1f} MB that a synchronous "
            f"request accepts (API Gateway and Lambda payload limits). Upload files up to "
            f"{max_upload_bytes / 1e6:.0f} MB with {UPLOAD_FLOW_HINT} and transcribe them as a job instead.",
            param="file", code="audio_too_large")


def _decode_base64(value: Any, param: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequest(f"'{param}' must be a base64-encoded string.", param=param, code="invalid_base64")
    text = _DATA_URL_PREFIX.sub("", value.strip(), count=1)
    text = "".join(text.split())  # line-wrapped base64 (`base64` without -w0) is common from shells
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"'{param}' is not valid base64: {exc}.", param=param, code="invalid_base64") from exc


def _field_text(name: str, content: bytes) -> str:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"The form field '{name}' is not valid UTF-8 text.", param=name.removesuffix("[]"),
                             code="invalid_value") from exc


def _fields_from_multipart(body: bytes, content_type: str) -> tuple[dict[str, Any], bytes | None, str | None]:
    try:
        decoder = MultipartDecoder(body, content_type)
    except (NonMultipartContentTypeException, ImproperBodyPartContentException, ValueError, IndexError,
            AttributeError) as exc:  # AttributeError: a multipart Content-Type without a boundary
        raise InvalidRequest(f"The multipart body could not be parsed: {exc or 'no boundary'}",
                             code="invalid_multipart") from exc
    fields: dict[str, Any] = {}
    audio: bytes | None = None
    filename: str | None = None
    for part in decoder.parts:
        disposition = part.headers.get(b"Content-Disposition", b"").decode("utf-8", "replace")
        name_match = re.search(r'\bname="([^"]*)"', disposition)
        if not name_match:
            raise InvalidRequest("A multipart part has no name.", code="invalid_multipart")
        name = name_match.group(1)
        if name == "file":
            audio = part.content
            filename_match = re.search(r'\bfilename="([^"]*)"', disposition)
            filename = filename_match.group(1) if filename_match else None
            fields["file"] = True
        elif name in ("timestamp_granularities[]", "timestamp_granularities"):
            fields.setdefault("timestamp_granularities", []).append(_field_text(name, part.content))
        else:
            fields[name] = _field_text(name, part.content)
    return fields, audio, filename


def _fields_from_json(body: bytes) -> tuple[dict[str, Any], bytes | None, str | None]:
    try:
        fields = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: absurd nesting
        raise InvalidRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(fields, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    if "audio" in fields and "file_base64" in fields:
        raise InvalidRequest("Send the audio in either 'audio' or 'file_base64', not both.", param="audio",
                             code="ambiguous_audio")
    audio_param = "audio" if "audio" in fields else "file_base64"
    audio = _decode_base64(fields[audio_param], audio_param) if audio_param in fields else None
    filename = fields.get("filename")
    if filename is not None and not isinstance(filename, str):
        raise InvalidRequest("'filename' must be a string.", param="filename")
    return fields, audio, filename


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def parse_transcription_request(task: Task, content_type: str | None, body: bytes, *, max_audio_bytes: int,
                                max_upload_bytes: int, for_job: bool = False) -> TranscriptionRequest:
    media_type = _media_type(content_type or "")
    if media_type == "multipart/form-data":
        body_kind = "multipart"
        _check_size(len(body), max_audio_bytes, max_upload_bytes, _ENVELOPE_ALLOWANCE)  # before parsing it
        fields, audio, filename = _fields_from_multipart(body, content_type or "")
    elif media_type == "application/json":
        body_kind = "json"
        _check_size(len(body) * 3 // 4, max_audio_bytes, max_upload_bytes, _ENVELOPE_ALLOWANCE)
        fields, audio, filename = _fields_from_json(body)
    else:
        raise UnsupportedMediaType(
            f"Content-Type must be multipart/form-data or application/json, not '{media_type or 'none'}'.",
            code="unsupported_content_type")

    _reject_unknown(fields, task, body_kind, for_job)
    upload_id = fields.get("upload_id")
    audio_param = "file" if body_kind == "multipart" else "audio"
    if upload_id is not None:
        if audio is not None:
            raise InvalidRequest(f"Send either '{audio_param}' or 'upload_id', not both.", param="upload_id",
                                 code="ambiguous_audio")
        if not isinstance(upload_id, str) or not UPLOAD_ID_PATTERN.fullmatch(upload_id):
            raise InvalidRequest("'upload_id' must be an id that POST /v1/uploads returned (upl_...).",
                                 param="upload_id", code="invalid_upload_id")
        audio_format = None
    elif audio is None:
        raise InvalidRequest(f"Missing required parameter: '{audio_param}' (or 'upload_id').", param=audio_param,
                             code="missing_audio")
    else:
        _check_size(len(audio), max_audio_bytes, max_upload_bytes)
        audio_format = sniff_audio_format(audio)
    if "model" not in fields:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model", code="missing_model")

    values = {key: value for key, value in fields.items() if key not in _AUDIO_FIELDS[body_kind]}
    try:
        return TranscriptionRequest(task=task, audio=audio or b"", audio_format=audio_format, filename=filename,
                                    upload_id=upload_id, **values)
    except ValidationError as exc:
        raise _as_invalid_request(exc) from exc


def _as_invalid_request(exc: ValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    param = str(first["loc"][0]) if first["loc"] else None
    message = first["msg"].removeprefix("Value error, ")
    if param:
        message = f"Invalid value for '{param}': {message}"
    return InvalidRequest(message, param=param, code="invalid_value")


_UPLOAD_FIELDS = frozenset({"filename", "start_job", "webhook_url"}) | _COMMON_FIELDS | _TRANSCRIPTION_ONLY_FIELDS


class UploadRequest(BaseModel):
    """POST /v1/uploads: where to upload, and (unless start_job is false) the job to run once the file lands."""

    start_job: bool = True
    filename: str | None = Field(default=None, max_length=255)
    job: TranscriptionRequest


def parse_upload_request(content_type: str | None, body: bytes, default_model: str) -> UploadRequest:
    fields: dict[str, Any] = {}
    if body.strip():
        if _media_type(content_type or "") != "application/json":
            raise UnsupportedMediaType("POST /v1/uploads takes a JSON body (or none).",
                                       code="unsupported_content_type")
        fields, _, _ = _fields_from_json(body)
    unknown = sorted(set(fields) - _UPLOAD_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0],
                             code="unknown_parameter")
    if not isinstance(fields.get("start_job", True), bool):
        raise InvalidRequest("'start_job' must be true or false.", param="start_job", code="invalid_value")
    job_fields = {name: value for name, value in fields.items() if name not in ("start_job", "filename")}
    try:
        job = TranscriptionRequest(task=Task.TRANSCRIBE, **{"model": default_model, **job_fields})
        return UploadRequest(start_job=fields.get("start_job", True), filename=fields.get("filename"), job=job)
    except ValidationError as exc:
        raise _as_invalid_request(exc) from exc
