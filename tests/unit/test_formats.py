"""formats: timestamps, SRT/VTT documents and every response_format, as OpenAI renders them."""

from __future__ import annotations

import json

import pytest
from infery.domain.formats import (
    JSON_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    format_timestamp,
    render_transcript,
    to_srt,
    to_vtt,
)
from infery.domain.inference import Task, Word
from infery.domain.transcription import ResponseFormat

from tests.support.builders import OPENAI_SEGMENT_FIELDS, inference_result, segment

SEGMENTS = [segment(0, 0.0, 3.16, " Hello there."), segment(1, 3.62, 3661.0075, "  A --> B, then more. \n")]
WORDS = [Word(word=" Hello", start=0.0, end=0.42), Word(word=" there.", start=0.42, end=3.16)]
RESULT = inference_result(" Hello there. A --> B, then more.\n", SEGMENTS, words=WORDS, duration=3662.25)


@pytest.mark.parametrize(
    ("seconds", "comma", "dot"),
    [
        (0, "00:00:00,000", "00:00:00.000"),
        (1.5, "00:00:01,500", "00:00:01.500"),
        (3661.007, "01:01:01,007", "01:01:01.007"),
        (59.9996, "00:01:00,000", "00:01:00.000"),  # rounding carries into the minutes
        (1.0004, "00:00:01,000", "00:00:01.000"),
        (1.0006, "00:00:01,001", "00:00:01.001"),
        (3599.9999, "01:00:00,000", "01:00:00.000"),
        (-0.2, "00:00:00,000", "00:00:00.000"),  # never negative
        (-3600, "00:00:00,000", "00:00:00.000"),
        (360_000.0, "100:00:00,000", "100:00:00.000"),
    ],
)
def test_format_timestamp_with_both_decimal_markers(seconds, comma, dot):
    assert format_timestamp(seconds, ",") == comma
    assert format_timestamp(seconds, ".") == dot


def test_srt_numbers_cues_from_one_with_a_blank_line_after_each():
    assert to_srt(SEGMENTS) == (
        "1\n"
        "00:00:00,000 --> 00:00:03,160\n"
        "Hello there.\n"
        "\n"
        "2\n"
        "00:00:03,620 --> 01:01:01,008\n"
        "A -> B, then more.\n"  # stripped, and its "-->" cannot end the cue early
        "\n"
    )


def test_vtt_has_its_header_dotted_milliseconds_and_no_cue_numbers():
    assert to_vtt(SEGMENTS) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:03.160\nHello there.\n\n00:00:03.620 --> 01:01:01.008\n"
        "A --&gt; B, then more.\n\n"  # escaped, the arrow is shown as said and cannot end the cue
    )


def test_vtt_escapes_what_starts_markup_and_srt_keeps_the_text_as_said():
    said = [segment(0, 0.0, 2.0, " AT&T's <b>price</b> rose > 5% & fell < 3%.")]
    assert to_vtt(said).splitlines()[3] == "AT&amp;T's &lt;b&gt;price&lt;/b&gt; rose &gt; 5% &amp; fell &lt; 3%."
    assert to_srt(said).splitlines()[2] == "AT&T's <b>price</b> rose > 5% & fell < 3%."


@pytest.mark.parametrize("to_subtitles", [to_srt, to_vtt])
def test_a_blank_line_in_a_segments_text_never_ends_its_cue_early(to_subtitles):
    text = to_subtitles([segment(0, 0.0, 2.0, " First line.\n\n  \nSecond line.\n")])
    assert text.endswith("First line.\nSecond line.\n\n") and "\n\n" not in text.rstrip("\n").split("--> ")[-1]


def test_no_segments_are_an_empty_srt_and_a_header_only_vtt():
    assert to_srt([]) == ""
    assert to_vtt([]) == "WEBVTT\n\n"


def render(
    response_format: ResponseFormat,
    *,
    task: Task = Task.TRANSCRIBE,
    credits_used: int = 3,
    include_words: bool = False,
    result=RESULT,
):
    return render_transcript(result, response_format, task=task, credits_used=credits_used, include_words=include_words)


@pytest.mark.parametrize(
    ("response_format", "content_type"),
    [
        (ResponseFormat.JSON, "application/json"),
        (ResponseFormat.VERBOSE_JSON, "application/json"),
        (ResponseFormat.TEXT, "text/plain; charset=utf-8"),
        (ResponseFormat.SRT, "text/plain; charset=utf-8"),
        (ResponseFormat.VTT, "text/plain; charset=utf-8"),
    ],
)
def test_each_format_has_its_content_type(response_format, content_type):
    rendered = render(response_format)
    assert rendered.content_type == content_type
    assert isinstance(rendered.body, dict) is (content_type == JSON_CONTENT_TYPE)
    assert isinstance(rendered.body, str) is (content_type == TEXT_CONTENT_TYPE)


def test_json_is_exactly_the_stripped_text_and_the_credits_used():
    assert render(ResponseFormat.JSON, credits_used=733, include_words=True).body == {
        "text": "Hello there. A --> B, then more.",
        "credits_used": 733,
    }


@pytest.mark.parametrize("task", list(Task))
def test_verbose_json_has_every_openai_field(task):
    body = render(ResponseFormat.VERBOSE_JSON, task=task, credits_used=5).body
    assert list(body) == ["task", "language", "duration", "text", "segments", "credits_used"]
    assert (body["task"], body["language"], body["duration"]) == (task.value, "en", 3662.25)
    assert body["text"] == "Hello there. A --> B, then more."
    assert body["credits_used"] == 5
    assert [set(item) for item in body["segments"]] == [OPENAI_SEGMENT_FIELDS] * 2
    assert body["segments"][1] == {
        "id": 1,
        "seek": 3000,
        "start": 3.62,
        "end": 3661.0075,
        "text": "  A --> B, then more. \n",
        "tokens": [50363, 384],
        "temperature": 0.0,
        "avg_logprob": -0.25,
        "compression_ratio": 1.4,
        "no_speech_prob": 0.02,
    }
    json.dumps(body)  # what the handler sends must serialise as is


def test_verbose_json_has_words_only_when_asked_for():
    without = render(ResponseFormat.VERBOSE_JSON, include_words=False).body
    with_words = render(ResponseFormat.VERBOSE_JSON, include_words=True).body
    assert "words" not in without
    assert with_words["words"] == [
        {"word": " Hello", "start": 0.0, "end": 0.42},
        {"word": " there.", "start": 0.42, "end": 3.16},
    ]
    assert list(with_words)[-2:] == ["words", "credits_used"]


def test_verbose_json_words_asked_for_but_none_returned_is_an_empty_list():
    no_words = inference_result("Hi.", [segment(0, 0.0, 1.0, "Hi.")], words=None)
    assert render(ResponseFormat.VERBOSE_JSON, include_words=True, result=no_words).body["words"] == []


@pytest.mark.parametrize("text", ["Hello there.", " Hello there. ", "\nHello there.\n\n"])
def test_text_is_the_stripped_transcript_and_one_newline(text):
    rendered = render(ResponseFormat.TEXT, result=inference_result(text, SEGMENTS))
    assert rendered.body == "Hello there.\n"


@pytest.mark.parametrize(
    ("response_format", "document"),
    [
        (ResponseFormat.SRT, to_srt(SEGMENTS)),
        (ResponseFormat.VTT, to_vtt(SEGMENTS)),
    ],
)
def test_subtitle_formats_render_the_segments(response_format, document):
    assert render(response_format).body == document


def test_silence_renders_empty_but_valid_documents():
    silence = inference_result("", [], duration=1.0)
    assert render(ResponseFormat.JSON, result=silence).body == {"text": "", "credits_used": 3}
    assert render(ResponseFormat.TEXT, result=silence).body == "\n"
    assert render(ResponseFormat.SRT, result=silence).body == ""
    assert render(ResponseFormat.VTT, result=silence).body == "WEBVTT\n\n"
    assert render(ResponseFormat.VERBOSE_JSON, result=silence).body["segments"] == []
