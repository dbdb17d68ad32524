"""What a transcription request is, apart from how it is parsed: its options, its audio, and a job's request.

The domain's types, with no parsing library behind them: the job store and the worker use these without loading
the multipart parser (transcription_request.py), which builds them from a request's body.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from infery.domain.audio import AudioFormat, sniff_audio_format
from infery.domain.diarization import DIARIZE_MODEL
from infery.domain.inference import Task, VadCuts
from infery.domain.languages import WHISPER_LANGUAGE_CODES
from infery.domain.ranged_audio import AudioBytes, RangedAudio

# Limits on the fields a request may carry, checked before anything is stored (a DynamoDB item holds 400 KB).
# OpenAI reads at most 224 tokens of prompt; 1,000 characters is about that much English.
PROMPT_MAX_CHARACTERS = 1000
FILENAME_MAX_CHARACTERS = 255
WEBHOOK_URL_MAX_CHARACTERS = 2048
MODEL_MAX_CHARACTERS = 256
# how much of a client's value a message may quote
_QUOTED_MAX_CHARACTERS = 40


def quoted(value: Any) -> str:
    """A client's value as a message may quote it: in quotes, and cut short (a 400 KB value is not echoed back)."""
    text = str(value)
    return repr(text if len(text) <= _QUOTED_MAX_CHARACTERS else text[:_QUOTED_MAX_CHARACTERS] + "...")


class ResponseFormat(StrEnum):
    JSON = "json"
    TEXT = "text"
    SRT = "srt"
    VERBOSE_JSON = "verbose_json"
    VTT = "vtt"
    # OpenAI's: the transcript's segments, each with its speaker (domain/diarization.py)
    DIARIZED_JSON = "diarized_json"


TimestampGranularity = Literal["word", "segment"]


def _segments_only() -> list[TimestampGranularity]:
    return ["segment"]


class ServerVadChunking(BaseModel):
    """OpenAI's ``chunking_strategy`` object: how voice activity detection places the cuts between windows. The
    defaults are OpenAI's for ``server_vad``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["server_vad"]
    threshold: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False)
    prefix_padding_ms: int = Field(default=300, ge=0, le=10_000)
    silence_duration_ms: int = Field(default=200, ge=0, le=10_000)

    @field_validator("threshold", "prefix_padding_ms", "silence_duration_ms", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):  # JSON's true is not 1
            raise ValueError("must be a number, not true or false")
        return value

    def cuts(self) -> VadCuts:
        return VadCuts(
            threshold=self.threshold,
            prefix_padding_ms=self.prefix_padding_ms,
            silence_duration_ms=self.silence_duration_ms,
        )


def _chunking_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


class TranscriptionOptions(BaseModel):
    """How to transcribe: everything a request says except the audio (a job stores just this)."""

    task: Task
    model: str = Field(min_length=1)
    language: str | None = None
    prompt: str | None = None
    response_format: ResponseFormat = ResponseFormat.JSON
    temperature: float | None = Field(default=None, ge=0, le=1)
    timestamp_granularities: list[TimestampGranularity] = Field(default_factory=_segments_only)
    # OpenAI's newer fields, taken by a synchronous call only (the parser refuses them elsewhere): excluded from
    # dumps, so a job never stores them nor shows them in its view. chunking_strategy "auto" (or none) is the
    # engine's own cuts; an object moves them.
    chunking_strategy: Literal["auto"] | ServerVadChunking | None = Field(default=None, exclude=True)
    include: list[Literal["logprobs"]] = Field(default_factory=list, exclude=True)
    stream: bool = Field(default=False, exclude=True)

    @field_validator("chunking_strategy", mode="before")
    @classmethod
    def _one_chunking_strategy(cls, value: Any) -> Any:
        """ "auto" or a server_vad object, with a message that says which part is wrong (a union's would list both)."""
        if value is None or value == "auto" or isinstance(value, ServerVadChunking):
            return value
        if not isinstance(value, dict):
            raise ValueError('must be "auto" or an object {"type": "server_vad", ...}')
        try:
            return ServerVadChunking.model_validate(value)
        except ValidationError as error:
            raise ValueError(_chunking_problem(error)) from None

    @property
    def cuts(self) -> VadCuts | None:
        """Where the model cuts the audio: None (the engine's defaults) unless a server_vad object says."""
        return self.chunking_strategy.cuts() if isinstance(self.chunking_strategy, ServerVadChunking) else None

    @property
    def logprobs(self) -> bool:
        return "logprobs" in self.include

    # voice samples (data URLs, checked by domain.diarization.check_known_speakers) that name the speakers
    known_speaker_names: list[str] = Field(default_factory=list)
    known_speaker_references: list[str] = Field(default_factory=list, repr=False)

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = value.strip().lower()
        if code not in WHISPER_LANGUAGE_CODES:
            raise ValueError(
                f"{quoted(value)} is not a supported ISO-639-1 language code (for example 'en', 'de', 'ja')"
            )
        return code

    @field_validator("temperature", mode="before")
    @classmethod
    def _temperature_number(cls, value: Any) -> Any:
        """A number from 0 to 1: not a boolean (JSON's true is not 1.0), not NaN, not infinite."""
        if value is None:
            return None
        number: float | None = None
        if isinstance(value, int | float | Decimal) and not isinstance(value, bool):  # Decimal: a stored job
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if number is None or not math.isfinite(number) or not 0 <= number <= 1:
            raise ValueError("must be a number between 0 and 1")
        return number

    @property
    def word_timestamps(self) -> bool:
        return self.response_format is ResponseFormat.VERBOSE_JSON and "word" in self.timestamp_granularities

    @property
    def diarize(self) -> bool:
        """Speakers are asked for: diarized_json, or OpenAI's diarizing model with a format that has segments."""
        return self.response_format is ResponseFormat.DIARIZED_JSON or (
            self.model == DIARIZE_MODEL
            and self.response_format in (ResponseFormat.VERBOSE_JSON, ResponseFormat.SRT, ResponseFormat.VTT)
        )

    def options(self) -> TranscriptionOptions:
        """Just the options (what a job stores), without what a subclass adds."""
        return TranscriptionOptions.model_validate(self.model_dump(include=set(TranscriptionOptions.model_fields)))


@dataclass(frozen=True)
class LoadedAudio:
    """Audio whose bytes are here and whose container was recognised: what is checked, priced and transcribed.
    A stored file too large to hold is here as a ranged view (its head and tail, and its true size).

    ``s3_uri``, ``s3_etag`` and ``s3_version_id`` say where it is stored and which version was read: the model reads
    that version itself (so files past the 6 MB invocation limit reach it), and only if it is still those bytes.
    """

    data: AudioBytes = field(repr=False)
    format: AudioFormat
    s3_uri: str | None = None
    s3_etag: str | None = None
    s3_version_id: str | None = None

    @classmethod
    def inline(cls, data: bytes) -> LoadedAudio:
        """Audio sent in the request's body; 400/415 unless it is one of the supported formats."""
        return cls(data, sniff_audio_format(data))

    @classmethod
    def stored(
        cls, data: AudioBytes, s3_uri: str, s3_etag: str | None = None, s3_version_id: str | None = None
    ) -> LoadedAudio:
        """Audio read from the bucket, as ``AudioStore.load`` returns it (bytes or a ranged view, URI, ETag,
        version)."""
        return cls(data, sniff_audio_format(data), s3_uri, s3_etag, s3_version_id)

    @property
    def size(self) -> int:
        """The file's size in bytes, held whole or not."""
        return len(self.data)

    @property
    def whole(self) -> bytes:
        """The file's bytes, for what needs all of them (audio sent in the request); never a ranged view's."""
        if isinstance(self.data, RangedAudio):
            raise TypeError("a stored file held as a ranged view has no bytes to send whole")
        return self.data


class JobOptions(TranscriptionOptions):
    """A job's options: how to transcribe, and where to say that it finished."""

    webhook_url: str | None = None

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and (
            not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value) or len(value) > WEBHOOK_URL_MAX_CHARACTERS
        ):
            raise ValueError("must be an http:// or https:// URL of at most 2048 characters")
        return value


class TranscriptionRequest(JobOptions):
    """What the client asked for, with its audio: sent in the request (``audio``, decoded and its container
    recognised), already uploaded (``upload_id``) or to be fetched (``url``), exactly one of them."""

    audio: LoadedAudio | None = Field(default=None, repr=False)
    upload_id: str | None = None
    url: str | None = None
    filename: str | None = None

    @model_validator(mode="after")
    def _one_audio_source(self) -> TranscriptionRequest:
        if [self.audio, self.upload_id, self.url].count(None) != 2:
            raise ValueError("a request has its audio, names an upload or gives a URL, exactly one of them")
        return self


class UploadRequest(BaseModel):
    """POST /v1/uploads: where to upload, and (unless start_job is false) the job to run once the file lands."""

    start_job: bool = True
    filename: str | None = Field(default=None, max_length=FILENAME_MAX_CHARACTERS)
    job: JobOptions
