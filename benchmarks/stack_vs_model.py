"""The whole local stack against the model server alone, on the same recordings, in one run.

    PYTHONPATH=layers/common/python .venv/bin/python -m benchmarks.stack_vs_model [--runs 5] [--concurrency 4]

The local stack is started as ``make serve`` runs it (benchmarks.stack). Two kinds of recording (espeak-ng,
16 kHz mono WAV): short clips of two sentences (about 8 s, where the stack's fixed cost per request weighs most)
and the ~40 s meeting clip that benchmarks.engine_throughput measures (a typical 30-60 s request). Each is
transcribed two ways, 1 and then ``--concurrency`` requests at once:

- **model alone**: HTTP straight to the stack's own model server (``POST /invocations``, what SageMaker calls in
  the container), with the body the transcribe Lambda sends it (infery.adapters.realtime_endpoint.request_body);
- **whole stack**: the official ``openai`` SDK against the stack's API (multipart, ``response_format=json``):
  the local API Gateway, the transcribe Lambda (key, rate limit, credits in moto's DynamoDB) and that model server.

The two are measured in pairs, back to back on the same recording, the model first in one run and the stack first
in the next. Speed is audio seconds per wall second (for N at once: N x the recording's duration over the time from
the first request sent to the last answer). Per kind of recording and concurrency it prints each way's median speed,
their ratio, and the median (min-max) of the pairs' ratios, the stack's speed over the model's in the same pair.
The target, at least 0.9, is judged on that median: the model's own decode time drifts by more than the stack's cost
over a few seconds on a shared 2-core machine, and a pair sees one moment of it. The exit status is 0 only when
every row meets it and no request failed.
"""

from __future__ import annotations

import argparse
import base64
import math
import statistics
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from benchmarks.recordings import Recording, meeting_clip, pcm16k, sentences, speak, wav_bytes
from benchmarks.stack import LocalStack, StackFailed, sent_together, start_stack, stop_on_sigterm

RATIO_TARGET = 0.9
SAMPLE_RATE = 16_000


def clips(count: int, sentences_each: int = 2) -> list[Recording]:
    """``count`` short recordings of distinct sentences (about 5 to 8 s each)."""
    source = sentences()
    made = []
    for index in range(count):
        text = " ".join(next(source) for _ in range(sentences_each))
        pcm = pcm16k(speak(text))
        made.append(Recording(f"clip-{index}", wav_bytes(pcm), ".wav", text, len(pcm) / 2 / SAMPLE_RATE))
    return made


def model_server_url(stack: LocalStack) -> str:
    """The stack's model server: the process of the stack's session started as ``local_stack.model_server``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
            session = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3])
        except (OSError, ValueError, IndexError):
            continue
        if session == stack.process.pid and b"local_stack.model_server" in arguments and b"--port" in arguments:
            port = arguments[arguments.index(b"--port") + 1].decode()
            return f"http://127.0.0.1:{port}"
    raise StackFailed(f"the stack's model server process was not found:\n{stack.tail()}")


def model_request(url: str) -> Callable[[Recording], str]:
    from infery.adapters.realtime_endpoint import request_body
    from infery.domain.inference import InferenceRequest, InferenceResult, Task

    def transcribe(recording: Recording) -> str:
        request = InferenceRequest(
            audio=base64.b64encode(recording.audio).decode(),
            task=Task.TRANSCRIBE,
            max_audio_seconds=math.ceil(recording.duration) + 1,
        )
        sent = urllib.request.Request(  # noqa: S310 - our own server
            f"{url}/invocations",
            data=bytes(request_body(request)),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(sent, timeout=600) as answer:  # noqa: S310
            return InferenceResult.model_validate_json(answer.read()).text

    return transcribe


def stack_request(stack: LocalStack) -> Callable[[Recording], str]:
    import openai

    client = openai.OpenAI(base_url=stack.base_url, api_key=stack.api_key, max_retries=0, timeout=600)

    def transcribe(recording: Recording) -> str:
        answer = client.audio.transcriptions.create(
            model="whisper-1", file=(recording.filename, recording.audio), response_format="json"
        )
        return answer.text

    return transcribe


def speed(transcribe: Callable[[Recording], str], recording: Recording, count: int) -> float:
    """Audio seconds per wall second for ``count`` requests of ``recording`` sent at once."""
    outcomes, wall = sent_together(count, lambda: transcribe(recording))
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise outcome  # a failure fails the benchmark
    return count * recording.duration / wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="pairs per recording and concurrency (default 5)")
    parser.add_argument("--clips", type=int, default=2, help="short recordings, each sent in every run (default 2)")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    stop_on_sigterm()
    kinds = {"short clips": clips(args.clips), "meeting clip": [meeting_clip()]}
    for kind, recordings in kinds.items():
        durations = ", ".join(f"{recording.duration:.1f} s" for recording in recordings)
        print(f"{kind}: {durations} (16 kHz WAV)")
    stack = start_stack()
    speeds: dict[tuple[str, int, str], list[float]] = {}
    try:
        ways = {"model alone": model_request(model_server_url(stack)), "whole stack": stack_request(stack)}
        for transcribe in ways.values():  # warm-up, untimed
            transcribe(kinds["short clips"][0])
        for kind, recordings in kinds.items():
            for concurrency in (1, args.concurrency):
                for run in range(args.runs):
                    for recording in recordings:
                        # one pair, in turn model first and stack first: neither way always follows the other
                        pair = list(ways.items()) if run % 2 == 0 else list(reversed(ways.items()))
                        measured = {way: speed(transcribe, recording, concurrency) for way, transcribe in pair}
                        for way in ways:
                            speeds.setdefault((kind, concurrency, way), []).append(measured[way])
    except Exception as exc:  # noqa: BLE001 - reported, with the stack's output
        print(f"failed: {type(exc).__name__}: {exc}\n{stack.tail()}")
        return 1
    finally:
        stack.stop()
    print()
    print("audio s/s, median of each way; stack/model: the medians' ratio, and the median (min-max) of the pairs'")
    print(
        f"{'recording':<14}{'at once':>8}{'pairs':>6}{'model alone':>13}{'whole stack':>13}{'of medians':>12}"
        f"{'of pairs':>10}{'min-max':>13}"
    )
    all_met = True
    for kind in kinds:
        for concurrency in (1, args.concurrency):
            model_runs = speeds[(kind, concurrency, "model alone")]
            stack_runs = speeds[(kind, concurrency, "whole stack")]
            model, whole = statistics.median(model_runs), statistics.median(stack_runs)
            ratios = [stack_run / model_run for stack_run, model_run in zip(stack_runs, model_runs, strict=True)]
            paired = statistics.median(ratios)
            met = paired >= RATIO_TARGET
            all_met &= met
            verdict = "met" if met else "NOT met"
            print(
                f"{kind:<14}{concurrency:>8}{len(ratios):>6}{model:>13.2f}{whole:>13.2f}{whole / model:>12.2f}"
                f"{paired:>10.2f}{f'{min(ratios):.2f}-{max(ratios):.2f}':>13}   target >= {RATIO_TARGET}: {verdict}"
            )
    print()
    print("every target met" if all_met else "some targets NOT met")
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
