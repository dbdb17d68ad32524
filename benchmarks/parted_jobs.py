"""Long jobs in parts, end to end on the local stack: a 10-hour job, and a 2-hour job as one part against several.

    .venv/bin/python -m benchmarks.parted_jobs                      # --hours 10 --compare-hours 2
    .venv/bin/python -m benchmarks.parted_jobs --hours 0 --compare-hours 1 --part-seconds 900

Builds each recording as a 12 kbps mono Ogg Opus (``recordings.looped_recording``: 30 minutes of distinct espeak-ng
sentences with pauses, played again and again; its script repeated as often is the reference), then sends it as a
user of the upload flow does (``long_jobs.run_job``: POST /v1/uploads, the presigned POST, GET /v1/jobs/{id} until
it ends) to a local stack started with the template parameters given (``--parameter-overrides``):

1. the ``--hours`` job on a stack whose jobs run in parts of ``--part-seconds`` (JobPartSeconds), up to
   AsyncMaxConcurrentInvocationsPerInstance (4) at once;
2. the ``--compare-hours`` job twice, on a stack where it is one part (JobPartSeconds past its length) and on one
   where it is several (``--part-seconds``): the speed-up from fanning out, as a ratio measured in the same run.

For each job it prints the wall time, audio seconds per second, the word error rate after the shared
normalisation, the credits the job says it used and the balance's fall (equal: charged once), the most parts
seen running at once (from the jobs table and the parts' progress reports, polled), and the peak memory (VmHWM)
of every process of the stack, read from /proc before the stack is stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from benchmarks.long_jobs import JobOutcome, run_job
from benchmarks.recordings import Recording, looped_recording
from benchmarks.stack import LocalStack, StackFailed, start_stack, stop_on_sigterm

# A job's file and length for these runs: the deployment's defaults (1 GB, 10 hours)
LIMITS = ["MaxJobBytes=1000000000", "MaxJobAudioSeconds=36000"]


@dataclass
class Run:
    label: str
    recording: Recording
    part_seconds: float
    outcome: JobOutcome | None = None
    most_parts_at_once: int = 0
    parts: int = 0
    peak_memory: dict[str, int] = field(default_factory=dict)  # process -> peak RSS in bytes


def _state(stack: LocalStack) -> dict[str, Any]:
    return json.loads((stack.state_dir / "local-stack.json").read_text())


def _aws(stack: LocalStack, service: str) -> Any:
    environment = _state(stack)["environment"]
    return boto3.client(
        service,
        endpoint_url=environment[f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}"],
        region_name=environment.get("AWS_REGION", "us-east-1"),
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


class PartWatcher:
    """Polls the job's row and its parts' progress reports: how many parts were running at once, at most."""

    def __init__(self, stack: LocalStack) -> None:
        environment = _state(stack)["environment"]
        self._table = environment["JOBS_TABLE_NAME"]
        self._bucket = environment["AUDIO_BUCKET_NAME"]
        self._dynamodb = _aws(stack, "dynamodb")
        self._s3 = _aws(stack, "s3")
        self.most_at_once = 0
        self.parts = 0
        self._stop = threading.Event()

    def watch(self, key_id_and_job: tuple[str, str]) -> threading.Thread:
        thread = threading.Thread(target=self._poll, args=key_id_and_job, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _poll(self, key_id: str, job_id: str) -> None:
        while not self._stop.wait(2.0):
            try:
                item = self._dynamodb.get_item(TableName=self._table, Key={"job_id": {"S": job_id}}).get("Item", {})
                parts = item.get("parts", {}).get("L", [])
                self.parts = max(self.parts, len(parts))
                running = 0
                for part in parts:
                    fields = part["M"]
                    if "output_location" in fields and fields["output_location"].get("S"):
                        continue
                    inference_id = fields["inference_id"]["S"]
                    key = f"progress/{key_id}/{inference_id}.json"
                    try:
                        report = json.loads(self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read())
                    except Exception:  # noqa: BLE001 - not reported yet: waiting in the endpoint's queue
                        continue
                    if 0 < report.get("windows_done", 0) < report.get("windows_total", 0):
                        running += 1
                self.most_at_once = max(self.most_at_once, running)
            except Exception as exc:  # noqa: BLE001 - a benchmark's watcher: say it, keep going
                print(f"  (watcher: {type(exc).__name__}: {exc})", flush=True)


def peak_memory(stack: LocalStack) -> dict[str, int]:
    """VmHWM (peak resident memory) of the stack's process and every process below it, by command line."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(status.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found: dict[str, int] = {}
    pending = [stack.process.pid]
    while pending:
        pid = pending.pop()
        pending.extend(children.get(pid, []))
        try:
            command = (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())[:90]
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    found[f"{pid} {command}"] = int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return found


def _key_id(stack: LocalStack) -> str:
    import hashlib

    return "key_" + hashlib.sha256(stack.api_key.encode()).hexdigest()[:16]


def run_on_stack(run: Run, timeout: float) -> Run:
    overrides = [*LIMITS, f"JobPartSeconds={run.part_seconds:g}"]
    print(f"\n{run.label}: starting a local stack with {' '.join(overrides)}", flush=True)
    try:
        stack = start_stack(timeout=300, environment={"INFERY_PARAMETER_OVERRIDES": " ".join(overrides)})
    except StackFailed as exc:
        run.outcome = JobOutcome(run.recording, failure=f"the local stack could not be started: {exc}")
        return run
    watcher = PartWatcher(stack)
    try:
        started = threading.Event()

        def watch_when_known() -> None:
            # the job's id is known once the upload is made: run_job prints it; poll the key's newest job instead
            dynamodb, table = watcher._dynamodb, watcher._table
            key_id = _key_id(stack)
            while not started.wait(1.0):
                items = dynamodb.query(
                    TableName=table,
                    IndexName="ByKey",
                    KeyConditionExpression="key_id = :k",
                    ExpressionAttributeValues={":k": {"S": key_id}},
                    ScanIndexForward=False,
                    Limit=1,
                ).get("Items", [])
                if items:
                    watcher.watch((key_id, items[0]["job_id"]["S"]))
                    return

        threading.Thread(target=watch_when_known, daemon=True).start()
        run.outcome = run_job(stack, run.recording, timeout, poll_seconds=5.0)
        started.set()
        watcher.stop()
        run.most_parts_at_once, run.parts = watcher.most_at_once, watcher.parts
        run.peak_memory = peak_memory(stack)
        if not run.outcome.ok:
            print(f"  FAILED: {run.outcome.failure}\n  the stack's last output:\n{stack.tail(30)}", flush=True)
    finally:
        watcher.stop()
        stack.stop()
    return run


def _row(run: Run) -> str:
    outcome = run.outcome
    assert outcome is not None
    recording = run.recording
    if not outcome.ok:
        return f"{run.label:<26} {recording.duration / 3600:5.2f} h  FAILED: {outcome.failure}"
    return (
        f"{run.label:<26} {recording.duration / 3600:5.2f} h {len(recording.audio) / 1e6:6.1f}MB {run.parts:>5} "
        f"{run.most_parts_at_once:>7} {outcome.total_seconds:9.1f}s {outcome.speed or 0:9.1f} {outcome.wer or 0:6.3f} "
        f"{outcome.credits_used!s:>8} {outcome.balance_change!s:>9} "
        f"{max(run.peak_memory.values(), default=0) / 2**20:8.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.parted_jobs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--hours", type=float, default=10.0, help="the long job's length (0: none)")
    parser.add_argument("--compare-hours", type=float, default=2.0, help="the one-part-or-several job (0: none)")
    parser.add_argument("--part-seconds", type=float, default=1800.0, help="JobPartSeconds of the parted runs")
    parser.add_argument("--timeout", type=float, default=None, help="seconds a job may take (default: its audio)")
    args = parser.parse_args(argv)
    stop_on_sigterm()

    runs: list[Run] = []
    if args.compare_hours:
        started = time.perf_counter()
        recording = looped_recording(args.compare_hours)
        print(
            f"built {recording.filename}: {len(recording.audio) / 1e6:.1f} MB in {time.perf_counter() - started:.0f} s"
        )
        runs.append(Run(f"{args.compare_hours:g} h as one part", recording, recording.duration + 600))
        runs.append(Run(f"{args.compare_hours:g} h in parts", recording, args.part_seconds))
    if args.hours:
        started = time.perf_counter()
        recording = looped_recording(args.hours)
        print(
            f"built {recording.filename}: {len(recording.audio) / 1e6:.1f} MB in {time.perf_counter() - started:.0f} s"
        )
        runs.append(Run(f"{args.hours:g} h in parts", recording, args.part_seconds))

    for run in runs:
        run_on_stack(run, args.timeout or run.recording.duration + 900)

    print(
        f"\n{'job':<26} {'audio':>7} {'size':>8} {'parts':>5} {'at once':>7} {'wall':>10} {'audio s/s':>9} "
        f"{'WER':>6} {'credits':>8} {'balance -':>9} {'peak MiB':>8}"
    )
    print("-" * 112)
    for run in runs:
        print(_row(run))
    for run in runs:
        print(f"\npeak memory (VmHWM) of every process, {run.label}:")
        for process, peak in sorted(run.peak_memory.items(), key=lambda item: -item[1]):
            print(f"  {peak / 2**20:8.0f} MiB  {process}")
    if args.compare_hours and all(run.outcome and run.outcome.ok for run in runs[:2]):
        one, several = (run.outcome for run in runs[:2])
        assert one is not None and several is not None
        print(
            f"\nfanning out: {several.total_seconds:.1f} s in parts against {one.total_seconds:.1f} s as one part: "
            f"{one.total_seconds / several.total_seconds:.2f}x"
        )
    charged_once = all(
        run.outcome is not None and run.outcome.ok and run.outcome.credits_used == run.outcome.balance_change
        for run in runs
    )
    print(f"every job succeeded and was charged once: {'yes' if charged_once else 'NO'}")
    return 0 if charged_once else 1


if __name__ == "__main__":
    sys.exit(main())
