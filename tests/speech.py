"""Real English speech for the tests: espeak-ng speaks a known script, PyAV encodes it to every format."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av

SCRIPT = ("The quick brown fox jumps over the lazy dog. Speech recognition turns spoken words into written text. "
          "Please send the quarterly report to the finance team by Friday.")
# Words of SCRIPT that Whisper tiny.en gets right from espeak-ng's voice; a transcript must contain most of them.
KEY_WORDS = ("quick", "fox", "lazy", "dog", "speech", "recognition", "spoken", "words", "written", "text",
             "please", "send", "quarterly", "report", "friday")

# container, codec, file suffix; one entry per format the public doc promises
ENCODINGS: dict[str, tuple[str, str, str]] = {
    "wav": ("wav", "pcm_s16le", ".wav"),
    "mp3": ("mp3", "libmp3lame", ".mp3"),
    "mp4": ("mp4", "aac", ".mp4"),
    "m4a": ("ipod", "aac", ".m4a"),
    "webm": ("webm", "libopus", ".webm"),
    "ogg": ("ogg", "libopus", ".ogg"),
    "flac": ("flac", "flac", ".flac"),
}


def synthesize_wav(text: str = SCRIPT, words_per_minute: int = 150) -> bytes:
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng); `make test` installs it")
    return subprocess.run(["espeak-ng", "-s", str(words_per_minute), "--stdout", text], check=True,
                          capture_output=True).stdout


def encode(wav: bytes, audio_format: str) -> bytes:
    """Re-encode WAV bytes to ``audio_format`` (a key of ENCODINGS)."""
    container_format, codec, _ = ENCODINGS[audio_format]
    sample_rate = 48_000 if codec == "libopus" else 16_000
    output = io.BytesIO()
    with av.open(io.BytesIO(wav)) as source, av.open(output, "w", format=container_format) as target:
        stream = target.add_stream(codec, rate=sample_rate)
        stream.layout = "mono"
        resampler = av.AudioResampler(format=stream.codec_context.format or "s16", layout="mono", rate=sample_rate)
        for frame in source.decode(audio=0):
            frame.pts = None
            for resampled in resampler.resample(frame):
                resampled.time_base = Fraction(1, sample_rate)
                target.mux(stream.encode(resampled))
        for resampled in resampler.resample(None):
            target.mux(stream.encode(resampled))
        target.mux(stream.encode(None))
    return output.getvalue()


def word_recall(transcript: str, expected: tuple[str, ...] = KEY_WORDS) -> float:
    """The share of ``expected`` words that appear in ``transcript`` (case and punctuation ignored)."""
    words = set(re.findall(r"[a-z']+", transcript.lower()))
    return sum(word in words for word in expected) / len(expected)


def write_all_formats(directory: Path) -> dict[str, Path]:
    wav = synthesize_wav()
    paths = {}
    for audio_format, (_, _, suffix) in ENCODINGS.items():
        path = directory / f"speech{suffix}"
        path.write_bytes(wav if audio_format == "wav" else encode(wav, audio_format))
        paths[audio_format] = path
    return paths


LONG_SCRIPT = (
    "Welcome to the quarterly planning meeting. First, the budget for the coming year was approved by the board. "
    "Second, the engineering team will hire three new people before the summer. "
    "Third, the customer support hours will be extended on weekends. "
    "Please send your questions to the operations team before Friday. Thank you for listening."
)
LONG_KEY_WORDS = ("quarterly", "planning", "meeting", "budget", "board", "engineering", "summer", "customer",
                  "support", "weekends", "questions", "operations", "friday")


def large_wav(min_bytes: int, text: str = LONG_SCRIPT) -> bytes:
    """Real speech as a 48 kHz stereo 16-bit WAV of at least ``min_bytes``: the script, said again until it is."""
    import wave

    said = synthesize_wav(text)
    pcm = bytearray()
    with av.open(io.BytesIO(said)) as source:
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=48_000)
        for frame in source.decode(audio=0):
            for resampled in resampler.resample(frame):
                pcm += bytes(resampled.planes[0])[: resampled.samples * 4]
        for resampled in resampler.resample(None):
            pcm += bytes(resampled.planes[0])[: resampled.samples * 4]
    repeats = -(-min_bytes // len(pcm))
    output = io.BytesIO()
    with wave.open(output, "wb") as target:
        target.setnchannels(2)
        target.setsampwidth(2)
        target.setframerate(48_000)
        target.writeframes(bytes(pcm) * repeats)
    return output.getvalue()
