"""Audio in, with the work it may cause bounded before it is done.

A few kilobytes can declare hours of audio (a WAV header that says 1 Hz, a container that lies about its
duration), and decoding them in full would hold the container's memory and the model for minutes. So the
stream's sample rate and declared duration are checked before decoding, and the decoded samples are
counted as they arrive: past the limit, decoding stops and the request is refused. Decoding also stops as
soon as nobody waits for the answer (the caller's deadline passed): it is checked after every 30 seconds
of audio decoded, so a request that timed out costs the server at most that much more work.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import av
import numpy as np

SAMPLE_RATE = 16_000
# Below this, speech is not intelligible to Whisper, and a lying header (1 Hz) turns bytes into hours.
MIN_SAMPLE_RATE = 8_000
# What 25 MB holds at a low bitrate (about 4 hours of 16 kbps Opus).
DEFAULT_MAX_AUDIO_SECONDS = 4 * 3600.0
# Decoded samples are kept as 16-bit blocks of this many seconds (converted to float32 once, block by block):
# two bytes a sample while decoding, no copy of the whole recording, and the caller checked once a block.
BLOCK_SECONDS = 30
_BLOCK_SAMPLES = BLOCK_SECONDS * SAMPLE_RATE
# A seek for a stretch lands this far before its start: a decoder with state between frames (Opus, AAC, MP3, Vorbis)
# has converged by then, and the samples before the stretch's start are dropped by their timestamps.
SEEK_PREROLL_SECONDS = 1.0
_UNDECODABLE = (
    "The audio could not be decoded: the file is damaged or not in "
    "a supported format (MP3, MP4, M4A, WAV, WebM, OGG, FLAC)."
)


class AudioRefused(Exception):
    """The audio cannot be transcribed as sent: the client's mistake (a 400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class DecodingCancelled(Exception):
    """The caller stopped waiting while its audio was being decoded: the rest was not decoded."""


@dataclass(frozen=True)
class AudioLimits:
    max_seconds: float = DEFAULT_MAX_AUDIO_SECONDS
    min_sample_rate: int = MIN_SAMPLE_RATE
    # the seconds the caller's reservation pays for (from the file's header): more was not paid for
    paid_seconds: float | None = None
    # a synchronous call's ceiling: longer audio cannot be transcribed before the caller's deadline
    sync_seconds: float | None = None

    def for_request(self, paid_seconds: float | None, sync_seconds: float | None = None) -> AudioLimits:
        return replace(self, paid_seconds=paid_seconds, sync_seconds=sync_seconds)

    @property
    def max_samples(self) -> int:
        """The most samples a request may decode: past them it is refused, whatever its header said."""
        bounds = (self.max_seconds, self.paid_seconds or math.inf, self.sync_seconds or math.inf)
        return int(min(bounds) * SAMPLE_RATE)

    def check_sample_rate(self, sample_rate: int | None) -> None:
        if sample_rate is not None and 0 < sample_rate < self.min_sample_rate:
            raise AudioRefused(
                "sample_rate_too_low",
                f"The audio's sample rate is {sample_rate} Hz; at least {self.min_sample_rate} Hz "
                "is needed to transcribe speech.",
            )

    def check_duration(self, seconds: float) -> None:
        if seconds > self.max_seconds:
            raise AudioRefused(
                "audio_too_long",
                f"The audio lasts {_minutes(seconds)}; this deployment transcribes at most "
                f"{_minutes(self.max_seconds)} per file.",
            )
        if self.sync_seconds is not None and seconds > self.sync_seconds:
            raise AudioRefused(
                "audio_too_long_for_sync",
                f"The audio lasts more than {_minutes(self.sync_seconds)}, the most a synchronous request "
                "transcribes within its time limit; nothing was charged. Send it as a job: "
                "POST /v1/audio/transcriptions/jobs.",
            )
        if self.paid_seconds is not None and seconds > self.paid_seconds:
            raise AudioRefused(
                "audio_longer_than_declared",
                f"The audio is longer than its header declares ({self.paid_seconds:.0f} s, with a "
                "margin); nothing was charged. Re-encode the file so its header tells its length.",
            )


def _minutes(seconds: float) -> str:
    count = max(1, round(seconds / 60))
    return f"{count} minute{'s' if count != 1 else ''}"


def decode(data: bytes | io.IOBase, limits: AudioLimits, cancelled: Callable[[], bool] = lambda: False) -> np.ndarray:
    """Mono float32 samples at 16 kHz, refusing audio past ``limits`` before and while decoding, and stopping
    (``DecodingCancelled``) once ``cancelled()`` says nobody waits for them. ``data``: the file's bytes, or a
    seekable file (an S3 object read by ranges)."""
    blocks = _Blocks()
    try:
        with av.open(_file(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioRefused("undecodable_audio", "The file contains no audio stream.")
            stream = container.streams.audio[0]
            codec = stream.codec_context
            if codec is None:  # FFmpeg found a stream it has no decoder for (a WAV of 0 bits per sample)
                raise AudioRefused("undecodable_audio", _UNDECODABLE)
            limits.check_sample_rate(codec.sample_rate or stream.rate)
            if container.duration is not None and container.duration > 0:
                limits.check_duration(container.duration / av.time_base)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in _frames(container):
                limits.check_sample_rate(frame.sample_rate)
                frame.pts = None
                blocks.extend(resampler.resample(frame))
                if blocks.samples > limits.max_samples:
                    limits.check_duration(blocks.samples / SAMPLE_RATE)
                if blocks.block_filled and cancelled():
                    raise DecodingCancelled("the caller is no longer waiting")
            blocks.extend(resampler.resample(None))
    except (AudioRefused, DecodingCancelled):
        raise
    except (av.FFmpegError, ValueError, IndexError, MemoryError, AttributeError) as exc:
        # PyAV's own text ("[Errno 1094995529] Invalid data found...") means nothing to a client
        raise AudioRefused("undecodable_audio", _UNDECODABLE) from exc
    limits.check_duration(blocks.samples / SAMPLE_RATE)
    if not blocks.samples:
        raise AudioRefused("undecodable_audio", "The audio file contains no audio samples.")
    return blocks.to_float32()


@dataclass(frozen=True)
class Stretch:
    """Samples of one stretch of a file: ``start`` is where the first one lies on the file's timeline (seconds from
    its first sample); ``reached_end``: the file ended before the stretch's end."""

    samples: np.ndarray
    start: float
    reached_end: bool

    @property
    def end(self) -> float:
        return self.start + len(self.samples) / SAMPLE_RATE


def decode_stretch(
    data: bytes | io.IOBase,
    limits: AudioLimits,
    start: float | None,
    end: float | None,
    cancelled: Callable[[], bool] = lambda: False,
) -> Stretch:
    """The samples of [start, end) of the file (None: its own start or end), as ``decode`` gives them: a seek to
    ``SEEK_PREROLL_SECONDS`` before ``start``, then the samples before ``start`` dropped by their timestamps, and
    decoding stopped at ``end``. Only the stretch's samples are held, and only they count against ``limits`` (the
    file's declared duration is not checked: it is the whole file's, not the stretch's). The same bytes and the same
    arguments give the same samples, bit for bit."""
    blocks = _Blocks()
    try:
        with av.open(_file(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioRefused("undecodable_audio", "The file contains no audio stream.")
            stream = container.streams.audio[0]
            if stream.codec_context is None:
                raise AudioRefused("undecodable_audio", _UNDECODABLE)
            limits.check_sample_rate(stream.codec_context.sample_rate or stream.rate)
            time_base = stream.time_base
            origin = float(stream.start_time * time_base) if stream.start_time is not None and time_base else 0.0
            if start is not None and start > SEEK_PREROLL_SECONDS and time_base:
                # backward: the key frame at or before the instant, never one after it
                container.seek(int((start - SEEK_PREROLL_SECONDS + origin) / time_base), stream=stream, backward=True)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            first: float | None = None
            skip, stop, produced = 0, math.inf, 0
            for frame in _frames(container):
                limits.check_sample_rate(frame.sample_rate)
                if first is None:
                    seeked = start is not None and start > SEEK_PREROLL_SECONDS
                    first = _frame_time(frame, origin, seeked=seeked)
                    if seeked:
                        frame, first = _on_the_output_grid(frame, first)
                    skip = max(0, round((start - first) * SAMPLE_RATE)) if start is not None else 0
                    stop = round((end - first) * SAMPLE_RATE) if end is not None else math.inf
                frame.pts = None
                produced = _keep(blocks, resampler.resample(frame), produced, skip, stop)
                if blocks.samples > limits.max_samples:
                    limits.check_duration(blocks.samples / SAMPLE_RATE)
                if blocks.block_filled and cancelled():
                    raise DecodingCancelled("the caller is no longer waiting")
                if produced >= stop:
                    break
            else:
                produced = _keep(blocks, resampler.resample(None), produced, skip, stop)
    except (AudioRefused, DecodingCancelled):
        raise
    except (av.FFmpegError, ValueError, IndexError, MemoryError, AttributeError) as exc:
        raise AudioRefused("undecodable_audio", _UNDECODABLE) from exc
    limits.check_duration(blocks.samples / SAMPLE_RATE)
    if first is None:  # nothing at or after the seek: the stretch lies past the file's end
        return Stretch(np.zeros(0, dtype=np.float32), start or 0.0, reached_end=True)
    return Stretch(blocks.to_float32(), first + skip / SAMPLE_RATE, reached_end=produced < stop)


def _frame_time(frame: av.AudioFrame, origin: float, *, seeked: bool) -> float:
    """The frame's first sample on the file's timeline; after a seek, a frame without a timestamp cannot be placed."""
    if frame.time is None:
        if seeked:
            raise AudioRefused("undecodable_audio", "The audio cannot be cut into parts: its stream has no timestamps.")
        return 0.0
    return max(0.0, float(frame.time) - origin)


def _on_the_output_grid(frame: av.AudioFrame, time: float) -> tuple[av.AudioFrame, float]:
    """The frame without its first few samples, so that it starts at an instant where the source's samples and the
    16 kHz output's coincide (every 441 samples of 44.1 kHz, 10 ms; every 3 of 48 kHz): the resampler then computes
    the whole decode's very samples after a seek, instead of samples shifted by a fraction of one."""
    rate = frame.sample_rate
    period = rate // math.gcd(rate, SAMPLE_RATE)
    index = round(time * rate)
    drop = -index % period
    if drop == 0 or drop >= frame.samples:  # (a frame shorter than 10 ms: left as it is, a fraction of a sample off)
        return frame, time
    samples = frame.to_ndarray()
    kept: Any = samples[:, drop:] if frame.format.is_planar else samples[:, drop * len(frame.layout.channels) :]
    trimmed = av.AudioFrame.from_ndarray(np.ascontiguousarray(kept), format=frame.format.name, layout=frame.layout)
    trimmed.sample_rate = rate
    return trimmed, (index + drop) / rate


def _keep(blocks: _Blocks, frames: list[av.AudioFrame], produced: int, skip: int, stop: float) -> int:
    """Adds the resampled samples whose index (counted from the first decoded one) is in [skip, stop)."""
    blocks.block_filled = False
    for frame in frames:
        samples = frame.to_ndarray().reshape(-1)
        low, high = max(0, skip - produced), min(len(samples), max(0, stop - produced))
        if low < high:
            blocks.append(samples[int(low) : int(high)])
        produced += len(samples)
    return produced


def _file(data: bytes | io.IOBase) -> io.IOBase:
    if isinstance(data, bytes | bytearray):
        return io.BytesIO(data)
    data.seek(0)  # a file decoded again (each stretch opens it anew) is read from its start
    return data


class _Blocks:
    """Decoded 16-bit samples in fixed blocks: appending never copies what was decoded before."""

    def __init__(self) -> None:
        self._full: list[np.ndarray] = []
        self._current = np.empty(_BLOCK_SAMPLES, dtype=np.int16)
        self._used = 0
        self.block_filled = False

    @property
    def samples(self) -> int:
        return len(self._full) * _BLOCK_SAMPLES + self._used

    def extend(self, frames: list[av.AudioFrame]) -> None:
        self.block_filled = False
        for frame in frames:
            self.append(frame.to_ndarray().reshape(-1))

    def append(self, samples: np.ndarray) -> None:
        """Adds samples; ``block_filled`` says whether a block filled since the last ``extend``."""
        while len(samples):
            taken = min(len(samples), _BLOCK_SAMPLES - self._used)
            self._current[self._used : self._used + taken] = samples[:taken]
            self._used += taken
            samples = samples[taken:]
            if self._used == _BLOCK_SAMPLES:
                self._full.append(self._current)
                self._current = np.empty(_BLOCK_SAMPLES, dtype=np.int16)
                self._used = 0
                self.block_filled = True

    def to_float32(self) -> np.ndarray:
        """The samples as float32 in [-1, 1), each block freed once it is converted."""
        audio = np.empty(self.samples, dtype=np.float32)
        position = 0
        self._full.append(self._current[: self._used])
        while self._full:
            block = self._full.pop(0)
            np.multiply(block, 1 / 32768, out=audio[position : position + len(block)], casting="unsafe")
            position += len(block)
        return audio


def _frames(container: av.container.InputContainer):
    """Decoded frames, skipping the damaged ones a long recording may hold (as faster-whisper does)."""
    frames = container.decode(audio=0)
    while True:
        try:
            yield next(frames)
        except StopIteration:
            return
        except av.error.InvalidDataError:
            continue
