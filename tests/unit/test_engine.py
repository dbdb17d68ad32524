"""The batched engine's pure parts: where windows are cut, how a window's tokens become segments, batch order,
and the bounds on decoding. The model itself is exercised by the integration and end-to-end suites."""

from __future__ import annotations

import threading
import time
from collections import deque
from types import SimpleNamespace

import engine
import numpy as np
import pytest
from audio_input import AudioLimits, AudioRefused, decode
from engine import (
    SAMPLE_RATE,
    VAD_FRAME,
    WINDOW_SECONDS,
    BatchedEngine,
    DecodeOptions,
    RecentLoad,
    Window,
    WindowBatcher,
    _Ticket,
    batch_is_ready,
    drops_words,
    plan_windows,
    repeats_in_a_row,
    split_window,
)

from tests.support.speech import one_hertz_wav, silent_wav

# --- plan_windows ----------------------------------------------------------------------------------------------


def _speech_with_pauses(total_seconds: float, pauses: list[tuple[float, float]]):
    """Audio of the given length, and a VAD stand-in that calls everything speech except the pauses."""
    audio = np.zeros(int(total_seconds * SAMPLE_RATE), dtype=np.float32)

    def probabilities(samples: np.ndarray) -> np.ndarray:
        frames = -(-len(samples) // VAD_FRAME)
        times = (np.arange(frames) * VAD_FRAME + VAD_FRAME / 2) / SAMPLE_RATE
        silent = np.zeros(frames, dtype=bool)
        for start, end in pauses:
            silent |= (times >= start) & (times < end)
        return np.where(silent, 0.02, 0.95)

    return audio, probabilities


def _assert_covers_everything(windows: list[Window], total_samples: int) -> None:
    assert windows[0].start == 0 and windows[-1].end == total_samples
    for earlier, later in zip(windows, windows[1:], strict=False):
        assert earlier.end == later.start  # contiguous: no sample dropped, none decoded twice
    assert all(0 < window.end - window.start <= WINDOW_SECONDS * SAMPLE_RATE for window in windows)
    assert [window.index for window in windows] == list(range(len(windows)))


def test_short_audio_is_one_window_without_running_the_vad() -> None:
    audio = np.zeros(int(29.9 * SAMPLE_RATE), dtype=np.float32)

    def no_vad(_: np.ndarray) -> np.ndarray:
        raise AssertionError("the VAD is not needed for one window")

    assert plan_windows(audio, no_vad) == [Window(0, 0, len(audio))]


def test_windows_are_cut_in_the_middle_of_the_pauses() -> None:
    audio, vad = _speech_with_pauses(95, [(24.0, 25.0), (50.0, 52.0), (77.0, 77.6)])
    windows = plan_windows(audio, vad)
    _assert_covers_everything(windows, len(audio))
    cuts = [window.end / SAMPLE_RATE for window in windows[:-1]]
    assert cuts == pytest.approx([24.5, 51.0, 77.3], abs=0.07)


def test_the_longest_pause_wins_and_a_later_one_breaks_a_tie() -> None:
    audio, vad = _speech_with_pauses(45, [(21.0, 21.3), (23.0, 24.0), (27.0, 28.0)])
    first_cut = plan_windows(audio, vad)[0].end / SAMPLE_RATE
    assert first_cut == pytest.approx(27.5, abs=0.07)


def test_speech_without_any_pause_is_still_covered_in_windows_of_at_most_30_s() -> None:
    audio, vad = _speech_with_pauses(100, [])
    windows = plan_windows(audio, vad)
    _assert_covers_everything(windows, len(audio))
    assert len(windows) == 4


def test_a_pause_before_the_search_region_is_not_used() -> None:
    # a pause at 5 s would give a 5-second window: cuts are looked for in a window's last third only
    audio, vad = _speech_with_pauses(50, [(5.0, 7.0)])
    windows = plan_windows(audio, vad)
    _assert_covers_everything(windows, len(audio))
    assert windows[0].end / SAMPLE_RATE >= 20


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


# --- the batcher's order -----------------------------------------------------------------------------------------


def _ticket(windows: int, options: DecodeOptions) -> _Ticket:
    return _Ticket(
        audio=np.zeros(1, dtype=np.float32),
        options=options,
        tokenizer=None,  # type: ignore[arg-type]
        pending=deque(Window(index, 0, 1) for index in range(windows)),
        done=threading.Condition(),
    )


def test_a_batch_takes_windows_round_robin_across_requests_with_the_same_options() -> None:
    batcher = WindowBatcher(SimpleNamespace(), batch_size=4)  # type: ignore[arg-type]
    batcher.stop()  # its thread is not needed to see the order it would decode in
    english = DecodeOptions(language="en")
    long_file, short_request, other_options = (
        _ticket(10, english),
        _ticket(1, english),
        _ticket(2, DecodeOptions(language="en", word_timestamps=True)),
    )
    for ticket in (long_file, short_request, other_options):
        batcher._tickets[id(ticket)] = ticket
    first = batcher._take_round_robin()
    assert [(ticket is short_request, window.index) for ticket, window in first] == [
        (False, 0),
        (True, 0),
        (False, 1),
        (False, 2),
    ]
    # the long file was served first, so the next batch starts with the next request in line
    second = batcher._take_round_robin()
    assert {ticket.options for ticket, _ in second} == {other_options.options}
    assert len(second) == 2


def ready(windows: int, requests: int, waited_ms: float, expected: int) -> bool:
    return batch_is_ready(
        windows=windows,
        requests=requests,
        waited=waited_ms / 1000,
        batch_size=8,
        expected_requests=expected,
        max_wait=0.010,
        max_gather=0.200,
    )


def test_a_full_batch_goes_at_once() -> None:
    assert ready(windows=8, requests=1, waited_ms=0, expected=4)


def test_a_request_without_recent_company_waits_only_the_short_wait() -> None:
    assert not ready(windows=1, requests=1, waited_ms=5, expected=1)
    assert ready(windows=1, requests=1, waited_ms=10, expected=1)


def test_fewer_requests_than_were_served_together_lately_are_given_longer_to_gather() -> None:
    assert not ready(windows=2, requests=1, waited_ms=10, expected=4)
    assert not ready(windows=6, requests=3, waited_ms=150, expected=4)
    assert ready(windows=8 - 1, requests=4, waited_ms=10, expected=4)  # all the company is here
    assert ready(windows=2, requests=1, waited_ms=200, expected=4)  # but never longer than the gather limit


def test_a_request_is_in_flight_from_handing_its_windows_over_until_it_leaves_and_then_frees_the_batcher() -> None:
    batcher = WindowBatcher(SimpleNamespace())  # type: ignore[arg-type]
    batcher.stop()
    first, second = _ticket(3, DecodeOptions(language="en")), _ticket(1, DecodeOptions(language="en"))
    with batcher.serving(first):
        with pytest.raises(ValueError, match="failed"), batcher.serving(second):
            assert batcher._serving == 2 and list(batcher._tickets.values()) == [first, second]
            raise ValueError("failed while waiting")
        assert batcher._serving == 1 and second.cancelled and not first.cancelled
    assert batcher._serving == 0 and first.cancelled  # its remaining windows are dropped, not decoded
    assert batcher.load.expected() == 2


def test_the_expected_company_is_the_most_in_flight_at_once_within_the_memory() -> None:
    now = [100.0]
    load = RecentLoad(memory_seconds=5.0, clock=lambda: now[0])
    assert load.expected() == 1  # nothing served yet: a request alone
    load.record(1)
    load.record(4)
    now[0] += 3
    load.record(2)
    assert load.expected() == 4
    now[0] += 2.5  # the batch of 4 is more than 5 s old, the batch of 2 is not
    assert load.expected() == 2
    now[0] += 10
    assert load.expected() == 1


class _CountingBatcher(WindowBatcher):
    """Decodes every window to nothing, slowly enough that requests overlap, and notes each batch's size."""

    def __init__(self) -> None:
        # a gather limit far above the 60 ms the requests are spread over: a busy machine does not split them
        super().__init__(SimpleNamespace(), max_gather_ms=1000)  # type: ignore[arg-type]
        self.sizes: list[int] = []

    def _decode(self, batch: list[tuple[_Ticket, Window]]) -> list[list]:
        self.sizes.append(len(batch))
        time.sleep(0.3)
        return [[] for _ in batch]


def test_requests_sent_together_that_reach_the_model_apart_share_one_batch_once_seen_in_flight_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by benchmarks.stack_vs_model: 4 requests sent at once reach the model tens of milliseconds apart, and
    the batcher, taught by the batches they ended up in, kept splitting them (2 + 2, 3 + 1)."""
    monkeypatch.setattr(engine, "Tokenizer", lambda *args, **kwargs: None)
    model = SimpleNamespace(hf_tokenizer=None, model=SimpleNamespace(is_multilingual=False))
    whisper = BatchedEngine(model)  # type: ignore[arg-type]
    whisper.batcher.stop()
    whisper.batcher = batcher = _CountingBatcher()
    half_a_second = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)  # one window, too short for a tail re-decode

    def send_four_20_ms_apart() -> list[int]:
        decoded_before = len(batcher.sizes)
        threads = [
            threading.Thread(target=lambda: list(whisper.stream(half_a_second, DecodeOptions(language="en"))))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
            time.sleep(0.02)  # more than the batcher's 10 ms wait: each could go alone
        for thread in threads:
            thread.join(timeout=10)
        return batcher.sizes[decoded_before:]

    try:
        first = send_four_20_ms_apart()
        assert sum(first) == 4
        assert send_four_20_ms_apart() == [4]  # the 4 were in flight at once: the batcher now waits for all of them
    finally:
        whisper.close(timeout=5)


def test_the_batcher_gathers_within_its_limits() -> None:
    batcher = WindowBatcher(SimpleNamespace(), max_wait_ms=10, max_gather_ms=5)  # type: ignore[arg-type]
    batcher.stop()
    assert (batcher.max_wait, batcher.max_gather) == (0.010, 0.010)  # a gather limit never shorter than the wait


# --- bounded decoding --------------------------------------------------------------------------------------------


def test_a_wav_that_says_1_hz_is_refused_before_decoding() -> None:
    with pytest.raises(AudioRefused) as refused:
        decode(one_hertz_wav(4000), AudioLimits())
    assert refused.value.code == "sample_rate_too_low"
    assert "8000 Hz" in refused.value.message


def test_audio_over_the_maximum_duration_is_refused() -> None:
    with pytest.raises(AudioRefused) as refused:
        decode(silent_wav(8000, 12), AudioLimits(max_seconds=10))
    assert refused.value.code == "audio_too_long"


def test_audio_at_the_limits_is_decoded_to_16_khz() -> None:
    samples = decode(silent_wav(8000, 10), AudioLimits(max_seconds=10))
    assert len(samples) == pytest.approx(10 * SAMPLE_RATE, abs=SAMPLE_RATE * 0.05)
    assert samples.dtype == np.float32


def test_bytes_that_are_not_audio_are_refused_without_pyavs_own_words() -> None:
    with pytest.raises(AudioRefused) as refused:
        decode(b"this is not audio at all " * 50, AudioLimits())
    assert refused.value.code == "undecodable_audio"
    assert "Errno" not in refused.value.message and "[" not in refused.value.message


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
    batcher = WindowBatcher(SimpleNamespace(), beam_size=5, first_pass_beam_size=1, context_pass=True)  # type: ignore[arg-type]
    try:
        ticket = _Ticket(audio=np.zeros(1), options=DecodeOptions(language="en"), tokenizer=None, pending=deque())  # type: ignore[arg-type]
        assert batcher._first_beam([(ticket, Window(0, 0, 1)), (ticket, Window(1, 1, 2))]) == 5
        assert batcher._first_beam([(ticket, Window(2, 0, 1)), (ticket, Window(3, 1, 2))]) == 1
        batcher.context_pass = False
        assert batcher._first_beam([(ticket, Window(2, 0, 1))]) == 5
    finally:
        batcher.stop()
