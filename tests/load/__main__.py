"""A bounded load test of the local stack, alone or under a fault; then the books must balance.

    .venv/bin/python -m tests.load                              # no fault
    .venv/bin/python -m tests.load --fault model-restart        # the model server killed, restarted 5 s later
    .venv/bin/python -m tests.load --fault dynamodb-throttle    # 30 % of DynamoDB calls throttled for half the run

(`make load`, `make load-model-restart`, `make load-dynamodb-throttle`.) It starts its own local stack (the real
`python -m local_stack`, on a free loopback port, a key of its own), runs --clients concurrent clients for --seconds
(each request with a time limit, so the run ends by itself), mixing synchronous transcriptions, jobs and bad requests
(an unknown key, bytes that are not audio, an unknown model), then waits for every job to finish and prints
throughput, p50/p95/p99 latency per kind of request and the answers by status and code. Only 127.0.0.1 is contacted.

Then the books: the ledger's change, the balance's change and the credits the API said it used (the
x-infery-credits-used of every 200, the credits_used of every finished job) must be the same number; every charge
must belong to a request answered 200 or a job that succeeded; every 5xx must have been refunded in full (or never
reserved); no reservation may stay open. A reservation whose refund itself failed (DynamoDB throttled it too) is
the reconciler's to release: the test runs the stack's reconciler once with its clock past the grace period, as it
would run 20 minutes later. Without a fault no 5xx is allowed at all. Exit status 0 when all of that holds, 1
otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from infery.adapters.key_store import key_id_for
from infery.domain.keys import generate_api_key, hash_api_key

from tests.support.speech import synthesize_wav
from tests.support.stack import ROOT, RunningStack, start_stack, stop_stack

SCRIPT = "The quick brown fox jumps over the lazy dog."
NOT_AUDIO = b"These are the minutes of the meeting, typed, not spoken.\n" * 20
# the share of each kind of request in the mix
MIX = {"sync": 0.55, "job": 0.15, "bad_key": 0.1, "not_audio": 0.1, "bad_model": 0.1}
EXPECTED = {"sync": {200}, "job": {202}, "bad_key": {401}, "not_audio": {415}, "bad_model": {400, 404}}
REQUEST_TIMEOUT = 60.0
FAULTS_DIR = Path(__file__).resolve().parent / "faults"


@dataclass
class Answer:
    kind: str
    status: int  # 0: no answer (connection refused or timed out)
    code: str | None
    seconds: float
    request_id: str | None = None
    credits_used: int | None = None
    job_id: str | None = None


def _code(response: requests.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def _one_request(session: requests.Session, base_url: str, api_key: str, kind: str, audio: bytes) -> Answer:
    headers = {"Authorization": f"Bearer {api_key}"}
    form = {"model": "whisper-1"}
    file = ("speech.wav", audio, "audio/wav")
    path = "/audio/transcriptions"
    if kind == "job":
        path = "/audio/transcriptions/jobs"
    elif kind == "bad_key":
        headers = {"Authorization": f"Bearer {generate_api_key()}"}  # well formed, unknown
    elif kind == "not_audio":
        file = ("notes.wav", NOT_AUDIO, "audio/wav")
    elif kind == "bad_model":
        form = {"model": "whisper-9000"}
    started = time.monotonic()
    try:
        response = session.post(
            base_url + path, headers=headers, data=form, files={"file": file}, timeout=REQUEST_TIMEOUT
        )
    except requests.RequestException:
        return Answer(kind, 0, "no_answer", time.monotonic() - started)
    elapsed = time.monotonic() - started
    answer = Answer(
        kind,
        response.status_code,
        _code(response) if response.status_code >= 400 else None,
        elapsed,
        response.headers.get("x-request-id"),
    )
    if response.status_code == 200:
        answer.credits_used = int(response.headers["x-infery-credits-used"])
    if kind == "job" and response.status_code == 202:
        answer.job_id = response.json()["id"]
    return answer


def _client(base_url: str, api_key: str, audio: bytes, deadline: float, seed: int) -> list[Answer]:
    rng = random.Random(seed)  # noqa: S311 - a request mix, not security
    answers = []
    with requests.Session() as session:
        while time.monotonic() < deadline:
            kind = rng.choices(list(MIX), weights=list(MIX.values()))[0]
            answers.append(_one_request(session, base_url, api_key, kind, audio))
    return answers


# ---------------------------------------------------------------------------------------------------------------
# faults


class ModelRestart:
    """Kill the model server (SIGKILL) a third into the run and start it again, as it was, after ``outage`` s."""

    def __init__(self, stack: RunningStack, at: float, outage: float) -> None:
        self.stack, self.at, self.outage = stack, at, outage
        self.replacement: subprocess.Popen | None = None
        self.log: list[str] = []

    def run(self, started: float) -> None:
        time.sleep(max(0.0, started + self.at - time.monotonic()))
        pid = self.stack.model_server_pid
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        environment = dict(
            entry.split(b"=", 1) for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in entry
        )
        os.kill(pid, signal.SIGKILL)
        self.log.append(f"{time.monotonic() - started:5.1f} s: model server (pid {pid}) killed")
        time.sleep(self.outage)
        self.replacement = subprocess.Popen(
            command, env=environment, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        port = command[command.index(b"--port") + 1].decode()
        for _ in range(360):
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.log.append(
            f"{time.monotonic() - started:5.1f} s: model server restarted (pid {self.replacement.pid}) and answering"
        )

    def close(self) -> None:
        if self.replacement is not None and self.replacement.poll() is None:
            self.replacement.terminate()
            try:
                self.replacement.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.replacement.kill()


class DynamoDBThrottle:
    """DynamoDB throttles a share of the handlers' calls from a quarter to three quarters of the run."""

    def __init__(self, flag: Path, seconds: float) -> None:
        self.flag, self.seconds = flag, seconds
        self.log: list[str] = []

    def run(self, started: float) -> None:
        time.sleep(max(0.0, started + self.seconds / 4 - time.monotonic()))
        self.flag.touch()
        self.log.append(f"{time.monotonic() - started:5.1f} s: DynamoDB throttling on")
        time.sleep(max(0.0, started + self.seconds * 3 / 4 - time.monotonic()))
        self.flag.unlink(missing_ok=True)
        hits = Path(f"{self.flag}.hits")
        throttled = hits.stat().st_size if hits.exists() else 0
        self.log.append(
            f"{time.monotonic() - started:5.1f} s: DynamoDB throttling off; {throttled} DynamoDB calls "
            "were throttled (botocore retried them)"
        )

    def close(self) -> None:
        self.flag.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------------
# after the run: jobs, books, figures


def _wait_for_jobs(stack: RunningStack, job_ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    finished: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    with requests.Session() as session:
        while time.monotonic() < deadline and len(finished) < len(job_ids):
            for job_id in job_ids:
                if job_id in finished:
                    continue
                try:
                    response = session.get(f"{stack.base_url}/jobs/{job_id}", headers=stack.headers(), timeout=30)
                except requests.RequestException:
                    continue
                if response.status_code == 200 and response.json()["status"] in ("succeeded", "failed"):
                    finished[job_id] = response.json()
            time.sleep(1.0)
    return finished


def _wait_for_closed_reservations(stack: RunningStack, key_id: str, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        still_open = [item for item in stack.open_reservations() if item["key_id"] == key_id]
        if not still_open or time.monotonic() > deadline:
            return still_open
        time.sleep(1.0)


def _reconciler(stack: RunningStack) -> Any:
    """The stack's reconciler (functions/reconciler/app.py), to run with its clock past the grace period: what it
    does when its time comes to a reservation a failed refund left open and to a job whose failure could not be
    recorded (the stack runs it every 5 minutes; it leaves both alone for their grace periods, 20 minutes each)."""
    os.environ.update(stack.environment)
    spec = importlib.util.spec_from_file_location("app", ROOT / "functions" / "reconciler" / "app.py")
    assert spec is not None and spec.loader is not None
    reconciler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reconciler)
    return reconciler


def _run_reconciler(stack: RunningStack) -> int:
    reconciler = _reconciler(stack)
    return reconciler.release_stale_reservations(now=time.time() + reconciler.settings.reservation_grace_seconds + 60)


def _redrive_stuck_jobs(stack: RunningStack) -> int:
    reconciler = _reconciler(stack)
    return reconciler.redrive_stuck_jobs(now=time.time() + reconciler.settings.queued_job_grace_seconds + 60)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def _report(answers: list[Answer], seconds: float) -> list[str]:
    lines = [f"{'kind':<10} {'requests':>8} {'as expected':>11} {'req/s':>6} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"]
    by_kind: dict[str, list[Answer]] = defaultdict(list)
    for answer in answers:
        by_kind[answer.kind].append(answer)
    for kind in [*MIX, "all"]:
        group = answers if kind == "all" else by_kind.get(kind, [])
        if not group:
            continue
        latencies = [answer.seconds * 1000 for answer in group]
        expected = sum(answer.status in EXPECTED[answer.kind] for answer in group)
        lines.append(
            f"{kind:<10} {len(group):>8} {expected:>11} {len(group) / seconds:>6.2f} "
            f"{_percentile(latencies, 0.5):>7.0f} {_percentile(latencies, 0.95):>7.0f} "
            f"{_percentile(latencies, 0.99):>7.0f}"
        )
    counts = Counter((answer.status, answer.code) for answer in answers)
    lines.append(
        "answers: "
        + ", ".join(
            f"{status}{' ' + code if code else ''}: {count}"
            for (status, code), count in sorted(counts.items(), key=lambda item: (item[0][0], item[0][1] or ""))
        )
    )
    return lines


def _check_books(
    stack: RunningStack,
    key_id: str,
    balance_before: int,
    seeded_entries: set[str],
    answers: list[Answer],
    jobs: dict[str, dict[str, Any]],
    fault: str,
) -> tuple[list[str], list[str]]:
    """(figures, problems)."""
    problems: list[str] = []
    balance_after = int(stack.key_row(key_id)["credits"])
    entries = [entry for entry in stack.ledger(key_id) if entry["entry_id"] not in seeded_entries]
    ledger_change = sum(int(entry["credits"]) for entry in entries)
    sync_used = sum(answer.credits_used or 0 for answer in answers if answer.status == 200)
    job_used = sum(int(job.get("credits_used") or 0) for job in jobs.values() if job["status"] == "succeeded")
    returned = sync_used + job_used
    figures = [
        f"books: ledger change {ledger_change}, balance change {balance_after - balance_before}, "
        f"credits the API returned {returned} (sync {sync_used}, jobs {job_used})"
    ]
    if not ledger_change == balance_after - balance_before == -returned:
        problems.append("the books do not balance")

    by_request: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for entry in entries:
        by_request[entry["request_id"]][entry["kind"]] = entry
    paid = {answer.request_id for answer in answers if answer.status == 200 and answer.credits_used}
    succeeded = {job_id for job_id, job in jobs.items() if job["status"] == "succeeded" and job.get("credits_used")}
    for request_id, kinds in by_request.items():
        if "settle" in kinds and int(kinds["settle"].get("billed_credits") or 0) > 0:
            owner = request_id.split(".", 1)[0]  # a job's later attempt is job_id.N
            if request_id not in paid and owner not in succeeded:
                problems.append(f"{request_id} was charged but its client was not told it succeeded")
        elif "reserve" in kinds and not ({"refund", "release"} & set(kinds)):
            problems.append(f"{request_id} was reserved and neither settled nor refunded")
    failed_5xx = [answer for answer in answers if answer.status >= 500 or answer.status == 0]
    for answer in failed_5xx:
        kinds = by_request.get(answer.request_id or "", {})
        if "settle" in kinds:
            problems.append(f"{answer.request_id} answered {answer.status} but was charged")
        if "reserve" in kinds and not ({"refund", "release"} & set(kinds)):
            problems.append(f"{answer.request_id} answered {answer.status} and was not refunded")
    if fault == "none" and failed_5xx:
        problems.append(f"{len(failed_5xx)} answers were 5xx (or none) without a fault to explain them")
    refunded = sum(1 for kinds in by_request.values() if {"refund", "release"} & set(kinds))
    figures.append(
        f"5xx or no answer: {len(failed_5xx)}, each refunded or never reserved; refunded reservations: {refunded}"
    )
    unexpected = [
        answer
        for answer in answers
        if answer.status not in EXPECTED[answer.kind] and answer.status < 500 and answer.status != 0
    ]
    if unexpected:
        problems.append(
            f"{len(unexpected)} answers were neither the expected status nor a 5xx: "
            f"{Counter((a.kind, a.status, a.code) for a in unexpected).most_common(5)}"
        )
    return figures, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fault", choices=["none", "model-restart", "dynamodb-throttle"], default="none")
    parser.add_argument("--clients", type=int, default=6, help="concurrent clients (default 6)")
    parser.add_argument("--seconds", type=float, default=60, help="how long the clients send (default 60)")
    parser.add_argument(
        "--throttle-rate",
        type=float,
        default=0.3,
        help="the share of DynamoDB calls throttled with --fault dynamodb-throttle (default 0.3)",
    )
    parser.add_argument("--outage", type=float, default=5, help="seconds the model server stays down (default 5)")
    parser.add_argument("--lambda-concurrency", type=int, default=4, help="the stack's handler processes")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 64 or not 5 <= args.seconds <= 900:
        parser.error("--clients must be 1 to 64 and --seconds 5 to 900: the run is bounded")

    audio = synthesize_wav(SCRIPT)
    scratch = Path(tempfile.mkdtemp(prefix="infery-load-"))
    extra: dict[str, str] = {}
    if args.fault == "dynamodb-throttle":
        extra = {
            "PYTHONPATH": os.pathsep.join([str(FAULTS_DIR), str(ROOT / "layers" / "common" / "python")]),
            "INFERY_FAULT_THROTTLE_FILE": str(scratch / "throttle"),
            "INFERY_FAULT_THROTTLE_RATE": str(args.throttle_rate),
        }
    print(
        f"infery load test: fault {args.fault}, {args.clients} clients for {args.seconds:.0f} s; starting a local "
        "stack ...",
        flush=True,
    )
    process, stack = start_stack(credits=1_000_000, concurrency=args.lambda_concurrency, extra_environment=extra)
    fault: ModelRestart | DynamoDBThrottle | None = None
    try:
        key_id = key_id_for(hash_api_key(stack.api_key))
        balance_before = int(stack.key_row(key_id)["credits"])
        seeded_entries = {entry["entry_id"] for entry in stack.ledger(key_id)}
        if args.fault == "model-restart":
            fault = ModelRestart(stack, at=args.seconds / 3, outage=args.outage)
        elif args.fault == "dynamodb-throttle":
            fault = DynamoDBThrottle(scratch / "throttle", args.seconds)
        started = time.monotonic()
        deadline = started + args.seconds
        fault_thread = threading.Thread(target=fault.run, args=(started,), daemon=True) if fault else None
        if fault_thread:
            fault_thread.start()
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            futures = [
                pool.submit(_client, stack.base_url, stack.api_key, audio, deadline, seed)
                for seed in range(args.clients)
            ]
            answers = [answer for future in futures for answer in future.result()]
        sent_seconds = time.monotonic() - started
        if fault_thread:
            fault_thread.join(timeout=240)
        job_ids = [answer.job_id for answer in answers if answer.job_id]
        jobs = _wait_for_jobs(stack, job_ids, timeout=120)
        redriven = _redrive_stuck_jobs(stack) if len(jobs) < len(job_ids) else 0
        if redriven:
            jobs = _wait_for_jobs(stack, job_ids, timeout=180)
        still_open = _wait_for_closed_reservations(stack, key_id, timeout=30)
        released = _run_reconciler(stack) if still_open else 0
        if released:
            still_open = _wait_for_closed_reservations(stack, key_id, timeout=10)

        print(f"\nstack {stack.base_url}; sent for {sent_seconds:.1f} s", *(fault.log if fault else []), sep="\n")
        print(*_report(answers, sent_seconds), sep="\n")
        outcomes = Counter(job["status"] for job in jobs.values())
        errors = Counter(job["error"]["code"] for job in jobs.values() if job.get("error"))
        if released:
            print(f"reservations left open (their refund failed) and released by the reconciler: {released}")
        if redriven:
            print(
                f"jobs left unfinished (their failure could not be recorded) and queued again by the reconciler: "
                f"{redriven}"
            )
        print(
            f"jobs: {len(job_ids)} created, {outcomes['succeeded']} succeeded, {outcomes['failed']} failed"
            f"{' ' + json.dumps(dict(errors)) if errors else ''}, {len(job_ids) - len(jobs)} unfinished"
        )
        figures, problems = _check_books(stack, key_id, balance_before, seeded_entries, answers, jobs, args.fault)
        print(*figures, sep="\n")
        if len(jobs) < len(job_ids):
            problems.append(f"{len(job_ids) - len(jobs)} jobs did not finish within 300 s (after the reconciler)")
        if still_open:
            problems.append(f"{len(still_open)} reservations are still open")
        for problem in problems:
            print(f"PROBLEM: {problem}")
        if problems:  # what the stack said (its warnings and errors): where to start looking
            print("the stack's output, last 60 lines:\n" + "".join(stack.output[-60:]), end="")
        print("the books balance" if not problems else "FAILED", flush=True)
        return 1 if problems else 0
    finally:
        if fault is not None:
            fault.close()
        stop_stack(process)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
