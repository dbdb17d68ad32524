"""Window planning: the 30-second windows that cover a request's audio end to end, cut in the middle of pauses.

Silero VAD (shipped with faster-whisper) only chooses *where* to cut, never what to keep, so quiet speech the VAD
misjudges is still decoded.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from faster_whisper.vad import get_vad_model

SAMPLE_RATE = 16_000
WINDOW_SECONDS = 30.0
# A cut is placed in the last third of a window: windows stay long (fewer of them), and a pause is found.
SEARCH_FROM_SECONDS = 20.0
VAD_FRAME = 512  # samples per Silero VAD probability (32 ms)
SILENCE_PROBABILITY = 0.3
SPEECH_PROBABILITY = 0.5


@dataclass(frozen=True)
class CutRules:
    """Where in a window's last third a cut goes. The defaults: the middle of the longest pause, a pause being
    frames whose smoothed speech probability is under 0.3. A request's ``chunking_strategy`` (OpenAI's server_vad)
    sets the three values: ``threshold`` is the probability under which a frame is a pause; ``silence_duration_ms``
    makes the latest pause at least that long the cut (the window as long as it can be), the longest pause when
    none is; ``prefix_padding_ms`` keeps at least that much of the pause before the speech after the cut."""

    silence_probability: float = SILENCE_PROBABILITY
    # None: the longest pause; a number of frames: the latest pause at least this long
    min_pause_frames: int | None = None
    prefix_padding_frames: int = 0

    @classmethod
    def from_milliseconds(cls, threshold: float, prefix_padding_ms: int, silence_duration_ms: int) -> CutRules:
        frame_ms = VAD_FRAME * 1000 / SAMPLE_RATE
        return cls(
            silence_probability=threshold,
            min_pause_frames=max(1, round(silence_duration_ms / frame_ms)),
            prefix_padding_frames=round(prefix_padding_ms / frame_ms),
        )


@dataclass
class Window:
    index: int
    start: int  # sample offsets into the request's audio
    end: int

    @property
    def offset(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def duration(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


def plan_windows(
    audio: np.ndarray,
    speech_probabilities: Callable[[np.ndarray], np.ndarray] | None = None,
    rules: CutRules | None = None,
) -> list[Window]:
    """Windows of at most 30 s that together cover every sample, each cut in a pause (``rules``: where)."""
    total = len(audio)
    window_samples = int(WINDOW_SECONDS * SAMPLE_RATE)
    if total <= window_samples:
        return [Window(0, 0, total)]
    probabilities = (speech_probabilities or silero_speech_probabilities)(audio)
    windows: list[Window] = []
    start = 0
    while total - start > window_samples:
        end = _cut_point(probabilities, start, start + window_samples, rules or CutRules())
        windows.append(Window(len(windows), start, end))
        start = end
    windows.append(Window(len(windows), start, total))
    return windows


def silero_speech_probabilities(audio: np.ndarray) -> np.ndarray:
    """One speech probability per 32 ms frame."""
    padded = np.pad(audio, (0, -len(audio) % VAD_FRAME))
    return np.asarray(get_vad_model()(padded)).reshape(-1)


def _cut_point(probabilities: np.ndarray, start: int, limit: int, rules: CutRules) -> int:
    """A cut in a pause in [start + 20 s, limit) as ``rules`` place it; the quietest frame when none is silent."""
    first = -(-(start + int(SEARCH_FROM_SECONDS * SAMPLE_RATE)) // VAD_FRAME)
    last = limit // VAD_FRAME  # a frame must end before the limit
    region = probabilities[first:last]
    if len(region) == 0:
        return limit
    return min(limit, (first + pause_frame(region, rules)) * VAD_FRAME)


def pause_frame(region: np.ndarray, rules: CutRules) -> int:
    """The frame of ``region`` (speech probabilities, one a VAD frame) where a cut goes: the middle of the longest
    pause (``rules`` may prefer another), the quietest frame when none is silent. Window cuts and a long job's part
    edges both use it."""
    # smoothed over ~100 ms, so a single quiet frame inside a word is not taken for a pause
    smoothed = np.convolve(region, np.ones(3) / 3, mode="same")
    pauses = _pauses(smoothed < rules.silence_probability)
    if not pauses:  # no pause at all: the quietest frame, the latest of equals
        return len(smoothed) - 1 - int(np.argmin(smoothed[::-1]))
    long_enough = [pause for pause in pauses if rules.min_pause_frames and pause[1] >= rules.min_pause_frames]
    if long_enough:
        pause_start, length = long_enough[-1]
    else:  # ties go to the later pause: longer windows
        pause_start, length = max(reversed(pauses), key=lambda pause: pause[1])
    # the middle of the pause, unless that leaves less than the padding before the speech after it
    return max(pause_start, min(pause_start + length // 2, pause_start + length - rules.prefix_padding_frames))


def _pauses(silent: np.ndarray) -> list[tuple[int, int]]:
    """(first frame, length) of each run of silent frames, in order."""
    found: list[tuple[int, int]] = []
    run_start = None
    for position, is_silent in enumerate(itertools.chain(silent, [False])):
        if is_silent and run_start is None:
            run_start = position
        elif not is_silent and run_start is not None:
            found.append((run_start, position - run_start))
            run_start = None
    return found


class LazySpeech:
    """Speech probabilities of one request's audio, computed once and only when something needs them."""

    def __init__(self, audio: np.ndarray) -> None:
        self._audio = audio
        self._probabilities: np.ndarray | None = None

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        if self._probabilities is None:
            self._probabilities = silero_speech_probabilities(self._audio)
        return self._probabilities

    def has_speech(self, start: int, end: int, min_seconds: float) -> bool:
        frames = self.probabilities(self._audio)[start // VAD_FRAME : -(-end // VAD_FRAME)]
        return float(np.sum(frames >= SPEECH_PROBABILITY)) * VAD_FRAME / SAMPLE_RATE >= min_seconds
