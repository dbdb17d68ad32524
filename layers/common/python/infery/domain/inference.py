"""The JSON contract between the API and the Whisper model server.

Imported by both sides (the Lambda layer and the endpoint container), so the
two can never disagree on a field.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Task(StrEnum):
    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"


class VadCuts(BaseModel):
    """Where the model server cuts long audio into Whisper's 30-second windows: OpenAI's ``server_vad`` chunking
    options, with the defaults the engine uses when a request gives none. The voice activity detection only places
    cuts: no audio is ever dropped, whatever these say."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # a 32 ms frame is part of a pause when its speech probability (Silero VAD, smoothed over ~100 ms) is below this
    threshold: float = Field(default=0.3, ge=0, le=1)
    # at least this much of the pause is kept before the speech that follows a cut
    prefix_padding_ms: int = Field(default=0, ge=0, le=10_000)
    # a pause at least this long is preferred for a cut over any shorter one
    silence_duration_ms: int = Field(default=0, ge=0, le=10_000)


class AudioPart(BaseModel):
    """One part of a long job's audio: the model transcribes from the pause nearest ``start`` to the pause nearest
    ``end`` (seconds into the file; None is the file's own start or end). Each cut is chosen within
    ``search_seconds`` either side of its nominal time, by one rule on the samples of that stretch alone, decoded
    the same way by both parts that share the cut: two neighbouring parts meet at the same instant, in a pause, so
    no word is lost or doubled at their edge."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: float | None = Field(default=None, gt=0)
    end: float | None = Field(default=None, gt=0)
    search_seconds: float = Field(default=30.0, gt=0, le=300)

    @model_validator(mode="after")
    def _ordered(self) -> AudioPart:
        if self.start is not None and self.end is not None and self.end - self.start <= 2 * self.search_seconds:
            raise ValueError("a part must be longer than its two searches for a cut")
        return self


class KnownSpeaker(BaseModel):
    """A voice sample given a name: the speaker whose voice matches it is called by that name."""

    name: str = Field(min_length=1)
    audio: str = Field(description="the sample's audio file, base64-encoded")


class InferenceRequest(BaseModel):
    """The body sent to the endpoint: the audio inline (base64), or an S3 object the container reads itself.

    By reference, a 25 MB upload reaches the model though a real-time invocation takes at most 6 MB;
    SageMaker asynchronous inference would post this same body, so the contract carries over.
    """

    audio: str | None = Field(default=None, description="the audio file, base64-encoded")
    audio_s3_uri: str | None = Field(default=None, pattern=r"^s3://[^/]+/.+", description="or: where to read it")
    task: Task = Task.TRANSCRIBE
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    word_timestamps: bool = False
    # by reference, the version that was checked and priced: a changed object is refused, not transcribed
    audio_s3_etag: str | None = None
    # and the object's version that was read (an upload slot's first): a presigned POST sent again is never read
    audio_s3_version_id: str | None = Field(default=None, max_length=1024)
    # how many seconds of audio the credits reserved for this request pay for: longer audio is refused
    max_audio_seconds: float | None = Field(default=None, gt=0)
    # a synchronous call's ceiling (what the model finishes before the API's deadline): longer audio is refused
    # as too long for a synchronous call, whatever the reservation covers
    max_sync_audio_seconds: float | None = Field(default=None, gt=0)
    # where the model writes its progress while it works (jobs); the API shows it on GET /v1/jobs/{id}
    progress_s3_uri: str | None = Field(default=None, pattern=r"^s3://[^/]+/.+")
    # how the model cuts long audio into windows (a request's chunking_strategy); None: the engine's own defaults
    cuts: VadCuts | None = None
    # each text token's log probability (include[]=logprobs): an extra alignment pass, so only when asked
    logprobs: bool = False
    # who speaks when (speaker_turns in the result), run on the same decoded audio as the transcript
    diarize: bool = False
    known_speakers: list[KnownSpeaker] = Field(default_factory=list)
    # a part of a long job: only that stretch of the file is read and decoded, and the result is on the file's own
    # timeline (its timestamps count from the file's start, not the part's)
    part: AudioPart | None = None

    @model_validator(mode="after")
    def _one_audio_source(self) -> InferenceRequest:
        if (self.audio is None) == (self.audio_s3_uri is None):
            raise ValueError("send exactly one of 'audio' and 'audio_s3_uri'")
        return self


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


class TokenLogprob(BaseModel):
    """One text token of the transcript and the log probability the model gave it (OpenAI's ``logprobs`` item, and
    the segment it belongs to, which OpenAI's item does not have)."""

    token: str
    logprob: float
    bytes: list[int]
    segment: int = Field(ge=0, description="the id of the segment the token is in")


class SpeakerTurn(BaseModel):
    """A stretch of audio one speaker holds, labelled as the client sees it (A, B, ... or a known speaker's name)."""

    speaker: str
    start: float
    end: float


class InferenceResult(BaseModel):
    text: str
    language: str
    # the seconds of audio transcribed; for a part, from ``audio_start`` (its first cut) to its last cut
    duration: float = Field(ge=0)
    audio_start: float = Field(default=0, ge=0)
    segments: list[Segment]
    words: list[Word] | None = None
    # every text token of every segment, in order; only when the request asked for them
    logprobs: list[TokenLogprob] | None = None
    # when diarization was asked: the turns, in time order (words are then always returned, to split segments)
    speaker_turns: list[SpeakerTurn] | None = None


class InferenceError(BaseModel):
    """The body the model server sends with a 4xx/5xx."""

    error: str
    code: str
