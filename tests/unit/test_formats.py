from __future__ import annotations

import pytest
from infery.formats import JSON_CONTENT_TYPE, TEXT_CONTENT_TYPE, format_timestamp, render_transcript, to_srt, to_vtt
from infery.inference import InferenceResult, Segment, Task, Word
from infery.transcription_request import ResponseFormat

OPENAI_SEGMENT_FIELDS = {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                         "compression_ratio", "no_speech_prob"}


def _segment(index: int, start: float, end: float, text: str) -> Segment:
    return Segment(id=index, seek=0, start=start, end=end, text=text, tokens=[50363, 383], temperature=0.0,
                   avg_logprob=-0.3, compression_ratio=1.2, no_speech_prob=0.01)


SEGMENTS = [_segment(0, 0.0, 3.16, " Hello there."), _segment(1, 3.62, 3661.0075, " A --> B, then more. ")]
RESULT = InferenceResult(text=" Hello there. A --> B, then more.", language="en", duration=3662.0,
                         segments=SEGMENTS, words=[Word(word="Hello", start=0.0, end=0.4)])


@pytest.mark.parametrize(("seconds", "marker", "expected"), [
    (0, ",", "00:00:00,000"),
    (1.5, ",", "00:00:01,500"),
    (3661.007, ".", "01:01:01.007"),
    (59.9996, ".", "00:01:00.000"),
    (-0.2, ",", "00:00:00,000"),
    (360000.0, ",", "100:00:00,000"),
])
def test_format_timestamp(seconds, marker, expected):
    assert format_timestamp(seconds, marker) == expected


def test_srt_is_numbered_cues_separated_by_blank_lines():
    assert to_srt(SEGMENTS) == ("1\n00:00:00,000 --> 00:00:03,160\nHello there.\n\n"
                                "2\n00:00:03,620 --> 01:01:01,008\nA -> B, then more.\n\n")


def test_vtt_has_its_header_and_dotted_milliseconds():
    assert to_vtt(SEGMENTS) == ("WEBVTT\n\n00:00:00.000 --> 00:00:03.160\nHello there.\n\n"
                                "00:00:03.620 --> 01:01:01.008\nA -> B, then more.\n\n")


def test_json_is_text_and_credits_only():
    rendered = render_transcript(RESULT, ResponseFormat.JSON, task=Task.TRANSCRIBE, credits_used=733,
                                 include_words=True)
    assert rendered.content_type == JSON_CONTENT_TYPE
    assert rendered.body == {"text": "Hello there. A --> B, then more.", "credits_used": 733}


@pytest.mark.parametrize("include_words", [True, False])
def test_verbose_json_has_every_openai_field(include_words):
    rendered = render_transcript(RESULT, ResponseFormat.VERBOSE_JSON, task=Task.TRANSLATE, credits_used=5,
                                 include_words=include_words)
    body = rendered.body
    assert rendered.content_type == JSON_CONTENT_TYPE
    assert (body["task"], body["language"], body["duration"], body["credits_used"]) == ("translate", "en", 3662.0, 5)
    assert all(set(segment) == OPENAI_SEGMENT_FIELDS for segment in body["segments"])
    assert ("words" in body) is include_words
    if include_words:
        assert body["words"] == [{"word": "Hello", "start": 0.0, "end": 0.4}]


@pytest.mark.parametrize(("response_format", "expected"), [
    (ResponseFormat.TEXT, "Hello there. A --> B, then more.\n"),
    (ResponseFormat.SRT, to_srt(SEGMENTS)),
    (ResponseFormat.VTT, to_vtt(SEGMENTS)),
])
def test_text_formats_are_plain_text(response_format, expected):
    rendered = render_transcript(RESULT, response_format, task=Task.TRANSCRIBE, credits_used=1, include_words=False)
    assert rendered.content_type == TEXT_CONTENT_TYPE and rendered.body == expected


def test_no_speech_renders_empty_but_valid_documents():
    silent = InferenceResult(text="", language="en", duration=1.0, segments=[])
    assert render_transcript(silent, ResponseFormat.VTT, task=Task.TRANSCRIBE, credits_used=1,
                             include_words=False).body == "WEBVTT\n\n"
    assert render_transcript(silent, ResponseFormat.SRT, task=Task.TRANSCRIBE, credits_used=1,
                             include_words=False).body == ""
