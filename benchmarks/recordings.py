"""English recordings for the benchmarks, spoken by espeak-ng from a known script (the reference text).

- :func:`meeting_clip`: about 40 s, 16 kHz mono WAV, whose script repeats phrases the way meetings do (a
  sentence said twice in a row, a question asked again), the case a batched decode without timestamps loses.
- :func:`long_recording`: N minutes of distinct sentences with pauses between them, as 16 kHz mono WAV while
  that fits in 25 MB (up to about 13 minutes), else as a 32 kbps mono MP3 while that fits (60 minutes: about
  14.5 MB; up to about 103 minutes), else as a 12 kbps mono Ogg Opus (the 4 hours the service accepts: about
  20 MB). At 12 kbps Opus tiny.en hears these sentences about as well as at 32 kbps MP3 (WER 0.03 and 0.04 on a
  minute of them), where lower MP3 rates lose words (16 kbps 0.11; 8 kbps, the rate that holds 4 hours, 0.48).

``python -m benchmarks.recordings --minutes 10 --out DIR`` writes a recording and its script, to listen to
or to send by hand.
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import subprocess
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

SAMPLE_RATE = 16_000
MAX_UPLOAD_BYTES = 25_000_000  # the upload flow's promise (MaxUploadBytes)
MP3_BIT_RATE = 32_000
OPUS_BIT_RATE = 12_000

# Said twice in a row, repeated later, asked again: what a meeting sounds like.
MEETING_SCRIPT = (
    "Good morning everyone, let us get started. "
    "The first item is the budget for the new office. "
    "The first item is the budget for the new office. "
    "We need 10 more chairs and two large tables before the end of the month. "
    "Can everyone hear me clearly? Can everyone hear me clearly? "
    "The second item is the hiring plan for the support team. "
    "We would like to hire three engineers and one designer this spring. "
    "Please send your comments to the finance team by Friday. "
    "Please send your comments to the finance team by Friday. "
    "The last item is the summer party, which will be held in the garden. "
    "Thank you all for coming, and see you next week."
)

# The parts of the long recordings' sentences: every sentence is a different combination.
_SUBJECTS = (
    "The finance team",
    "Our largest customer",
    "The new manager",
    "The support group",
    "My colleague",
    "The research department",
    "The sales director",
    "A small startup",
    "The city council",
    "The engineering team",
    "Our first supplier",
    "The board of directors",
)
_VERBS = (
    "approved",
    "reviewed",
    "rejected",
    "discussed",
    "postponed",
    "announced",
    "published",
    "signed",
    "changed",
    "questioned",
    "welcomed",
    "explained",
)
_OBJECTS = (
    "the annual budget",
    "a new contract",
    "the travel policy",
    "the quarterly report",
    "the safety rules",
    "a marketing campaign",
    "the product roadmap",
    "the office move",
    "a training program",
    "the hiring plan",
    "the price increase",
    "the customer survey",
)
_TIMES = (
    "on Monday morning",
    "last week",
    "after a long meeting",
    "before the holidays",
    "during the summer",
    "at the end of the year",
    "early this spring",
    "on Friday afternoon",
    "in the autumn",
    "before lunch",
    "late in the evening",
    "the day before yesterday",
)
_REMARKS = (
    "Nobody expected that.",
    "Everyone agreed with the decision.",
    "The details will follow soon.",
    "Several people asked for more time.",
    "It was a difficult choice.",
    "The staff were pleased.",
    "Questions can be sent by email.",
    "The vote was almost unanimous.",
)


@dataclass(frozen=True)
class Recording:
    name: str
    audio: bytes
    suffix: str  # ".wav", ".mp3" or ".ogg"
    reference: str  # what was said, the script
    duration: float  # seconds

    @property
    def filename(self) -> str:
        return self.name + self.suffix

    def save(self, directory: Path) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        audio_path, script_path = directory / self.filename, directory / f"{self.name}.txt"
        audio_path.write_bytes(self.audio)
        script_path.write_text(self.reference + "\n")
        return audio_path, script_path


def speak(text: str, words_per_minute: int = 150, ssml: bool = False) -> bytes:
    """espeak-ng's WAV (22,050 Hz mono) of ``text``; with ``ssml`` the text is SSML (for <break/> pauses)."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng or brew install espeak-ng)")
    command = ["espeak-ng", "-s", str(words_per_minute), "--stdout", "--stdin"] + (["-m"] if ssml else [])
    return subprocess.run(command, input=text.encode(), check=True, capture_output=True).stdout


def pcm16k(audio: bytes) -> bytes:
    """Any audio PyAV reads, as 16 kHz mono signed 16-bit little-endian PCM."""
    pcm = bytearray()
    with av.open(io.BytesIO(audio)) as source:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        for frame in source.decode(audio=0):
            frame.pts = None
            for resampled in resampler.resample(frame):
                pcm += bytes(resampled.planes[0])[: resampled.samples * 2]
        for resampled in resampler.resample(None):
            pcm += bytes(resampled.planes[0])[: resampled.samples * 2]
    return bytes(pcm)


def wav_bytes(pcm: bytes) -> bytes:
    output = io.BytesIO()
    with wave.open(output, "wb") as target:
        target.setnchannels(1)
        target.setsampwidth(2)
        target.setframerate(SAMPLE_RATE)
        target.writeframes(pcm)
    return output.getvalue()


def mp3_bytes(pcm: bytes, bit_rate: int = MP3_BIT_RATE) -> bytes:
    """16 kHz mono PCM as an MP3 (MPEG-2 layer III, libmp3lame) at ``bit_rate`` bits per second."""
    return encoded(pcm, "mp3", "libmp3lame", bit_rate)


def encoded(pcm: bytes, container: str, codec: str, bit_rate: int, repeat: int = 1) -> bytes:
    """16 kHz mono PCM encoded with ``codec`` at ``bit_rate`` bits per second, in ``container``; ``repeat``: the PCM
    played that many times in a row (hours of audio without hours of PCM in memory)."""
    import numpy as np

    output = io.BytesIO()
    samples = np.frombuffer(pcm, dtype=np.int16)
    with av.open(output, "w", format=container) as target:
        stream = target.add_stream(codec, rate=SAMPLE_RATE)
        stream.layout = "mono"
        stream.bit_rate = bit_rate
        resampler = av.AudioResampler(format=stream.codec_context.format or "s16p", layout="mono", rate=SAMPLE_RATE)
        step = SAMPLE_RATE * 10
        for start in (offset for _ in range(repeat) for offset in range(0, len(samples), step)):
            frame = av.AudioFrame.from_ndarray(
                samples[start : start + step].reshape(1, -1), format="s16", layout="mono"
            )
            frame.sample_rate = SAMPLE_RATE
            frame.pts = None
            for resampled in resampler.resample(frame):
                resampled.time_base = Fraction(1, SAMPLE_RATE)
                target.mux(stream.encode(resampled))
        for resampled in resampler.resample(None):
            target.mux(stream.encode(resampled))
        target.mux(stream.encode(None))
    return output.getvalue()


def meeting_clip(words_per_minute: int = 150) -> Recording:
    """About 40 s of a meeting whose script says some sentences twice in a row (16 kHz mono WAV)."""
    pcm = pcm16k(speak(MEETING_SCRIPT, words_per_minute))
    return Recording("meeting", wav_bytes(pcm), ".wav", MEETING_SCRIPT, len(pcm) / 2 / SAMPLE_RATE)


def sentences(seed: int = 8):
    """Distinct sentences, endlessly (none repeats within 12**4 = 20,736), with a remark now and then."""
    rng = random.Random(seed)
    combinations = [(s, v, o, t) for s in _SUBJECTS for v in _VERBS for o in _OBJECTS for t in _TIMES]
    rng.shuffle(combinations)
    for subject, verb, thing, time in combinations:
        yield f"{subject} {verb} {thing} {time}."
        if rng.random() < 0.15:
            yield rng.choice(_REMARKS)


def spoken_pcm(
    minutes: float, words_per_minute: int = 150, pause_ms: tuple[int, int] = (300, 1500), seed: int = 8
) -> tuple[bytes, list[str]]:
    """16 kHz mono PCM of at least ``minutes`` of distinct sentences with pauses, and the sentences said."""
    rng = random.Random(seed)
    target_bytes = int(minutes * 60 * SAMPLE_RATE) * 2
    pcm, said = bytearray(), []
    source = sentences(seed)
    while len(pcm) < target_bytes:
        # about 4.5 s a sentence with its pause: no more than the remaining time needs
        wanted = min(40, max(1, round((target_bytes - len(pcm)) / 2 / SAMPLE_RATE / 4.5)))
        chunk = [next(source) for _ in range(wanted)]
        ssml = "".join(f'{sentence}<break time="{rng.randint(*pause_ms)}ms"/>' for sentence in chunk)
        pcm += pcm16k(speak(f"<speak>{ssml}</speak>", words_per_minute, ssml=True))
        said += chunk
    return bytes(pcm), said


def long_recording(
    minutes: float, words_per_minute: int = 150, pause_ms: tuple[int, int] = (300, 1500), seed: int = 8
) -> Recording:
    """At least ``minutes`` of distinct sentences with pauses of ``pause_ms`` (random, inclusive) between them.

    espeak-ng speaks up to 40 sentences a call (SSML, with <break/> for the pauses), until the audio is long enough.
    """
    pcm, said = spoken_pcm(minutes, words_per_minute, pause_ms, seed)
    name = f"long-{minutes:g}min"
    duration = len(pcm) / 2 / SAMPLE_RATE
    if len(pcm) + 44 <= MAX_UPLOAD_BYTES:
        return Recording(name, wav_bytes(pcm), ".wav", " ".join(said), duration)
    # 1% for frame headers and padding
    if duration * MP3_BIT_RATE / 8 * 1.01 <= MAX_UPLOAD_BYTES:
        return Recording(name, mp3_bytes(pcm), ".mp3", " ".join(said), duration)
    return Recording(name, encoded(pcm, "ogg", "libopus", OPUS_BIT_RATE), ".ogg", " ".join(said), duration)


def looped_recording(hours: float, block_minutes: float = 30.0) -> Recording:
    """``hours`` of speech as a 12 kbps mono Ogg Opus: a block of ``block_minutes`` of distinct sentences
    (:func:`long_recording`'s) played again and again, so ten hours take the time and memory of one block to build.
    Its script is the block's, repeated as often."""
    repeat = max(1, round(hours * 60 / block_minutes))
    # a block ends after the sentence that reaches its length (a few seconds more): blocks a little shorter keep
    # the whole under ``hours`` (ten hours is a job's limit, MaxJobAudioSeconds)
    pcm, said = spoken_pcm(min(block_minutes, hours * 60) * 0.995)
    block_seconds = len(pcm) / 2 / SAMPLE_RATE
    audio = encoded(pcm, "ogg", "libopus", OPUS_BIT_RATE, repeat=repeat)
    return Recording(f"looped-{hours:g}h", audio, ".ogg", " ".join(said * repeat), block_seconds * repeat)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.recordings",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--minutes", type=float, nargs="*", default=[], help="also build long recordings of these lengths"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/recordings-out"))
    args = parser.parse_args()
    for recording in [meeting_clip()] + [long_recording(minutes) for minutes in args.minutes]:
        audio_path, script_path = recording.save(args.out)
        print(f"{audio_path}: {recording.duration:.1f} s, {len(recording.audio) / 1e6:.1f} MB; script {script_path}")


if __name__ == "__main__":
    main()
