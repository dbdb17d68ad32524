"""Wall time of long jobs end to end through the local stack's upload flow.

    .venv/bin/python -m benchmarks.long_jobs --minutes 10 60

For each length, builds a recording of distinct English sentences with pauses (espeak-ng; WAV while it fits
in 25 MB, else a 32 kbps MP3), then does what a user of the upload flow does (README, "Large files, jobs and
batch"): ``POST /v1/uploads``, the presigned POST of the file to S3, then ``GET /v1/jobs/{id}`` until the job
has succeeded or failed, printing its progress. It prints the wall time (upload and job), audio seconds per
wall second, the word error rate against the script, and the credits charged (the job's ``credits_used``
and the balance's change, which must be the same: charged once).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import requests
from requests_toolbelt import MultipartEncoder

from benchmarks.recordings import Recording, long_recording
from benchmarks.stack import LocalStack, StackFailed, start_stack, stop_on_sigterm
from benchmarks.wer import differences, word_errors


@dataclass
class JobOutcome:
    recording: Recording
    ok: bool = False
    failure: str = ""
    job_id: str = ""
    upload_seconds: float = 0.0
    job_seconds: float = 0.0  # from the end of the upload to the job's end
    total_seconds: float = 0.0  # from POST /v1/uploads to the job's end
    wer: float | None = None
    credits_used: int | None = None
    balance_change: int | None = None

    @property
    def speed(self) -> float | None:
        return self.recording.duration / self.total_seconds if self.ok and self.total_seconds else None


class JobFailed(Exception):
    pass


def _answer(response: requests.Response, what: str) -> dict:
    if response.status_code >= 400:
        raise JobFailed(f"{what} answered {response.status_code}: {response.text[:500]}")
    return response.json()


def _balance(session: requests.Session, base_url: str) -> int | None:
    try:
        return int(_answer(session.get(f"{base_url}/usage", timeout=60), "GET /v1/usage")["balance"])
    except (JobFailed, KeyError, ValueError, requests.RequestException) as exc:
        print(f"  (could not read the balance: {exc})", flush=True)
        return None


def run_job(stack: LocalStack, recording: Recording, timeout: float, poll_seconds: float = 1.0) -> JobOutcome:
    outcome = JobOutcome(recording)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {stack.api_key}"
    base = stack.base_url
    step = "POST /v1/uploads"
    balance_before = _balance(session, base)
    started = time.perf_counter()
    try:
        upload = _answer(
            session.post(
                f"{base}/uploads", json={"filename": recording.filename, "response_format": "json"}, timeout=60
            ),
            step,
        )
        outcome.job_id = upload.get("job_id") or ""
        if not outcome.job_id:
            raise JobFailed(f"POST /v1/uploads gave no job_id: {upload}")
        if len(recording.audio) > int(upload.get("max_bytes") or 0):
            raise JobFailed(
                f"the file is {len(recording.audio):,} bytes, over the upload's max_bytes {upload.get('max_bytes')}"
            )
        step = "the presigned POST to S3"
        form = MultipartEncoder(fields={**upload["fields"], "file": (recording.filename, recording.audio)})
        # the presigned URL carries its own authorisation: no API key goes to S3
        response = requests.post(
            upload["upload_url"], data=form, headers={"Content-Type": form.content_type}, timeout=600
        )
        if not response.ok:
            raise JobFailed(f"the presigned POST to S3 answered {response.status_code}: {response.text[:500]}")
        uploaded = time.perf_counter()
        outcome.upload_seconds = uploaded - started
        print(
            f"  uploaded {len(recording.audio) / 1e6:.1f} MB in {outcome.upload_seconds:.1f} s; job {outcome.job_id}",
            flush=True,
        )

        step = f"GET /v1/jobs/{outcome.job_id}"
        last_shown, last_print = None, 0.0
        while True:
            job = _answer(session.get(f"{base}/jobs/{outcome.job_id}", timeout=60), step)
            now = time.perf_counter()
            shown = (job.get("status"), job.get("progress"))
            if shown != last_shown or now - last_print >= 30:
                progress = float(job.get("progress") or 0)
                print(f"  {now - started:7.1f} s  {job.get('status')!s:<16} progress {progress:.3f}", flush=True)
                last_shown, last_print = shown, now
            if job.get("status") in ("succeeded", "failed"):
                break
            if now - started > timeout:
                raise JobFailed(
                    f"the job was still {job.get('status')} (progress {job.get('progress')}) after {timeout:.0f} s"
                )
            if not stack.alive():
                raise JobFailed("the local stack exited while the job ran")
            time.sleep(poll_seconds)
        outcome.total_seconds = time.perf_counter() - started
        outcome.job_seconds = time.perf_counter() - uploaded
        outcome.credits_used = job.get("credits_used")
        if job["status"] == "failed":
            error = job.get("error") or {}
            raise JobFailed(
                f"the job failed after {outcome.total_seconds:.1f} s: "
                f"{error.get('code', '?')}: {error.get('message', 'no message')}"
                f" (credits_used {outcome.credits_used})"
            )

        step = f"GET /v1/jobs/{outcome.job_id}/result"
        response = session.get(f"{base}/jobs/{outcome.job_id}/result", params={"response_format": "text"}, timeout=120)
        if response.status_code >= 400:
            raise JobFailed(f"{step} answered {response.status_code}: {response.text[:500]}")
        errors = word_errors(recording.reference, response.text)
        outcome.wer = errors.rate
        print(
            f"  transcript: {errors.hypothesis_words} words for {errors.reference_words} in the script, "
            f"{errors.errors} word errors",
            flush=True,
        )
        for difference in differences(recording.reference, response.text, limit=8):
            print(f"    {difference}", flush=True)
        balance_after = _balance(session, base)
        if balance_before is not None and balance_after is not None:
            outcome.balance_change = balance_before - balance_after
        outcome.ok = True
    except JobFailed as exc:
        outcome.failure = str(exc)
    except requests.RequestException as exc:
        outcome.failure = f"{step} could not be sent: {type(exc).__name__}: {exc}"
    except (KeyError, TypeError, ValueError) as exc:  # an answer without what the README promises
        outcome.failure = f"{step} gave an unexpected answer: {type(exc).__name__}: {exc}"
    if not outcome.ok:
        balance_after = _balance(session, base)
        if balance_before is not None and balance_after is not None:
            outcome.balance_change = balance_before - balance_after
            outcome.failure += f"; the balance fell by {outcome.balance_change} (0 when refunded)"
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.long_jobs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 60], help="lengths of the jobs (10 60)")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds a job may take (default: 2 x its audio + 10 minutes)"
    )
    args = parser.parse_args(argv)
    stop_on_sigterm()

    recordings = []
    for minutes in args.minutes:
        started = time.perf_counter()
        recording = long_recording(minutes)
        recordings.append(recording)
        print(
            f"built {recording.filename}: {recording.duration / 60:.1f} min, {len(recording.audio) / 1e6:.1f} MB, "
            f"{len(recording.reference.split())} words, in {time.perf_counter() - started:.0f} s",
            flush=True,
        )

    outcomes: list[JobOutcome] = []
    print("starting the local stack...", flush=True)
    try:
        stack = start_stack(timeout=300)
    except StackFailed as exc:
        print(f"the local stack could not be started: {exc}")
        return 1
    try:
        print(f"  ready at {stack.base_url}", flush=True)
        for recording in recordings:
            print(f"\njob: {recording.filename} ({recording.duration / 60:.1f} min)", flush=True)
            timeout = args.timeout or 2 * recording.duration + 600
            outcome = run_job(stack, recording, timeout)
            outcomes.append(outcome)
            if not outcome.ok:
                print(f"  FAILED: {outcome.failure}", flush=True)
                print(f"  the stack's last output:\n{stack.tail(30)}", flush=True)
    finally:
        stack.stop()

    print(
        f"\n{'recording':<18} {'audio':>8} {'size':>8} {'upload':>8} {'job':>9} {'total':>9} {'audio s/s':>10} "
        f"{'WER':>6} {'credits':>8} {'balance -':>9}"
    )
    print("-" * 104)
    for outcome in outcomes:
        recording = outcome.recording
        if outcome.ok:
            print(
                f"{recording.filename:<18} {recording.duration / 60:6.1f} m {len(recording.audio) / 1e6:6.1f}MB "
                f"{outcome.upload_seconds:7.1f}s {outcome.job_seconds:8.1f}s {outcome.total_seconds:8.1f}s "
                f"{outcome.speed:10.1f} {outcome.wer:6.3f} {outcome.credits_used!s:>8} {outcome.balance_change!s:>9}"
            )
        else:
            print(f"{recording.filename:<18} {recording.duration / 60:6.1f} m  FAILED: {outcome.failure}")
    charged_once = all(outcome.ok and outcome.credits_used == outcome.balance_change for outcome in outcomes)
    print(
        "\n(upload: POST /v1/uploads and the presigned POST; job: from the end of the upload until the job ended; "
        "audio s/s: audio over total; balance -: how much the balance fell, equal to credits when charged once)"
    )
    print(f"every job succeeded and was charged once: {'yes' if charged_once else 'NO'}")
    return 0 if charged_once else 1


if __name__ == "__main__":
    sys.exit(main())
