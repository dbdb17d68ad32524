"""Render a transcript in the response format the client asked for, as OpenAI's API does."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from infery.domain.diarization import DiarizedSegment, diarized_segments, segment_speakers
from infery.domain.errors import InvalidRequest
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


def _cue_lines(text: str) -> str:
    # a blank line ends a cue in both subtitle formats: the text's lines, stripped, without empty ones
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def _cue_text(text: str) -> str:
    # "-->" inside an srt cue would end it early (srt has no escapes)
    return _cue_lines(text).replace("-->", "->")


def _vtt_text(text: str) -> str:
    """WebVTT cue text: "&" and "<" start markup there, so they are escaped, and ">" too (valid everywhere, and
    needed in a voice span's name); escaped, "-->" no longer appears and is shown as written."""
    return html.escape(_cue_lines(text), quote=False)


# a cue: its start and end in seconds, and its text as written
Cue = tuple[float, float, str]


def _srt(cues: Iterable[Cue]) -> str:
    return "".join(
        f"{index}\n{format_timestamp(start, ',')} --> {format_timestamp(end, ',')}\n{text}\n\n"
        for index, (start, end, text) in enumerate(cues, start=1)
    )


def _vtt(cues: Iterable[Cue]) -> str:
    body = "".join(
        f"{format_timestamp(start, '.')} --> {format_timestamp(end, '.')}\n{text}\n\n" for start, end, text in cues
    )
    return f"WEBVTT\n\n{body}"


def to_srt(segments: list[Segment]) -> str:
    return _srt((segment.start, segment.end, _cue_text(segment.text)) for segment in segments)


def to_vtt(segments: list[Segment]) -> str:
    return _vtt((segment.start, segment.end, _vtt_text(segment.text)) for segment in segments)


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


def to_diarized_srt(pieces: list[DiarizedSegment]) -> str:
    """srt cues with the speaker before the text: "[A] Hello." (srt has no markup for a voice)."""
    return _srt(
        (piece.start, piece.end, f"[{piece.speaker.replace('-->', '->')}] {_cue_text(piece.text)}") for piece in pieces
    )


def to_diarized_vtt(pieces: list[DiarizedSegment]) -> str:
    """vtt cues with WebVTT's voice span: "<v A>Hello." The name is escaped as the text is (a raw ">" would end
    the span's annotation early, an "&" start an escape)."""
    return _vtt((piece.start, piece.end, f"<v {_vtt_text(piece.speaker)}>{_vtt_text(piece.text)}") for piece in pieces)


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
    result: InferenceResult,
    response_format: ResponseFormat,
    *,
    task: Task,
    credits_used: int,
    include_words: bool,
    include_logprobs: bool = False,
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
