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


class ResponseFormat(StrEnum):
    JSON = "json"
    TEXT = "text"
    SRT = "srt"
    VERBOSE_JSON = "verbose_json"
    VTT = "vtt"


TimestampGranularity = Literal["word", "segment"]


class TranscriptionRequest(BaseModel):
    """What the client asked for, with the audio already decoded and its container recognised."""

    task: Task
    audio: bytes = Field(repr=False)
    audio_format: AudioFormat
    filename: str | None = None
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


_COMMON_FIELDS = frozenset({"model", "prompt", "response_format", "temperature"})
_TRANSCRIPTION_ONLY_FIELDS = frozenset({"language", "timestamp_granularities"})
_AUDIO_FIELDS = {"multipart": frozenset({"file"}), "json": frozenset({"audio", "file_base64", "filename"})}
# the other fields and multipart boundaries around the audio
_ENVELOPE_ALLOWANCE = 64 * 1024
_DATA_URL_PREFIX = re.compile(r"^data:[\w.+/-]*;base64,")


def allowed_fields(task: Task, body_kind: str) -> frozenset[str]:
    fields = _COMMON_FIELDS | _AUDIO_FIELDS[body_kind]
    return fields | _TRANSCRIPTION_ONLY_FIELDS if task is Task.TRANSCRIBE else fields


def _reject_unknown(fields: dict[str, Any], task: Task, body_kind: str) -> None:
    unknown = sorted(set(fields) - allowed_fields(task, body_kind))
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
                                max_upload_bytes: int) -> TranscriptionRequest:
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

    _reject_unknown(fields, task, body_kind)
    if audio is None:
        param = "file" if body_kind == "multipart" else "audio"
        raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_audio")
    _check_size(len(audio), max_audio_bytes, max_upload_bytes)
    audio_format = sniff_audio_format(audio)
    if "model" not in fields:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model", code="missing_model")

    values = {key: value for key, value in fields.items() if key not in _AUDIO_FIELDS[body_kind]}
    try:
        return TranscriptionRequest(task=task, audio=audio, audio_format=audio_format, filename=filename, **values)
    except ValidationError as exc:
        raise _as_invalid_request(exc) from exc


def _as_invalid_request(exc: ValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    param = str(first["loc"][0]) if first["loc"] else None
    message = first["msg"].removeprefix("Value error, ")
    if param:
        message = f"Invalid value for '{param}': {message}"
    return InvalidRequest(message, param=param, code="invalid_value")
