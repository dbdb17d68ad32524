"""How a window's tokens become segments, what counts as a decoding loop, and the context pass's rules. The model
itself is exercised by the integration and end-to-end suites."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from decoding import BatchDecoder, DecodeOptions, DecodingConfig, drops_words, repeats_in_a_row, split_window
from windows import SAMPLE_RATE, Window

# --- split_window ----------------------------------------------------------------------------------------------

BEGIN, EOT = 1000, 999
WORDS = {1: " Hello", 2: " world.", 3: " And", 4: " more"}


def _tokenizer() -> SimpleNamespace:
    return SimpleNamespace(
        timestamp_begin=BEGIN, eot=EOT, decode=lambda tokens: "".join(WORDS[token] for token in tokens)
    )


MODEL = SimpleNamespace(frames_per_second=100, time_precision=0.02)


def _ts(seconds: float) -> int:
    return BEGIN + round(seconds / 0.02)


def _split(tokens: list[int], window: Window):
    return split_window(MODEL, _tokenizer(), tokens, window, avg_logprob=-0.2, no_speech_prob=0.01, temperature=0.0)


def test_segments_are_placed_on_the_original_timeline() -> None:
    window = Window(2, 60 * SAMPLE_RATE, 85 * SAMPLE_RATE)
    segments = _split([_ts(0.0), 1, 2, _ts(2.4), _ts(3.0), 3, 4, _ts(5.0)], window)
    assert [(segment.start, segment.end, segment.text) for segment in segments] == [
        (60.0, 62.4, " Hello world."),
        (63.0, 65.0, " And more"),
    ]
    assert all(segment.seek == 6000 for segment in segments)


def test_the_unfinished_last_segment_of_a_window_is_kept_to_the_windows_end() -> None:
    # faster-whisper's batched path drops the tokens after the last closing timestamp; sequential decoding
    # would decode them again from there. Here they are the last segment.
    window = Window(0, 0, 30 * SAMPLE_RATE)
    segments = _split([_ts(0.0), 1, 2, _ts(2.4), _ts(28.5), 3, 4], window)
    assert [segment.text for segment in segments] == [" Hello world.", " And more"]
    assert (segments[-1].start, segments[-1].end) == (28.5, 30.0)


def test_text_without_any_timestamp_is_one_segment_over_the_whole_window() -> None:
    window = Window(0, 0, 12 * SAMPLE_RATE)
    segments = _split([1, 2, 3], window)
    assert [(segment.start, segment.end, segment.text) for segment in segments] == [(0.0, 12.0, " Hello world. And")]


def test_a_window_of_silence_gives_no_segment() -> None:
    assert _split([_ts(0.0), _ts(30.0)], Window(0, 0, 30 * SAMPLE_RATE)) == []


# --- what counts as a decoding loop -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Please send the report to the Phi Phi Phi Phi Phi.",
        "We will meet on Friday. We will meet on Friday. We will meet on Friday.",
        "thank you thank you thank you",
    ],
)
def test_a_phrase_said_again_and_again_in_a_row_is_a_loop(text):
    assert repeats_in_a_row(text)


@pytest.mark.parametrize(
    "text",
    [
        # similar sentences compress well (Whisper's 2.4 ratio trips on them) but are not a loop
        "The security team will review the budget on Monday, the design team will review the proposal on Monday, "
        "the support team will review the report on Tuesday, the sales team will review the roadmap on Tuesday.",
        "We will meet on Friday. We will meet on Friday.",  # said twice, as people do
        "no no no no",
    ],
)
def test_similar_or_twice_said_sentences_are_not_a_loop(text):
    assert not repeats_in_a_row(text)


# --- the context pass ------------------------------------------------------------------------------------------


def test_a_context_decode_that_changes_words_is_kept() -> None:
    before = "Please send your comments to the fire and steam my Friday."
    assert not drops_words(before, "Please send your comments to the finance team by Friday.")


def test_a_context_decode_that_skips_a_repeated_sentence_is_not_used() -> None:
    said = "Please send your comments to the finance team by Friday. "
    assert drops_words(said * 2 + "The last item is the party.", said + "The last item is the party.")
    assert drops_words(said, "")
    assert drops_words("one two three four", "four four four four four four")  # a loop the first pass had not


def test_a_batch_with_a_first_window_is_decoded_with_the_full_beam() -> None:
    config = DecodingConfig(beam_size=5, first_pass_beam_size=1, context_pass=True)
    decoder = BatchDecoder(SimpleNamespace(), config)
    source = SimpleNamespace(audio=np.zeros(1), options=DecodeOptions(language="en"), tokenizer=None, context={})
    assert decoder._first_beam([(source, Window(0, 0, 1)), (source, Window(1, 1, 2))]) == 5
    assert decoder._first_beam([(source, Window(2, 0, 1)), (source, Window(3, 1, 2))]) == 1
    without_context = BatchDecoder(SimpleNamespace(), DecodingConfig(beam_size=5, first_pass_beam_size=1))
    assert without_context._first_beam([(source, Window(2, 0, 1))]) == 5
