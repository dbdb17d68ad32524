"""Real English speech for the tests: espeak-ng speaks a known script, PyAV encodes it to every format."""

from __future__ import annotations

import io
import re
import shutil
import struct
import subprocess
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SCRIPT = (
    "The quick brown fox jumps over the lazy dog. Speech recognition turns spoken words into written text. "
    "Please send the quarterly report to the finance team by Friday."
)
# Words of SCRIPT that Whisper tiny.en gets right from espeak-ng's voice; a transcript must contain most of them.
KEY_WORDS = (
    "quick",
    "fox",
    "lazy",
    "dog",
    "speech",
    "recognition",
    "spoken",
    "words",
    "written",
    "text",
    "please",
    "send",
    "quarterly",
    "report",
    "friday",
)

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
    return subprocess.run(
        ["espeak-ng", "-s", str(words_per_minute), "--stdout", text], check=True, capture_output=True
    ).stdout


def encode(wav: bytes, audio_format: str) -> bytes:
    """Re-encode WAV bytes to ``audio_format`` (a key of ENCODINGS)."""
    container_format, codec, _ = ENCODINGS[audio_format]
    sample_rate = 48_000 if codec == "libopus" else 16_000
    output = io.BytesIO()
    with av.open(io.BytesIO(wav), "r") as source, av.open(output, "w", format=container_format) as target:
        stream = target.add_stream(codec, rate=sample_rate)
        assert isinstance(stream, av.AudioStream)  # an audio codec makes an audio stream
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


# espeak-ng's header when it writes to stdout: 22,050 Hz, 16-bit mono, RIFF and data sizes as a stream's placeholders
# (tests/integration/test_speech_fixtures.py checks that espeak-ng still writes it)
ESPEAK_NG_STREAMED_HEADER = bytes.fromhex(
    "5249464624f0ff7f57415645666d742010000000010001002256000044ac0000020010006461746100f0ff7f"
)


def streamed_tone_wav(seconds: float = 11.7, sample_rate: int = 22_050) -> bytes:
    """A gliding tone as a WAV with the header espeak-ng writes to stdout: 16-bit mono, and RIFF and data sizes that
    are a stream's placeholders (0x7FFFF024, 0x7FFFF000), not the bytes that follow. For tests that need real
    encoders' containers of a known length rather than speech: no espeak-ng needed (the unit tests)."""
    times = np.arange(int(seconds * sample_rate)) / sample_rate
    signal = 0.3 * np.sin(2 * np.pi * (220 + 40 * times) * times) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * times))
    samples = (signal * 32767).astype("<i2").tobytes()
    header = (
        b"RIFF"
        + (0x7FFFF024).to_bytes(4, "little")
        + b"WAVEfmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")
        + (1).to_bytes(2, "little")
        + sample_rate.to_bytes(4, "little")
        + (sample_rate * 2).to_bytes(4, "little")
        + (2).to_bytes(2, "little")
        + (16).to_bytes(2, "little")
        + b"data"
        + (0x7FFFF000).to_bytes(4, "little")
    )
    return header + samples


def write_all_formats(directory: Path, wav: bytes | None = None) -> dict[str, Path]:
    """``wav`` (by default the test script spoken by espeak-ng) in every supported format, written to ``directory``."""
    wav = synthesize_wav() if wav is None else wav
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
LONG_KEY_WORDS = (
    "quarterly",
    "planning",
    "meeting",
    "budget",
    "board",
    "engineering",
    "summer",
    "customer",
    "support",
    "weekends",
    "questions",
    "operations",
    "friday",
)


def large_wav(min_bytes: int, text: str = LONG_SCRIPT) -> bytes:
    """Real speech as a 48 kHz stereo 16-bit WAV of at least ``min_bytes``: the script, said again until it is."""
    said = synthesize_wav(text)
    pcm = bytearray()
    with av.open(io.BytesIO(said), "r") as source:
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


# --- long recordings with known timings: each sentence said separately, then laid out on one timeline -------

TIMED_SAMPLE_RATE = 16_000
# "finance team" in espeak-ng's voice is heard as "fire and steam" by tiny.en: a recognition error, not a loss
_TEAMS = ("security", "engineering", "support", "marketing", "sales", "design", "legal", "research")
_THINGS = ("budget", "report", "schedule", "contract", "proposal", "roadmap", "invoice", "website")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class TimedSentence:
    text: str
    key_words: tuple[str, ...]
    start: float  # seconds on the recording's timeline
    end: float


def distinct_sentences(count: int) -> list[tuple[str, tuple[str, ...]]]:
    """``count`` different sentences (team x document x day), each with the three words that identify it."""
    combinations = [(team, thing, day) for day in _DAYS for thing in _THINGS for team in _TEAMS]
    # a fixed stride through the combinations, so neighbouring sentences differ in every word
    ordered = [combinations[(index * 37) % len(combinations)] for index in range(len(combinations))]
    return [
        (f"The {team} team will review the {thing} on {day}.", (team, thing, day.lower()))
        for team, thing, day in ordered[:count]
    ]


def _pcm16k(wav: bytes) -> np.ndarray:
    """espeak-ng's WAV as 16 kHz mono float samples, without the silence it puts around the words."""
    samples: list[np.ndarray] = []
    with av.open(io.BytesIO(wav), "r") as source:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=TIMED_SAMPLE_RATE)
        for frame in source.decode(audio=0):
            samples.extend(resampled.to_ndarray().reshape(-1) for resampled in resampler.resample(frame))
        samples.extend(resampled.to_ndarray().reshape(-1) for resampled in resampler.resample(None))
    audio = np.concatenate(samples).astype(np.float32) / 32768.0
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    return audio[loud[0] : loud[-1] + 1] if len(loud) else audio


def timed_speech(
    sentences: list[tuple[str, tuple[str, ...]]],
    *,
    gap_seconds: float = 0.6,
    quiet: frozenset[int] = frozenset(),
    quiet_gain: float = 0.05,
    lead_seconds: float = 0.3,
) -> tuple[bytes, list[TimedSentence]]:
    """One 16 kHz mono WAV saying every sentence in order, ``gap_seconds`` of silence between them (none after
    the last: the file ends with its last word), sentences at positions in ``quiet`` at ``quiet_gain`` volume."""

    pieces: list[np.ndarray] = [np.zeros(int(lead_seconds * TIMED_SAMPLE_RATE), dtype=np.float32)]
    timeline: list[TimedSentence] = []
    position = len(pieces[0])
    gap = np.zeros(int(gap_seconds * TIMED_SAMPLE_RATE), dtype=np.float32)
    for index, (text, key_words) in enumerate(sentences):
        said = _pcm16k(synthesize_wav(text)) * (quiet_gain if index in quiet else 1.0)
        if index:
            pieces.append(gap)
            position += len(gap)
        timeline.append(
            TimedSentence(text, key_words, position / TIMED_SAMPLE_RATE, (position + len(said)) / TIMED_SAMPLE_RATE)
        )
        pieces.append(said)
        position += len(said)
    pcm = (np.clip(np.concatenate(pieces), -1, 1) * 32767).astype("<i2").tobytes()
    return mono_wav(pcm, TIMED_SAMPLE_RATE), timeline


def sentences_missing(
    timeline: list[TimedSentence], segments: list[dict], *, slack_seconds: float = 1.0, min_recall: float = 0.6
) -> list[TimedSentence]:
    """The sentences whose key words are not (mostly) in the segments transcribed around their own time."""
    missing = []
    for sentence in timeline:
        around = " ".join(
            segment["text"]
            for segment in segments
            if segment["end"] >= sentence.start - slack_seconds and segment["start"] <= sentence.end + slack_seconds
        )
        if _stem_recall(around, sentence.key_words) < min_recall:
            missing.append(sentence)
    return missing


def _stem_recall(transcript: str, expected: tuple[str, ...]) -> float:
    """Like word_recall, but a word heard with another ending or split in two counts ("scheduled" for "schedule",
    "road map" for "roadmap"): the sentence was transcribed, if not perfectly; a lost one has none of its words."""
    heard = "".join(re.findall(r"[a-z]+", transcript.lower()))  # "road map" is "roadmap"
    return sum(word[:6] in heard for word in expected) / len(expected)


# --- made-up WAV files: silence, and headers that lie ---------------------------------------------------------


def mono_wav(pcm: bytes, sample_rate: int) -> bytes:
    """16-bit mono PCM samples as a WAV at ``sample_rate`` (its header is 44 bytes)."""
    output = io.BytesIO()
    with wave.open(output, "wb") as target:
        target.setnchannels(1)
        target.setsampwidth(2)
        target.setframerate(sample_rate)
        target.writeframes(pcm)
    return output.getvalue()


def eight_bit_wav(seconds: float, sample_rate: int = 8_000) -> bytes:
    """A quiet hum at the fewest bytes a second a WAV holds (8 kHz, 8 bits): 4 MiB is more than 8 minutes, 25 MB
    52 minutes, with a header that says so."""
    output = io.BytesIO()
    with wave.open(output, "wb") as target:
        target.setnchannels(1)
        target.setsampwidth(1)
        target.setframerate(sample_rate)
        target.writeframes(bytes([128, 131, 134, 131, 128, 125, 122, 125]) * int(sample_rate * seconds / 8))
    return output.getvalue()


def silent_wav(sample_rate: int, seconds: float) -> bytes:
    """A 16-bit mono WAV of silence at ``sample_rate``."""
    return mono_wav(bytes(int(sample_rate * seconds) * 2), sample_rate)


def one_hertz_wav(data_bytes: int = 4000) -> bytes:
    """A WAV header that says 1 sample per second: a few KB that would decode to thousands of seconds."""
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 1, 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
        + bytes(data_bytes)
    )
