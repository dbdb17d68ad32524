"""The JSON contract between the API and the Whisper model server.

Imported by both sides (the Lambda layer and the endpoint container), so the
two can never disagree on a field.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class Task(StrEnum):
    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"


class InferenceRequest(BaseModel):
    audio: str = Field(description="the audio file, base64-encoded")
    task: Task = Task.TRANSCRIBE
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    word_timestamps: bool = False


class Word(BaseModel):
    word: str
    start: float
    end: float


class Segment(BaseModel):
    """One segment, with the fields OpenAI's verbose_json segments have."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class InferenceResult(BaseModel):
    text: str
    language: str
    duration: float = Field(ge=0)
    segments: list[Segment]
    words: list[Word] | None = None


class InferenceError(BaseModel):
    """The body the model server sends with a 4xx/5xx."""

    error: str
    code: str
