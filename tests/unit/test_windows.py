"""Where a request's audio is cut into windows: at most 30 s each, every sample covered, cuts in the pauses."""

from __future__ import annotations

import numpy as np
import pytest
from windows import SAMPLE_RATE, VAD_FRAME, WINDOW_SECONDS, CutRules, Window, plan_windows


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


# --- a request's chunking_strategy (OpenAI's server_vad) ------------------------------------------------------------


def _first_cut(total: float, pauses: list[tuple[float, float]], rules: CutRules | None = None) -> float:
    audio, vad = _speech_with_pauses(total, pauses)
    windows = plan_windows(audio, vad, rules)
    _assert_covers_everything(windows, len(audio))
    return windows[0].end / SAMPLE_RATE


def test_the_defaults_are_the_engines_own_cuts() -> None:
    pauses = [(21.0, 22.5), (27.0, 27.4)]
    assert _first_cut(45, pauses, CutRules()) == _first_cut(45, pauses) == pytest.approx(21.75, abs=0.07)


def test_silence_duration_makes_the_latest_pause_that_long_the_cut() -> None:
    pauses = [(21.0, 22.5), (25.0, 25.5), (27.0, 27.4)]
    # 300 ms is enough: the latest such pause, the window as long as it can be
    rules = CutRules.from_milliseconds(threshold=0.5, prefix_padding_ms=0, silence_duration_ms=300)
    assert _first_cut(45, pauses, rules) == pytest.approx(27.2, abs=0.07)
    # 450 ms: the 400 ms pause is too short, the 500 ms one is not
    rules = CutRules.from_milliseconds(threshold=0.5, prefix_padding_ms=0, silence_duration_ms=450)
    assert _first_cut(45, pauses, rules) == pytest.approx(25.25, abs=0.07)
    # longer than any: the longest pause, as without a rule
    rules = CutRules.from_milliseconds(threshold=0.5, prefix_padding_ms=0, silence_duration_ms=5_000)
    assert _first_cut(45, pauses, rules) == pytest.approx(21.75, abs=0.07)


def test_prefix_padding_keeps_that_much_of_the_pause_before_the_next_speech() -> None:
    pauses = [(24.0, 26.0)]
    padded = CutRules.from_milliseconds(threshold=0.5, prefix_padding_ms=1_500, silence_duration_ms=200)
    assert _first_cut(45, pauses, padded) == pytest.approx(24.5, abs=0.07)
    # a padding longer than the pause: the cut goes to the pause's start, never into the speech before it
    whole = CutRules.from_milliseconds(threshold=0.5, prefix_padding_ms=5_000, silence_duration_ms=200)
    assert _first_cut(45, pauses, whole) == pytest.approx(24.0, abs=0.07)


def test_the_threshold_decides_which_frames_are_a_pause() -> None:
    # a murmur the VAD scores 0.4 from 22 s to 23 s, clean silence (0.02) at 27.0-27.3 s
    audio = np.zeros(45 * SAMPLE_RATE, dtype=np.float32)

    def vad(samples: np.ndarray) -> np.ndarray:
        frames = -(-len(samples) // VAD_FRAME)
        times = (np.arange(frames) * VAD_FRAME + VAD_FRAME / 2) / SAMPLE_RATE
        return np.select([(times >= 22) & (times < 23), (times >= 27) & (times < 27.3)], [0.4, 0.02], 0.95)

    strict = plan_windows(audio, vad, CutRules.from_milliseconds(0.3, 0, 200))[0].end / SAMPLE_RATE
    loose = plan_windows(audio, vad, CutRules.from_milliseconds(0.5, 0, 800))[0].end / SAMPLE_RATE
    assert strict == pytest.approx(27.15, abs=0.1)  # the murmur is speech under 0.3
    assert loose == pytest.approx(22.5, abs=0.1)  # and a pause under 0.5
