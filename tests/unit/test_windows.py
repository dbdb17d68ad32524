"""Where a request's audio is cut into windows: at most 30 s each, every sample covered, cuts in the pauses."""

from __future__ import annotations

import numpy as np
import pytest
from windows import SAMPLE_RATE, VAD_FRAME, WINDOW_SECONDS, Window, plan_windows


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
