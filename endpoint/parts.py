"""One part of a long job's audio: found by its two cuts, and decoded alone.

A job of hours is transcribed as parts, each its own request, on whichever instances are free. Two neighbouring
parts must meet at the same instant, in a pause, or a word at their edge is lost or heard twice. So a cut is never
found from a part's own decode (the part before it reaches it after minutes of continuous decoding, the part after
it starts there): each of the two parts decodes the same stretch around the nominal edge, the same way (the same
seek, the same samples kept by their timestamps), and runs the same pause rule on it. The same bytes and the same
code give the same cut, bit for bit. Then the part decodes only from its first cut to its last, so it holds its
own samples and never the file's.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from audio_input import SAMPLE_RATE, AudioLimits, AudioRefused, decode_stretch
from infery.domain.inference import AudioPart
from windows import VAD_FRAME, CutRules, pause_frame, silero_speech_probabilities

Probabilities = Callable[[np.ndarray], np.ndarray]
# Part edges are cut by the engine's default rule, whatever a request's chunking_strategy says: two parts agree on
# a cut only if they choose it by the same rule, and the rule is the server's, not the request's.
EDGE_RULES = CutRules()


@dataclass(frozen=True)
class Cut:
    """Where a part edge lies on the file's timeline; ``file_end``: the file ends before the edge's search does, so
    the edge is the file's end (the part before it reads to the end, the part after it is empty)."""

    at: float
    file_end: bool = False


@dataclass(frozen=True)
class PartAudio:
    """A part's samples and where they lie on the file's timeline: from ``start`` to ``end``. A part past the file's
    end has no samples, and starts where the file ended, or where its search began when the file ended before that
    (the end is not looked for further back)."""

    samples: np.ndarray
    start: float
    end: float


def find_cut(
    data: bytes | io.IOBase,
    nominal: float,
    search_seconds: float,
    limits: AudioLimits,
    cancelled: Callable[[], bool] = lambda: False,
    speech_probabilities: Probabilities = silero_speech_probabilities,
) -> Cut:
    """The cut nearest ``nominal``: the middle of the longest pause of [nominal - search, nominal + search), from a
    decode of that stretch alone (what a part computes from this depends on nothing else it decoded)."""
    region = decode_stretch(data, limits, max(0.0, nominal - search_seconds), nominal + search_seconds, cancelled)
    if region.reached_end:
        return Cut(region.end, file_end=True)
    frames = len(region.samples) // VAD_FRAME
    if frames == 0:
        return Cut(region.start)
    probabilities = speech_probabilities(region.samples[: frames * VAD_FRAME])[:frames]
    return Cut(region.start + pause_frame(probabilities, EDGE_RULES) * VAD_FRAME / SAMPLE_RATE)


def decode_part(
    data: bytes | io.IOBase,
    part: AudioPart,
    limits: AudioLimits,
    cancelled: Callable[[], bool] = lambda: False,
    speech_probabilities: Probabilities = silero_speech_probabilities,
) -> PartAudio:
    """The samples of ``part`` from its first cut to its last. ``limits``' paid seconds bound the part's own
    samples; its cuts' short decodes are bounded by the server's limit alone."""
    edges = limits.for_request(None, None)
    start = None
    if part.start is not None:
        start = find_cut(data, part.start, part.search_seconds, edges, cancelled, speech_probabilities)
        if start.file_end:  # the file ends before this part begins: nothing to transcribe
            return PartAudio(np.zeros(0, dtype=np.float32), start.at, start.at)
    end = None
    if part.end is not None:
        end = find_cut(data, part.end, part.search_seconds, edges, cancelled, speech_probabilities)
    stop = None if end is None or end.file_end else end.at
    stretch = decode_stretch(data, limits, None if start is None else start.at, stop, cancelled)
    if start is None and not len(stretch.samples):
        raise AudioRefused("undecodable_audio", "The audio file contains no audio samples.")
    first = 0.0 if start is None else start.at
    last = first + len(stretch.samples) / SAMPLE_RATE if stop is None else stop
    return PartAudio(stretch.samples, first, max(first, last))
