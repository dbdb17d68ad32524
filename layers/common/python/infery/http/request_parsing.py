"""Parse a transcription/translation request, multipart or JSON base64, into one validated model."""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
import urllib.parse
from typing import Any

from pydantic import ValidationError

from infery.domain.addresses import is_public_address
from infery.domain.audio_url import check_audio_url
from infery.domain.diarization import check_known_speakers
from infery.domain.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from infery.domain.ids import UPLOAD_ID_PATTERN
from infery.domain.inference import Task

# The request's types live in the domain (transcription.py): the job store and the worker use them without this
# parser.
from infery.domain.transcription import (
    FILENAME_MAX_CHARACTERS,
    MODEL_MAX_CHARACTERS,
    PROMPT_MAX_CHARACTERS,
    WEBHOOK_URL_MAX_CHARACTERS,
    JobOptions,
    LoadedAudio,
    ResponseFormat,
    TranscriptionOptions,
    TranscriptionRequest,
    UploadRequest,
    quoted,
)
from infery.http.multipart import read_form

UPLOAD_FLOW_HINT = "POST /v1/uploads"


_COMMON_FIELDS = frozenset({"model", "prompt", "response_format", "temperature"})
_TRANSCRIPTION_ONLY_FIELDS = frozenset({"language", "timestamp_granularities"})
_AUDIO_FIELDS = {
    "multipart": frozenset({"file", "upload_id", "url"}),
    "json": frozenset({"audio", "file_base64", "filename", "upload_id", "url"}),
}
_JOB_FIELDS = frozenset({"webhook_url"})
# a transcription's, sync or job (a job stores the samples in the bucket: usecases/known_speakers.py)
_KNOWN_SPEAKER_FIELDS = frozenset({"known_speaker_names", "known_speaker_references"})
# the other fields and multipart boundaries around the audio
_ENVELOPE_ALLOWANCE = 64 * 1024
_DATA_URL_PREFIX = re.compile(r"^data:[\w.+/-]*;base64,")


# OpenAI's newer fields, which its SDK sends to transcriptions only: a synchronous call's (a job neither streams
# nor stores them)
_SYNC_TRANSCRIPTION_FIELDS = frozenset({"chunking_strategy", "include", "stream"})


def allowed_fields(task: Task, body_kind: str, for_job: bool = False) -> frozenset[str]:
    fields = _COMMON_FIELDS | _AUDIO_FIELDS[body_kind] | (_JOB_FIELDS if for_job else frozenset())
    if task is not Task.TRANSCRIBE:
        return fields
    sync_only = frozenset() if for_job else _SYNC_TRANSCRIPTION_FIELDS
    return fields | _TRANSCRIPTION_ONLY_FIELDS | _KNOWN_SPEAKER_FIELDS | sync_only


def _reject_unknown(fields: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        name = unknown[0] if len(unknown[0]) <= 64 else unknown[0][:61] + "..."
        raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name, code="unknown_parameter")


def _invalid(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid value for '{param}': {message}", param=param, code="invalid_value")


def _check_text(param: str, value: Any, max_characters: int) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise _invalid(param, "must be a string.")
    if len(value) > max_characters:
        raise _invalid(param, f"it is {len(value):,} characters long; at most {max_characters:,} are accepted.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a JSON escape such as \ud800 alone: no UTF-8 text, nothing can store or send it
        raise _invalid(
            param, "must be valid Unicode text; it contains an unpaired surrogate (\\ud800-\\udfff)."
        ) from None


# Unicode's explicit embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): a right-to-left override
# shows "invoice\u202egnp.exe" as "invoiceexe.png" wherever the name is displayed.
_BIDI_CONTROLS = frozenset({"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"})


def _check_filename(value: Any) -> None:
    _check_text("filename", value, FILENAME_MAX_CHARACTERS)
    if value is None:
        return
    if any(unicodedata.category(character) == "Cc" for character in value):
        raise _invalid("filename", "must not contain control characters (NUL, line breaks, escapes).")
    if any(unicodedata.bidirectional(character) in _BIDI_CONTROLS for character in value):
        raise _invalid(
            "filename",
            "must not contain bidirectional control characters (U+202A-U+202E, U+2066-U+2069): they make a name "
            "display differently from what it is.",
        )


def check_webhook_url(value: Any, *, allow_private_addresses: bool, allow_http: bool) -> None:
    """A URL the worker will POST to: https on port 443 to a public host, unless private addresses (on any port)
    or http are allowed (the local stack allows both: its receivers run on loopback over http). The worker checks
    the address it connects to again at delivery (infery.adapters.webhook_sender): a name's DNS answer may change
    after this."""
    if value is None:
        return
    _check_text("webhook_url", value, WEBHOOK_URL_MAX_CHARACTERS)
    schemes = ("https", "http") if allow_http else ("https",)
    expected = "an http:// or https:// URL" if allow_http else "an https:// URL"
    if not allow_private_addresses:
        expected += " on port 80 or 443" if allow_http else " on port 443"
    if not re.fullmatch(r"https?://[^\s/?#]+([/?#]\S*)?", value):
        raise _invalid("webhook_url", f"must be {expected}.")
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError:
        raise _invalid("webhook_url", f"must be {expected}; its port is not a number from 1 to 65535.") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise _invalid("webhook_url", f"must be {expected}.")
    if parts.username is not None or parts.password is not None:
        raise _invalid(
            "webhook_url",
            "must not contain a user name or password: put a secret in the path or "
            "check the Infery-Signature header instead.",
        )
    if allow_private_addresses:
        return
    if port not in (None, 443 if parts.scheme == "https" else 80):
        ports = "443 (https) or 80 (http)" if allow_http else "443"
        raise _invalid("webhook_url", f"must be {expected}; webhooks are sent to port {ports} only.")
    try:
        public = is_public_address(parts.hostname)
    except ValueError:
        return  # a name: its addresses are checked when the notification is sent
    if not public:
        raise _invalid("webhook_url", "points to an internal address; webhooks are sent to public hosts only.")


def _check_limits(
    fields: dict[str, Any], filename: Any, *, allow_private_webhooks: bool, allow_http_webhooks: bool
) -> None:
    """Every free-text field within its limit, before any model is built or anything stored."""
    _check_text("model", fields.get("model"), MODEL_MAX_CHARACTERS)
    _check_text("prompt", fields.get("prompt"), PROMPT_MAX_CHARACTERS)
    language = fields.get("language")
    if isinstance(language, str) and len(language) > 16:  # no language code is this long: say so without echoing it
        raise _invalid("language", "must be an ISO-639-1 language code such as 'en', 'de' or 'ja'.")
    _check_filename(filename)
    check_webhook_url(
        fields.get("webhook_url"), allow_private_addresses=allow_private_webhooks, allow_http=allow_http_webhooks
    )


def _check_word_timestamps(request: TranscriptionOptions) -> None:
    """OpenAI refuses word timestamps in any format but verbose_json; they were silently dropped before."""
    if "word" in request.timestamp_granularities and request.response_format is not ResponseFormat.VERBOSE_JSON:
        raise _invalid(
            "timestamp_granularities", "word timestamps are only returned with response_format=verbose_json."
        )


def _check_newer_fields(request: TranscriptionOptions) -> None:
    """As OpenAI: log probabilities come with response_format=json only, and a stream carries json or text."""
    if request.logprobs and request.response_format is not ResponseFormat.JSON:
        raise _invalid("include", "logprobs are only returned with response_format=json.")
    if request.stream and request.response_format not in (ResponseFormat.JSON, ResponseFormat.TEXT):
        raise _invalid("stream", "streaming is only available with response_format=json or text.")


def _check_size(size: int, max_bytes: int, max_upload_bytes: int, allowance: int = 0) -> None:
    """Refuse audio over ``max_bytes``; ``allowance`` covers the envelope when ``size`` is the whole body."""
    if size > max_bytes + allowance:
        raise PayloadTooLarge(
            f"The audio is {size / 1e6:.1f} MB, larger than the {max_bytes / 1e6:.1f} MB that a synchronous "
            f"request accepts (API Gateway and Lambda payload limits). Upload files up to "
            f"{max_upload_bytes / 1e6:.0f} MB with {UPLOAD_FLOW_HINT} and transcribe them as a job instead.",
            param="file",
            code="audio_too_large",
        )


def event_body(body: str | None, is_base64_encoded: bool | None) -> bytes | str:
    """The request's body as API Gateway hands it over: binary media types (multipart) base64-encoded, decoded
    here; text (JSON) as the text itself, which the JSON parser reads without another copy."""
    if body is None:
        return b""
    if not is_base64_encoded:
        return body
    try:
        # what API Gateway sends is canonical base64: decoded from the text as it is, checked as it goes
        return binascii.a2b_base64(body, strict_mode=True)
    except (binascii.Error, ValueError):
        return base64.b64decode(body)  # anything else: decoded as before, skipping what is not base64


def _decode_base64(value: Any, param: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequest(f"'{param}' must be a base64-encoded string.", param=param, code="invalid_base64")
    try:
        # the common case, base64 as encoders write it (one line, padded): decoded without a copy of the text
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        pass  # a data URL, line breaks, or not base64 at all: the path below accepts or explains it
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
        raise InvalidRequest(
            f"The form field '{name}' is not valid UTF-8 text.", param=name.removesuffix("[]"), code="invalid_value"
        ) from exc


_AUDIO_SOURCES = frozenset({"file", "audio", "file_base64", "upload_id", "url"})
# The list fields: the openai SDK sends a list as one part per item, named with [] (curl users often omit it).
_ARRAY_FIELDS = {
    "timestamp_granularities[]": "timestamp_granularities",
    "timestamp_granularities": "timestamp_granularities",
    "include[]": "include",
    "include": "include",
    "known_speaker_names[]": "known_speaker_names",
    "known_speaker_names": "known_speaker_names",
    "known_speaker_references[]": "known_speaker_references",
    "known_speaker_references": "known_speaker_references",
}
# The SDK sends an object as one part per key, named chunking_strategy[threshold] and so on.
_OBJECT_PART = re.compile(r"^(chunking_strategy)\[([^\[\]]*)\]$")


def _repeated(name: str) -> InvalidRequest:
    """A field sent twice: which value was meant is unknown, so neither is taken (the last would win silently)."""
    shown = name if len(name) <= 64 else name[:61] + "..."
    if name in _AUDIO_SOURCES:
        return InvalidRequest(
            f"The request has more than one '{shown}': send one audio file (or one upload_id) per request.",
            param=name,
            code="ambiguous_audio",
        )
    return InvalidRequest(
        f"The request has more than one '{shown}': send each parameter once.", param=shown, code="duplicate_parameter"
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (json.loads would keep the last of a repeated one)."""
    fields: dict[str, Any] = {}
    for name, value in pairs:
        if name in fields:
            raise _repeated(name)
        fields[name] = value
    return fields


def _fields_from_multipart(body: bytes, content_type: str) -> tuple[dict[str, Any], bytes | None, str | None]:
    fields: dict[str, Any] = {}
    audio: bytes | None = None
    filename: str | None = None
    for name, part in read_form(body, content_type):
        # a name ending in [] is a list, one part per item (an unknown one is then refused as unknown rather than
        # as repeated)
        if name in fields and not name.endswith("[]") and name not in _ARRAY_FIELDS:
            raise _repeated(name)
        content = part.content()
        object_part = _OBJECT_PART.match(name)
        if name == "file":
            audio = content
            filename = part.filename()
            fields["file"] = True
        elif name in _ARRAY_FIELDS:
            fields.setdefault(_ARRAY_FIELDS[name], []).append(_field_text(name, content))
        elif object_part:
            _object_member(fields, object_part.group(1), object_part.group(2), _field_text(name, content))
        else:
            fields[name] = _field_text(name, content)
    if isinstance(fields.get("chunking_strategy"), str):
        fields["chunking_strategy"] = _json_text_or_itself(fields["chunking_strategy"])
    return fields, audio, filename


def _object_member(fields: dict[str, Any], name: str, key: str, value: str) -> None:
    """One member of an object the SDK sent as parts (``chunking_strategy[threshold]``), into that object."""
    members = fields.setdefault(name, {})
    if not isinstance(members, dict):  # a plain value for the field too: which one was meant is unknown
        raise _repeated(name)
    if key in members:
        raise _repeated(f"{name}[{key}]")
    members[key] = value


def _json_text_or_itself(value: str) -> Any:
    """A form field that holds a JSON object (curl -F 'chunking_strategy={"type": ...}'), as that object."""
    if not value.lstrip().startswith("{"):
        return value
    try:
        return json.loads(value)
    except (json.JSONDecodeError, RecursionError):
        raise _invalid("chunking_strategy", 'must be "auto" or a JSON object {"type": "server_vad", ...}.') from None


def _fields_from_json(body: bytes | str) -> tuple[dict[str, Any], bytes | None, str | None]:
    if isinstance(body, str) and (body[:1] == "\ufeff" or "\x00" in body[:4]):
        # a byte order mark, or UTF-16/32 sent as text: read from the bytes, whose encoding json detects
        body = body.encode()
    try:
        fields = json.loads(body, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).",
            code="invalid_json",
        ) from exc
    except (UnicodeDecodeError, RecursionError) as exc:  # RecursionError: absurd nesting
        raise InvalidRequest(
            "The request body is not valid JSON: it must be a UTF-8 encoded JSON object of reasonable depth.",
            code="invalid_json",
        ) from exc
    except ValueError as exc:  # an integer past Python's limit on digits (sys.get_int_max_str_digits(), 4,300)
        raise InvalidRequest(
            "The request body is not valid JSON for this API: it has a number with more digits than any "
            "parameter takes.",
            code="invalid_json",
        ) from exc
    if not isinstance(fields, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    if "audio" in fields and "file_base64" in fields:
        raise InvalidRequest(
            "Send the audio in either 'audio' or 'file_base64', not both.", param="audio", code="ambiguous_audio"
        )
    audio_param = "audio" if "audio" in fields else "file_base64"
    audio = _decode_base64(fields[audio_param], audio_param) if audio_param in fields else None
    filename = fields.get("filename")
    if filename is not None and not isinstance(filename, str):
        raise InvalidRequest("'filename' must be a string.", param="filename")
    return fields, audio, filename


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def parse_transcription_request(
    task: Task,
    content_type: str | None,
    body: bytes | str,
    *,
    max_audio_bytes: int,
    max_upload_bytes: int,
    for_job: bool = False,
    allow_http_webhooks: bool = False,
    allow_private_webhooks: bool = False,
) -> TranscriptionRequest:
    """The request, validated; ``allow_http_webhooks`` and ``allow_private_webhooks``: the deployment allows
    webhooks to http:// URLs and to private addresses (check_webhook_url)."""
    media_type = _media_type(content_type or "")
    if media_type == "multipart/form-data":
        body_kind = "multipart"
        if isinstance(body, str):  # a form that did not arrive base64-encoded (not one of the binary media types)
            body = body.encode()
        _check_size(len(body), max_audio_bytes, max_upload_bytes, _ENVELOPE_ALLOWANCE)  # before parsing it
        fields, audio, filename = _fields_from_multipart(body, content_type or "")
    elif media_type == "application/json":
        body_kind = "json"
        _check_size(len(body) * 3 // 4, max_audio_bytes, max_upload_bytes, _ENVELOPE_ALLOWANCE)
        fields, audio, filename = _fields_from_json(body)
    else:
        raise UnsupportedMediaType(
            f"Content-Type must be multipart/form-data or application/json, not {quoted(media_type or 'none')}.",
            code="unsupported_content_type",
        )

    _reject_unknown(fields, allowed_fields(task, body_kind, for_job))
    _check_limits(
        fields, filename, allow_private_webhooks=allow_private_webhooks, allow_http_webhooks=allow_http_webhooks
    )
    upload_id = fields.get("upload_id")
    audio_param = "file" if body_kind == "multipart" else "audio"
    url = fields.get("url")
    if url is not None:
        if audio is not None or upload_id is not None:
            raise InvalidRequest(
                f"Send exactly one of '{audio_param}', 'url' and 'upload_id'.", param="url", code="ambiguous_audio"
            )
        # the same rules as a webhook's URL: the deployment fetches from where it would send
        url = check_audio_url(url, allow_private_addresses=allow_private_webhooks, allow_http=allow_http_webhooks)
        loaded = None
    elif upload_id is not None:
        if audio is not None:
            raise InvalidRequest(
                f"Send either '{audio_param}' or 'upload_id', not both.", param="upload_id", code="ambiguous_audio"
            )
        if not isinstance(upload_id, str) or not UPLOAD_ID_PATTERN.fullmatch(upload_id):
            raise InvalidRequest(
                "'upload_id' must be an id that POST /v1/uploads returned (upl_...).",
                param="upload_id",
                code="invalid_upload_id",
            )
        loaded = None
    elif audio is None:
        raise InvalidRequest(
            f"Missing required parameter: '{audio_param}' (or 'url' or 'upload_id').",
            param=audio_param,
            code="missing_audio",
        )
    else:
        _check_size(len(audio), max_audio_bytes, max_upload_bytes)
        loaded = LoadedAudio.inline(audio)
    if "model" not in fields:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model", code="missing_model")

    values = {key: value for key, value in fields.items() if key not in _AUDIO_FIELDS[body_kind]}
    try:
        request = TranscriptionRequest(
            task=task, audio=loaded, filename=filename, upload_id=upload_id, url=url, **values
        )
    except ValidationError as exc:
        raise _as_invalid_request(exc) from exc
    _check_word_timestamps(request)
    _check_newer_fields(request)
    _check_diarization(request)
    return request


def _check_diarization(request: TranscriptionRequest) -> None:
    """Speakers only where they are shown, and the known speakers' samples checked before anything is reserved."""
    if request.diarize and request.task is Task.TRANSLATE:
        raise _invalid("response_format", "diarized_json is only returned by transcriptions, as at OpenAI.")
    if (request.known_speaker_names or request.known_speaker_references) and not request.diarize:
        raise InvalidRequest(
            "Known speakers name the voices of a diarized transcript: send them with response_format=diarized_json.",
            param="known_speaker_names",
            code="invalid_known_speakers",
        )
    check_known_speakers(request.known_speaker_names, request.known_speaker_references)


def _as_invalid_request(exc: ValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    param = str(first["loc"][0]) if first["loc"] else None
    message = first["msg"].removeprefix("Value error, ")
    if param:
        message = f"Invalid value for '{param}': {message}"
    return InvalidRequest(message, param=param, code="invalid_value")


_UPLOAD_FIELDS = frozenset({"filename", "start_job", "webhook_url"}) | _COMMON_FIELDS | _TRANSCRIPTION_ONLY_FIELDS


def parse_upload_request(
    content_type: str | None,
    body: bytes | str,
    default_model: str,
    *,
    allow_http_webhooks: bool = False,
    allow_private_webhooks: bool = False,
) -> UploadRequest:
    """POST /v1/uploads' body, with the same limits as a job request's fields."""
    fields: dict[str, Any] = {}
    # "no body" is one with nothing but JSON's whitespace; str.strip() would also take control characters such
    # as \x1c for whitespace, so a body of them would pass as empty
    has_body = bool(body.strip(" \t\r\n")) if isinstance(body, str) else bool(body.strip(b" \t\r\n"))
    if has_body:
        if _media_type(content_type or "") != "application/json":
            raise UnsupportedMediaType("POST /v1/uploads takes a JSON body (or none).", code="unsupported_content_type")
        fields, _, _ = _fields_from_json(body)
    _reject_unknown(fields, _UPLOAD_FIELDS)
    _check_limits(
        fields,
        fields.get("filename"),
        allow_private_webhooks=allow_private_webhooks,
        allow_http_webhooks=allow_http_webhooks,
    )
    if not isinstance(fields.get("start_job", True), bool):
        raise InvalidRequest("'start_job' must be true or false.", param="start_job", code="invalid_value")
    job_fields = {name: value for name, value in fields.items() if name not in ("start_job", "filename")}
    try:
        job = JobOptions(task=Task.TRANSCRIBE, **{"model": default_model, **job_fields})
        upload = UploadRequest(start_job=fields.get("start_job", True), filename=fields.get("filename"), job=job)
    except ValidationError as exc:
        raise _as_invalid_request(exc) from exc
    _check_word_timestamps(upload.job)
    return upload
