"""Audio in, with the work it may cause bounded before it is done.

A few kilobytes can declare hours of audio (a WAV header that says 1 Hz, a container that lies about its
duration), and decoding them in full would hold the container's memory and the model for minutes. So the
stream's sample rate and declared duration are checked before decoding, and the decoded samples are
counted as they arrive: past the limit, decoding stops and the request is refused.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

SAMPLE_RATE = 16_000
# Below this, speech is not intelligible to Whisper, and a lying header (1 Hz) turns bytes into hours.
MIN_SAMPLE_RATE = 8_000
# What 25 MB holds at a low bitrate (about 4 hours of 16 kbps Opus).
DEFAULT_MAX_AUDIO_SECONDS = 4 * 3600.0


class AudioRefused(Exception):
    """The audio cannot be transcribed as sent: the client's mistake (a 400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class AudioLimits:
    max_seconds: float = DEFAULT_MAX_AUDIO_SECONDS
    min_sample_rate: int = MIN_SAMPLE_RATE
    # the seconds the caller's reservation pays for (from the file's header): more was not paid for
    paid_seconds: float | None = None

    def for_request(self, paid_seconds: float | None) -> AudioLimits:
        return AudioLimits(self.max_seconds, self.min_sample_rate, paid_seconds)

    def check_sample_rate(self, sample_rate: int | None) -> None:
        if sample_rate is not None and 0 < sample_rate < self.min_sample_rate:
            raise AudioRefused(
                "sample_rate_too_low",
                f"The audio's sample rate is {sample_rate} Hz; at least {self.min_sample_rate} Hz "
                "is needed to transcribe speech.",
            )

    def check_duration(self, seconds: float) -> None:
        if self.paid_seconds is not None and seconds > self.paid_seconds and self.paid_seconds < self.max_seconds:
            raise AudioRefused(
                "audio_longer_than_declared",
                f"The audio is longer than its header declares ({self.paid_seconds:.0f} s, with a "
                "margin); nothing was charged. Re-encode the file so its header tells its length.",
            )
        if seconds > self.max_seconds:
            raise AudioRefused(
                "audio_too_long",
                f"The audio lasts {_minutes(seconds)}; this deployment transcribes at most "
                f"{_minutes(self.max_seconds)} per file.",
            )


def _minutes(seconds: float) -> str:
    count = max(1, round(seconds / 60))
    return f"{count} minute{'s' if count != 1 else ''}"


def decode(data: bytes, limits: AudioLimits) -> np.ndarray:
    """Mono float32 samples at 16 kHz, refusing audio past ``limits`` before and while decoding."""
    max_samples = int(min(limits.max_seconds, limits.paid_seconds or limits.max_seconds) * SAMPLE_RATE)
    pcm = bytearray()
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioRefused("undecodable_audio", "The file contains no audio stream.")
            stream = container.streams.audio[0]
            limits.check_sample_rate(stream.codec_context.sample_rate or stream.rate)
            if container.duration is not None and container.duration > 0:
                limits.check_duration(container.duration / av.time_base)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in _frames(container):
                limits.check_sample_rate(frame.sample_rate)
                frame.pts = None
                for resampled in resampler.resample(frame):
                    pcm += resampled.to_ndarray().tobytes()
                if len(pcm) // 2 > max_samples:
                    limits.check_duration(len(pcm) / 2 / SAMPLE_RATE)
            for resampled in resampler.resample(None):
                pcm += resampled.to_ndarray().tobytes()
    except AudioRefused:
        raise
    except (av.FFmpegError, ValueError, IndexError, MemoryError) as exc:
        # PyAV's own text ("[Errno 1094995529] Invalid data found...") means nothing to a client
        raise AudioRefused(
            "undecodable_audio",
            "The audio could not be decoded: the file is damaged or not in "
            "a supported format (MP3, MP4, M4A, WAV, WebM, OGG, FLAC).",
        ) from exc
    limits.check_duration(len(pcm) / 2 / SAMPLE_RATE)
    if not pcm:
        raise AudioRefused("undecodable_audio", "The audio file contains no audio samples.")
    return np.frombuffer(bytes(pcm), dtype=np.int16).astype(np.float32) / 32768.0


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
