"""The API contract's schemas: pydantic models of what the API answers and what its requests may hold, written
for the OpenAPI document (infery.http.openapi) and reusing the code's own models and limits wherever they exist
(a job's fields, a segment, usage totals, the field limits of a request): a change to those changes the document.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from infery.domain.audio_url import AUDIO_URL_MAX_CHARACTERS
from infery.domain.diarization import MAX_KNOWN_SPEAKERS
from infery.domain.inference import Segment, Word
from infery.domain.jobs import JOB_PRIVATE_FIELDS, Job
from infery.domain.transcription import (
    FILENAME_MAX_CHARACTERS,
    MODEL_MAX_CHARACTERS,
    PROMPT_MAX_CHARACTERS,
    WEBHOOK_URL_MAX_CHARACTERS,
    ResponseFormat,
)
from infery.usecases.usage import RequestUsage, UsageTotals

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


class TokenLogprob(BaseModel):
    """A text token of the transcript (one of Whisper's byte-level BPE tokens) and the model's log probability of
    it, given the audio and the text before it."""

    model_config = ConfigDict(extra="forbid")

    token: str
    logprob: float = Field(le=0)
    bytes: list[int] = Field(description="The token's UTF-8 bytes (a token may hold part of a character)")


class Transcription(BaseModel):
    """response_format json (the default); ``logprobs`` only with include[]=logprobs."""

    model_config = ConfigDict(extra="forbid")

    text: str
    logprobs: list[TokenLogprob] | None = None
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


class DiarizedSegment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["transcript.text.segment"]
    id: str
    speaker: str = Field(description="A, B, ... in order of first appearance, or a known speaker's name")
    start: float
    end: float
    text: str


class DurationUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["duration"]
    seconds: float = Field(ge=0)


class DiarizedTranscription(BaseModel):
    """response_format diarized_json (OpenAI's): segments split where the speaker changes, each with its speaker."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["transcribe"]
    duration: float = Field(ge=0)
    text: str
    segments: list[DiarizedSegment]
    usage: DurationUsage
    credits_used: int = Field(ge=0)


# A job as GET /v1/jobs/{id} shows it (Job.public_view()), so a field added to a job shows up here.
JobView = create_model(
    "JobView",
    __config__=ConfigDict(extra="forbid"),
    __doc__="A transcription job; ``result`` once it has succeeded (in the job's format, or the one asked for).",
    id=(str, Field(pattern=r"^job_[0-9a-f]{32}$")),
    object=(Literal["transcription.job"], ...),
    **{name: (info.annotation, info) for name, info in Job.model_fields.items() if name not in JOB_PRIVATE_FIELDS},
    result=(Transcription | VerboseTranscription | DiarizedTranscription | str | None, None),
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
_URL = Field(
    default=None,
    max_length=AUDIO_URL_MAX_CHARACTERS,
    pattern=r"^https?://",
    description="Where to fetch the audio, instead of the file (Groq's field): https on port 443 from a public host "
    "on AWS, at most 3 redirects, at most the request's byte limit (4 MiB sync, the upload limit for a job); the "
    "fetched file is stored and billed as an upload",
)
_MODEL = Field(
    min_length=1,
    max_length=MODEL_MAX_CHARACTERS,
    description="whisper-1, the deployed model's own name, or an alias such as gpt-4o-transcribe (GET /v1/models)",
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


class _TranscriptionJsonFields(_Strict):
    """The JSON variant: the audio base64-encoded in ``audio`` (or ``file_base64`` with a ``filename``), an
    ``upload_id`` or a ``url``, exactly one of them.
    The audio is MP3, MP4, M4A, WAV, WebM, OGG or FLAC, told from its bytes; at most 4 MiB."""

    model: str = _MODEL
    audio: str | None = Field(default=None, description="The audio file, base64-encoded (a data: URL works too)")
    file_base64: str | None = Field(default=None, description="The same as audio, under OpenAI-compatible name")
    filename: str | None = _FILENAME
    upload_id: str | None = _UPLOAD_ID
    url: str | None = _URL
    language: str | None = _LANGUAGE
    prompt: str | None = _PROMPT
    response_format: ResponseFormat = ResponseFormat.JSON
    temperature: Temperature | None = Field(
        default=None, json_schema_extra=_temperature_schema, description=_TEMPERATURE.description
    )
    timestamp_granularities: list[Granularity] | None = Field(
        default=None, description="word adds words to verbose_json (only with verbose_json)"
    )


class ServerVad(_Strict):
    """Where the cuts between Whisper's 30-second windows go (no audio is ever dropped): OpenAI's server_vad."""

    type: Literal["server_vad"]
    threshold: float = Field(default=0.5, ge=0, le=1, description="Speech probability under which a frame is a pause")
    prefix_padding_ms: int = Field(
        default=300, ge=0, le=10_000, description="At least this much of a pause is kept before the speech after a cut"
    )
    silence_duration_ms: int = Field(
        default=200, ge=0, le=10_000, description="The latest pause at least this long is the cut (else the longest)"
    )


_CHUNKING_STRATEGY = Field(
    default=None,
    description="\"auto\" (the engine's own cuts: the middle of the longest pause near a window's end) or server_vad",
)
_INCLUDE = Field(default=None, description="logprobs: each text token's log probability (response_format json only)")
_STREAM = Field(
    default=None,
    description="true: text/event-stream of transcript.text.delta events, one per segment, then transcript.text.done "
    "(response_format json or text)",
)


class TranscriptionJson(_TranscriptionJsonFields):
    __doc__ = _TranscriptionJsonFields.__doc__

    chunking_strategy: Literal["auto"] | ServerVad | None = _CHUNKING_STRATEGY
    include: list[Literal["logprobs"]] | None = _INCLUDE
    stream: bool | None = _STREAM


_KNOWN_SPEAKER_NAMES = Field(
    default=None, max_length=MAX_KNOWN_SPEAKERS, description="Names of the voices in known_speaker_references"
)
_KNOWN_SPEAKER_REFERENCES = Field(
    default=None,
    max_length=MAX_KNOWN_SPEAKERS,
    description="Voice samples of 2-10 s as data URLs (data:audio/wav;base64,...), one per name; diarized_json only",
)


class TranscriptionSyncJson(TranscriptionJson):
    """A synchronous transcription may name up to 4 speakers by voice samples (diarized_json)."""

    known_speaker_names: list[str] | None = _KNOWN_SPEAKER_NAMES
    known_speaker_references: list[str] | None = _KNOWN_SPEAKER_REFERENCES


class TranslationJson(_Strict):
    """As a transcription, into English: no language, no timestamp granularities."""

    model: str = _MODEL
    audio: str | None = TranscriptionJson.model_fields["audio"]
    file_base64: str | None = TranscriptionJson.model_fields["file_base64"]
    filename: str | None = _FILENAME
    upload_id: str | None = _UPLOAD_ID
    url: str | None = _URL
    prompt: str | None = _PROMPT
    response_format: ResponseFormat = ResponseFormat.JSON
    temperature: Temperature | None = TranscriptionJson.model_fields["temperature"]


class TranscriptionJobJson(_TranscriptionJsonFields):
    webhook_url: str | None = _WEBHOOK_URL
    known_speaker_names: list[str] | None = _KNOWN_SPEAKER_NAMES
    known_speaker_references: list[str] | None = _KNOWN_SPEAKER_REFERENCES


class TranslationJobJson(TranslationJson):
    webhook_url: str | None = _WEBHOOK_URL


def _binary(schema: dict[str, Any]) -> None:
    schema.clear()
    schema.update({"type": "string", "format": "binary"})


# A form's fields are text or absent, never null: optional ones default to None without being nullable.
_FORM_UPLOAD_ID = Field(default=None, pattern=r"^upl_[0-9a-f]{32}$", description=_UPLOAD_ID.description)
_FORM_URL = Field(
    default=None, max_length=AUDIO_URL_MAX_CHARACTERS, pattern=r"^https?://", description=_URL.description
)
_FORM_LANGUAGE = Field(default=None, min_length=1, max_length=16, description=_LANGUAGE.description)
_FORM_PROMPT = Field(default=None, max_length=PROMPT_MAX_CHARACTERS, description=_PROMPT.description)
_FORM_TEMPERATURE = Field(default=None, ge=0, le=1, description="From 0 to 1")
_FORM_WEBHOOK_URL = Field(
    default=None, max_length=WEBHOOK_URL_MAX_CHARACTERS, pattern=r"^https?://", description=_WEBHOOK_URL.description
)


class _TranscriptionFormFields(_Strict):
    """multipart/form-data, as the openai SDK sends it; the form must end with its closing boundary."""

    file: bytes = Field(
        default=None,
        json_schema_extra=_binary,
        description="The audio file (MP3, MP4, M4A, WAV, WebM, OGG or FLAC), at most 4 MiB",
    )
    model: str = _MODEL
    upload_id: str = _FORM_UPLOAD_ID
    url: str = _FORM_URL
    language: str = _FORM_LANGUAGE
    prompt: str = _FORM_PROMPT
    response_format: ResponseFormat = ResponseFormat.JSON
    temperature: float = _FORM_TEMPERATURE
    timestamp_granularities__: list[Granularity] = Field(
        default=None, alias="timestamp_granularities[]", description="word adds words to verbose_json"
    )


class TranscriptionForm(_TranscriptionFormFields):
    __doc__ = _TranscriptionFormFields.__doc__

    chunking_strategy: str = Field(
        default=None,
        description='"auto", or a server_vad object as JSON text; the openai SDK sends the object as one field per '
        "member, chunking_strategy[type], chunking_strategy[threshold] and so on",
    )
    chunking_strategy_type_: Literal["server_vad"] = Field(default=None, alias="chunking_strategy[type]")
    chunking_strategy_threshold_: float = Field(default=None, alias="chunking_strategy[threshold]", ge=0, le=1)
    chunking_strategy_prefix_padding_ms_: int = Field(
        default=None, alias="chunking_strategy[prefix_padding_ms]", ge=0, le=10_000
    )
    chunking_strategy_silence_duration_ms_: int = Field(
        default=None, alias="chunking_strategy[silence_duration_ms]", ge=0, le=10_000
    )
    include__: list[Literal["logprobs"]] = Field(default=None, alias="include[]", description=_INCLUDE.description)
    stream: bool = Field(default=None, description=_STREAM.description)


class TranscriptionSyncForm(TranscriptionForm):
    """A synchronous transcription may name up to 4 speakers by voice samples (diarized_json)."""

    known_speaker_names__: list[str] = Field(
        default=None, alias="known_speaker_names[]", description=_KNOWN_SPEAKER_NAMES.description
    )
    known_speaker_references__: list[str] = Field(
        default=None, alias="known_speaker_references[]", description=_KNOWN_SPEAKER_REFERENCES.description
    )


class TranslationForm(_Strict):
    file: bytes = _TranscriptionFormFields.model_fields["file"]
    model: str = _MODEL
    upload_id: str = _FORM_UPLOAD_ID
    url: str = _FORM_URL
    prompt: str = _FORM_PROMPT
    response_format: ResponseFormat = ResponseFormat.JSON
    temperature: float = _FORM_TEMPERATURE


class TranscriptionJobForm(_TranscriptionFormFields):
    webhook_url: str = _FORM_WEBHOOK_URL
    known_speaker_names__: list[str] = TranscriptionSyncForm.model_fields["known_speaker_names__"]
    known_speaker_references__: list[str] = TranscriptionSyncForm.model_fields["known_speaker_references__"]


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


# every schema the document holds (and those they refer to)
MODELS: tuple[type[BaseModel], ...] = (
    Error,
    Transcription,
    VerboseTranscription,
    DiarizedTranscription,
    JobView,
    CreatedJob,
    JobList,
    Upload,
    ModelList,
    Usage,
    TranscriptionJson,
    TranscriptionSyncJson,
    TranslationJson,
    TranscriptionJobJson,
    TranslationJobJson,
    TranscriptionForm,
    TranscriptionSyncForm,
    TranslationForm,
    TranscriptionJobForm,
    TranslationJobForm,
    UploadRequest,
)
