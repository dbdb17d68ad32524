"""Render a transcript in the response format the client asked for, as OpenAI's API does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infery.domain.diarization import DiarizedSegment, diarized_segments, segment_speakers
from infery.domain.errors import InvalidRequest
from infery.domain.inference import InferenceResult, Segment, Task
from infery.domain.transcription import ResponseFormat, TranscriptionOptions

TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class RenderedTranscript:
    body: str | dict[str, Any]
    content_type: str


def format_timestamp(seconds: float, decimal_marker: str) -> str:
    milliseconds = max(0, round(seconds * 1000))
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    whole_seconds, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole_seconds:02d}{decimal_marker}{milliseconds:03d}"


def _cue_text(segment: Segment) -> str:
    # "-->" inside a cue would end it early in both subtitle formats
    return segment.text.strip().replace("-->", "->")


def to_srt(segments: list[Segment]) -> str:
    return "".join(
        f"{index}\n{format_timestamp(segment.start, ',')} --> {format_timestamp(segment.end, ',')}\n"
        f"{_cue_text(segment)}\n\n"
        for index, segment in enumerate(segments, start=1)
    )


def to_vtt(segments: list[Segment]) -> str:
    cues = "".join(
        f"{format_timestamp(segment.start, '.')} --> {format_timestamp(segment.end, '.')}\n{_cue_text(segment)}\n\n"
        for segment in segments
    )
    return f"WEBVTT\n\n{cues}"


def to_diarized_srt(pieces: list[DiarizedSegment]) -> str:
    """srt cues with the speaker before the text: "[A] Hello." (srt has no markup for a voice)."""
    return "".join(
        f"{index}\n{format_timestamp(piece.start, ',')} --> {format_timestamp(piece.end, ',')}\n"
        f"[{piece.speaker}] {piece.text.strip().replace('-->', '->')}\n\n"
        for index, piece in enumerate(pieces, start=1)
    )


def to_diarized_vtt(pieces: list[DiarizedSegment]) -> str:
    """vtt cues with WebVTT's voice span: "<v A>Hello." (a ">" would end the span's annotation early)."""
    cues = "".join(
        f"{format_timestamp(piece.start, '.')} --> {format_timestamp(piece.end, '.')}\n"
        f"<v {piece.speaker.replace('>', '')}>{piece.text.strip().replace('-->', '->')}\n\n"
        for piece in pieces
    )
    return f"WEBVTT\n\n{cues}"


def diarized_json(result: InferenceResult, credits_used: int) -> dict[str, Any]:
    """OpenAI's diarized_json: segments cut where the speaker changes, each with its speaker."""
    return {
        "task": Task.TRANSCRIBE.value,
        "duration": result.duration,
        "text": result.text.strip(),
        "segments": [
            {
                "type": "transcript.text.segment",
                "id": f"seg_{index}",
                "speaker": piece.speaker,
                "start": piece.start,
                "end": piece.end,
                "text": piece.text,
            }
            for index, piece in enumerate(diarized_segments(result))
        ],
        "usage": {"type": "duration", "seconds": result.duration},
        "credits_used": credits_used,
    }


def render_transcript(
    result: InferenceResult, response_format: ResponseFormat, *, task: Task, credits_used: int, include_words: bool
) -> RenderedTranscript:
    text = result.text.strip()
    diarized = result.speaker_turns is not None
    if response_format is ResponseFormat.DIARIZED_JSON:
        if not diarized:  # a job's result asked again as diarized_json: its speakers were never found
            raise InvalidRequest(
                "This transcript was made without speakers: ask for response_format=diarized_json when the "
                "transcription or job is created.",
                param="response_format",
                code="invalid_value",
            )
        return RenderedTranscript(diarized_json(result, credits_used), JSON_CONTENT_TYPE)
    if diarized and response_format is ResponseFormat.SRT:
        return RenderedTranscript(to_diarized_srt(diarized_segments(result)), TEXT_CONTENT_TYPE)
    if diarized and response_format is ResponseFormat.VTT:
        return RenderedTranscript(to_diarized_vtt(diarized_segments(result)), TEXT_CONTENT_TYPE)
    if response_format is ResponseFormat.JSON:
        return RenderedTranscript({"text": text, "credits_used": credits_used}, JSON_CONTENT_TYPE)
    if response_format is ResponseFormat.VERBOSE_JSON:
        body: dict[str, Any] = {
            "task": task.value,
            "language": result.language,
            "duration": result.duration,
            "text": text,
            "segments": [segment.model_dump() for segment in result.segments],
        }
        if diarized:  # each of Whisper's segments keeps its fields, and gains who speaks most of it
            for segment, speaker in zip(body["segments"], segment_speakers(result), strict=True):
                segment["speaker"] = speaker
        if include_words:
            body["words"] = [word.model_dump() for word in result.words or []]
        body["credits_used"] = credits_used
        return RenderedTranscript(body, JSON_CONTENT_TYPE)
    if response_format is ResponseFormat.TEXT:
        return RenderedTranscript(f"{text}\n", TEXT_CONTENT_TYPE)
    if response_format is ResponseFormat.SRT:
        return RenderedTranscript(to_srt(result.segments), TEXT_CONTENT_TYPE)
    return RenderedTranscript(to_vtt(result.segments), TEXT_CONTENT_TYPE)


def render_for(result: InferenceResult, options: TranscriptionOptions, *, credits_used: int) -> RenderedTranscript:
    """The transcript as the request's options ask for it: its format, its task, words when it asked for them."""
    return render_transcript(
        result,
        options.response_format,
        task=options.task,
        credits_used=credits_used,
        include_words=options.word_timestamps,
    )
