"""Render a transcript in the response format the client asked for, as OpenAI's API does."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from infery.domain.inference import InferenceResult, Segment, Task
from infery.domain.transcription import ResponseFormat, TranscriptionOptions

TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
EVENT_STREAM_CONTENT_TYPE = "text/event-stream; charset=utf-8"


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


def _logprobs(result: InferenceResult, segment_id: int | None = None) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs`` items, of one segment or of all."""
    return [
        item.model_dump(exclude={"segment"})
        for item in result.logprobs or []
        if segment_id is None or item.segment == segment_id
    ]


def _sse(event: dict[str, Any]) -> str:
    # one data line per event: json.dumps escapes every line break, so an event never spans lines
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


def to_event_stream(result: InferenceResult, *, credits_used: int, include_logprobs: bool) -> str:
    """OpenAI's transcription stream: a ``transcript.text.delta`` per segment in order (the first without its
    leading space), then ``transcript.text.done`` with the whole text and the usage. The deltas joined are the done
    event's text. Usage is the audio's duration, what is billed; ``credits_used`` is ours, as in the json body."""
    events: list[dict[str, Any]] = []
    written = ""
    for segment in result.segments:
        delta = segment.text if written else segment.text.lstrip()
        if not delta:
            continue
        written += delta
        event: dict[str, Any] = {"type": "transcript.text.delta", "delta": delta}
        if include_logprobs:
            event["logprobs"] = _logprobs(result, segment.id)
        events.append(event)
    done: dict[str, Any] = {"type": "transcript.text.done", "text": written.rstrip()}
    if include_logprobs:
        done["logprobs"] = _logprobs(result)
    done["usage"] = {"type": "duration", "seconds": result.duration}
    done["credits_used"] = credits_used
    events.append(done)
    return "".join(_sse(event) for event in events)


def render_transcript(
    result: InferenceResult,
    response_format: ResponseFormat,
    *,
    task: Task,
    credits_used: int,
    include_words: bool,
    include_logprobs: bool = False,
) -> RenderedTranscript:
    text = result.text.strip()
    if response_format is ResponseFormat.JSON:
        body: dict[str, Any] = {"text": text}
        if include_logprobs:
            body["logprobs"] = _logprobs(result)
        body["credits_used"] = credits_used
        return RenderedTranscript(body, JSON_CONTENT_TYPE)
    if response_format is ResponseFormat.VERBOSE_JSON:
        body = {
            "task": task.value,
            "language": result.language,
            "duration": result.duration,
            "text": text,
            "segments": [segment.model_dump() for segment in result.segments],
        }
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
    """The transcript as the request's options ask for it: its format (or a stream of events), its task, words and
    log probabilities when it asked for them."""
    if options.stream:  # the same events whether json or text was asked (logprobs come with json only)
        events = to_event_stream(result, credits_used=credits_used, include_logprobs=options.logprobs)
        return RenderedTranscript(events, EVENT_STREAM_CONTENT_TYPE)
    return render_transcript(
        result,
        options.response_format,
        task=options.task,
        credits_used=credits_used,
        include_words=options.word_timestamps,
        include_logprobs=options.logprobs,
    )
