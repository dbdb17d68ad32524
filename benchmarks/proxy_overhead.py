"""What the transcribe handler costs per request, against the work no proxy can skip, measured in one run.

    PYTHONPATH=layers/common/python .venv/bin/python -m benchmarks.proxy_overhead [--runs 25]

The real handler (functions/transcribe/app.py ``lambda_handler``) is called in this process with the events API
Gateway sends (local_stack.api_gateway.build_event: a multipart body base64-encoded, as the template's
BinaryMediaTypes make it; a JSON body as text). DynamoDB and S3 are the local stack's moto server
(local_stack.moto_server, in a process of its own, tables made from template.yaml). The SageMaker runtime is
answered instantly in this process: a ``before-call`` hook on the handler's own runtime client, which botocore
calls after it has validated and serialised the request, where the HTTP request would be sent.

Figures, each against a floor measured in the same run:

- **overhead**: the handler's own time for 100 KB, 1 MB and 4 MiB (the sync limit) of audio, multipart and JSON
  base64, against the floor on the same payload: base64-decode what API Gateway hands over, base64-encode the audio
  for the endpoint and serialise the endpoint's JSON body. Both are timed as CPU time of this thread, so the time
  spent waiting for moto (another process) is not the handler's, but the botocore work around each call is. Runs
  interleave: floor, handler, floor, handler ... The target is a median at most 2.0x the floor's for 1 MB and 4 MB.
- **linear growth**: the handler's time per byte added from 1 MB to 4 MB, over its time per byte added from
  100 KB to 1 MB. A copy per request is linear (ratio about 1); anything quadratic in the size makes it about 4.5.
  Target: at most 1.5, the margin being the noise of a shared machine.
- **memory**: the peak of memory allocated through Python (tracemalloc) by one 4 MB request in the handler,
  against the audio's size. Target: at most 4x. (Memory allocated outside Python's allocator, by Rust or C
  libraries, is not seen by tracemalloc.)
- **DynamoDB round trips**: the DynamoDB calls of one sync call, by operation, counted with botocore's
  ``before-call.dynamodb`` event on the handler's clients, without and with an Idempotency-Key. Targets: the
  key's one read (authentication) is the only read of the key; 4 calls without an Idempotency-Key
  (authenticate, rate limit, reserve, settle) and 7 with one (also the idempotency record's claim and save, and
  the ledger query that finds an earlier attempt).

Each target is printed as met or NOT met; the exit status is 0 only when all are met.
"""

from __future__ import annotations

import argparse
import binascii
import collections
import contextlib
import functools
import importlib.util
import io
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.response import StreamingBody
from urllib3 import encode_multipart_formdata

from benchmarks.recordings import wav_bytes
from benchmarks.stack import ROOT
from local_stack.api_gateway import build_event
from local_stack.processes import free_port
from local_stack.template import LocalTemplate, create_buckets, create_tables, load_template

APP_SOURCE = ROOT / "functions" / "transcribe" / "app.py"
SIZES = (100_000, 1_000_000, 4 * 1024 * 1024)  # the largest: the sync path's limit (MaxSyncAudioBytes), 4 MiB
FORMATS = ("multipart", "json")
RATIO_TARGET = 2.0  # x the floor, for 1 MB and 4 MB
LINEAR_TARGET = 1.5  # per-byte cost 1 MB -> 4 MB over 100 KB -> 1 MB
MEMORY_TARGET = 4.0  # x the audio's size
ROUND_TRIPS_TARGET = {"without Idempotency-Key": 4, "with Idempotency-Key": 7}
SDK_BOUNDARY = "infery-bench-boundary-5c2e"
FIELDS = {"model": "whisper-1", "response_format": "json"}
# what the stand-in model answers: 10 s of audio, whatever it was sent
ANSWER = json.dumps(
    {
        "text": "The proxy answered.",
        "language": "en",
        "duration": 10.0,
        "segments": [
            {
                "id": 0,
                "seek": 0,
                "start": 0.0,
                "end": 10.0,
                "text": " The proxy answered.",
                "tokens": [1, 2, 3],
                "temperature": 0.0,
                "avg_logprob": -0.1,
                "compression_ratio": 1.0,
                "no_speech_prob": 0.01,
            }
        ],
    }
).encode()


def wav_of_size(size: int) -> bytes:
    """A 16 kHz mono 16-bit WAV of exactly ``size`` bytes (noise: the stand-in model never decodes it)."""
    return wav_bytes(os.urandom((size - 44) // 2 * 2))


@dataclass
class Payload:
    """One request: its event (as API Gateway sends it) and what the floor works on."""

    size: int
    body_format: str
    content_type: str
    body: bytes
    audio: bytes

    @property
    def label(self) -> str:
        return f"{self.size / 1e6:g} MB {self.body_format}"

    def event(self, headers: list[tuple[str, str]]) -> dict[str, Any]:
        return build_event(
            "POST",
            "/v1/audio/transcriptions",
            [*headers, ("Content-Type", self.content_type)],
            self.body,
            "/v1/audio/transcriptions",
            {},
            str(uuid.uuid4()),
            "127.0.0.1",
        )

    def carrier(self, event: dict[str, Any]) -> str:
        """The base64 text that carries the audio to the handler: the whole event body (multipart), or the JSON
        body's ``audio`` value (taken out here, untimed)."""
        if self.body_format == "multipart":
            return event["body"]
        return json.loads(event["body"])["audio"]


def payload(size: int, body_format: str) -> Payload:
    audio = wav_of_size(size)
    if body_format == "multipart":
        parts = [("file", ("speech.wav", audio, "application/octet-stream")), *FIELDS.items()]
        body, content_type = encode_multipart_formdata(parts, boundary=SDK_BOUNDARY)
    else:
        body = json.dumps({"audio": binascii.b2a_base64(audio, newline=False).decode(), **FIELDS}).encode()
        content_type = "application/json"
    return Payload(size, body_format, content_type, body, audio)


def floor(carrier: str, audio_offset: int, audio_size: int) -> bytes:
    """The work no proxy can skip: decode what API Gateway hands over (the fastest exact decoder), encode the
    audio for the endpoint, and serialise the endpoint's JSON body around it (its other fields are tiny)."""
    decoded = binascii.a2b_base64(carrier, strict_mode=True)
    encoded = binascii.b2a_base64(memoryview(decoded)[audio_offset : audio_offset + audio_size], newline=False)
    return b"".join((b'{"audio": "', encoded, b'", "task": "transcribe", "max_audio_seconds": 125.0}'))


@dataclass
class Series:
    """Seconds of CPU per run: the whole handler, the part of it inside DynamoDB and S3 calls, and the floor."""

    handler: list[float] = field(default_factory=list)
    sdk: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)

    @property
    def own(self) -> list[float]:
        return [whole - sdk for whole, sdk in zip(self.handler, self.sdk, strict=True)]

    def ratio(self) -> float:
        return statistics.median(self.own) / statistics.median(self.floor)

    def whole_ratio(self) -> float:
        return statistics.median(self.handler) / statistics.median(self.floor)


class Harness:
    """The handler, freshly imported with moto behind it and the instant model in front of its runtime client."""

    def __init__(self, moto_url: str) -> None:
        local = LocalTemplate(load_template(), stack_name="infery-bench", parameter_overrides={})
        environment = {
            **local.function_environment("TranscribeFunction"),
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": local.region,
            "AWS_REGION": local.region,
            "AWS_ENDPOINT_URL_DYNAMODB": moto_url,
            "AWS_ENDPOINT_URL_S3": moto_url,
            "AWS_ENDPOINT_URL_SQS": moto_url,
            "AWS_ENDPOINT_URL_SNS": moto_url,
            "POWERTOOLS_METRICS_NAMESPACE": "InferyBenchmark",
        }
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            os.environ.pop(name, None)
        os.environ.update(environment)
        import boto3

        create_tables(local, boto3.client("dynamodb", endpoint_url=moto_url))
        create_buckets(local, boto3.client("s3", endpoint_url=moto_url))
        spec = importlib.util.spec_from_file_location("app", APP_SOURCE)
        assert spec is not None and spec.loader is not None
        self.app = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.app)
        wiring = self.app.wiring
        self.model_calls: list[int] = []
        wiring.sagemaker_runtime.meta.events.register(
            "before-call.sagemaker-runtime.InvokeEndpoint", self._answer_instantly
        )
        self.dynamodb_calls: collections.Counter[str] = collections.Counter()
        # keys, rate limits and credits share the low-level client; a sync call builds no boto3 resource
        wiring.dynamodb_client.meta.events.register("before-call.dynamodb", self._count_dynamodb_call)
        # the CPU time spent inside DynamoDB and S3 calls, from the first event of a call to its last
        self.sdk_seconds = 0.0
        self._call_started = 0.0
        for client in (wiring.dynamodb_client, wiring.s3):
            service = client.meta.service_model.service_id.hyphenize()
            client.meta.events.register_first(f"provide-client-params.{service}", self._sdk_call_starts)
            client.meta.events.register_last(f"after-call.{service}", self._sdk_call_ends)
            client.meta.events.register_last(f"after-call-error.{service}", self._sdk_call_ends)
        api_key, item = wiring.keys.create("benchmark", 0, rate_limit_per_minute=1_000_000)
        wiring.credits.top_up(item, 10_000_000, request_id=f"seed-{uuid.uuid4()}")
        self.headers = [("Authorization", f"Bearer {api_key}")]

    def _answer_instantly(self, params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        self.model_calls.append(len(params["body"]))
        return AWSResponse("", 200, {}, None), {
            "Body": StreamingBody(io.BytesIO(ANSWER), len(ANSWER)),
            "ContentType": "application/json",
        }

    def _sdk_call_starts(self, **_: Any) -> None:
        self._call_started = time.thread_time()

    def _sdk_call_ends(self, **_: Any) -> None:
        self.sdk_seconds += time.thread_time() - self._call_started

    def _count_dynamodb_call(self, model: Any, **_: Any) -> None:
        self.dynamodb_calls[model.name] += 1

    def call(self, event: dict[str, Any]) -> dict[str, Any]:
        from tests.support.api import LambdaContext

        return self.app.lambda_handler(event, LambdaContext())

    def fresh_event(self, base: dict[str, Any]) -> dict[str, Any]:
        """``base`` as a new request: its own request id, sent now (the handler gives up on old events)."""
        context = {**base["requestContext"], "requestId": str(uuid.uuid4()), "requestTimeEpoch": time.time() * 1000}
        return {**base, "requestContext": context}

    def checked_call(self, event: dict[str, Any]) -> dict[str, Any]:
        reply = self.call(event)
        if reply["statusCode"] != 200:
            raise RuntimeError(f"the handler answered {reply['statusCode']}: {reply.get('body')}")
        return reply


def cpu_timed(function: Callable[[], object]) -> float:
    started = time.thread_time()
    function()
    return time.thread_time() - started


def measure_overhead(harness: Harness, runs: int) -> dict[tuple[int, str], Series]:
    series: dict[tuple[int, str], Series] = {}
    for size in SIZES:
        for body_format in FORMATS:
            request = payload(size, body_format)
            base = request.event(harness.headers)
            carrier = request.carrier(base)
            decoded = binascii.a2b_base64(carrier)
            offset = decoded.find(request.audio[:64])
            # the handler sends the endpoint the audio it was given, base64-encoded in the JSON body
            harness.model_calls.clear()
            harness.checked_call(harness.fresh_event(base))
            sent = harness.model_calls[-1]
            expected = len(floor(carrier, offset, len(request.audio)))
            if abs(sent - expected) > 1024:
                raise RuntimeError(f"{request.label}: the endpoint got {sent} bytes, the floor makes {expected}")
            measured = series[(size, body_format)] = Series()
            for _ in range(runs):
                measured.floor.append(cpu_timed(functools.partial(floor, carrier, offset, len(request.audio))))
                event = harness.fresh_event(base)
                harness.sdk_seconds = 0.0
                measured.handler.append(cpu_timed(functools.partial(harness.checked_call, event)))
                measured.sdk.append(harness.sdk_seconds)
    return series


def measure_memory(harness: Harness) -> dict[str, float]:
    """Peak bytes allocated (tracemalloc) during one 4 MB request, over the audio's size, per format."""
    peaks: dict[str, float] = {}
    for body_format in FORMATS:
        request = payload(SIZES[-1], body_format)
        base = request.event(harness.headers)
        harness.checked_call(harness.fresh_event(base))  # warm
        event = harness.fresh_event(base)
        tracemalloc.start()
        try:
            start, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            harness.checked_call(event)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        peaks[body_format] = (peak - start) / len(request.audio)
    return peaks


def measure_round_trips(harness: Harness) -> dict[str, collections.Counter[str]]:
    request = payload(SIZES[0], "multipart")
    counts: dict[str, collections.Counter[str]] = {}
    for label, extra in (
        ("without Idempotency-Key", []),
        ("with Idempotency-Key", [("Idempotency-Key", f"bench-{uuid.uuid4()}")]),
    ):
        event = harness.fresh_event(request.event([*harness.headers, *extra]))
        harness.dynamodb_calls.clear()
        harness.checked_call(event)
        counts[label] = collections.Counter(harness.dynamodb_calls)
    return counts


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "local_stack.moto_server", "-H", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):  # noqa: S310 - our own server
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def report(
    out: Any,
    series: dict[tuple[int, str], Series],
    peaks: dict[str, float],
    round_trips: dict[str, collections.Counter[str]],
) -> bool:
    def say(text: str = "") -> None:
        print(text, file=out)

    say("per-request overhead: CPU time of this thread, median over the runs; own = whole - inside SDK calls")
    say(
        f"  {'payload':<18}{'whole ms':>10}{'in SDK ms':>11}{'own ms':>9}{'floor ms':>10}"
        f"{'whole/floor':>13}{'own/floor':>11}"
    )
    all_met = True
    for (size, body_format), measured in series.items():
        line = (
            f"  {f'{size / 1e6:g} MB {body_format}':<18}{statistics.median(measured.handler) * 1000:>10.2f}"
            f"{statistics.median(measured.sdk) * 1000:>11.2f}{statistics.median(measured.own) * 1000:>9.2f}"
            f"{statistics.median(measured.floor) * 1000:>10.2f}{measured.whole_ratio():>13.2f}{measured.ratio():>11.2f}"
        )
        if size >= 1_000_000:
            met = measured.ratio() <= RATIO_TARGET
            all_met &= met
            line += f"   own <= {RATIO_TARGET:.1f}: {verdict(met)}"
        say(line)
    say()
    say("linear growth: the handler's own time per byte added 1 MB -> 4 MB, over 100 KB -> 1 MB")
    for body_format in FORMATS:
        small, middle, large = (statistics.median(series[(size, body_format)].own) for size in SIZES)
        growth = ((large - middle) / (SIZES[2] - SIZES[1])) / ((middle - small) / (SIZES[1] - SIZES[0]))
        met = growth <= LINEAR_TARGET
        all_met &= met
        say(f"  {body_format:<10}{growth:>6.2f}   target <= {LINEAR_TARGET:.1f}: {verdict(met)}")
    say()
    say(f"memory: tracemalloc peak of one {SIZES[-1] / 1e6:g} MB request, over the audio's size")
    for body_format, ratio in peaks.items():
        met = ratio <= MEMORY_TARGET
        all_met &= met
        say(f"  {body_format:<10}{ratio:>6.2f}x   target <= {MEMORY_TARGET:.0f}x: {verdict(met)}")
    say()
    say("DynamoDB round trips of one sync call")
    for label, counts in round_trips.items():
        total = sum(counts.values())
        met = total <= ROUND_TRIPS_TARGET[label] and counts["GetItem"] <= 1
        all_met &= met
        listed = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
        say(f"  {label:<25}{total:>3}  ({listed})   target <= {ROUND_TRIPS_TARGET[label]}: {verdict(met)}")
    say()
    say("every target met" if all_met else "some targets NOT met")
    return all_met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=25, help="timed requests per size and format (default 25)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "layers" / "common" / "python"))
    out = sys.stdout
    # the handler logs every request and prints its metrics to stdout: kept out of the report
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the whole run
    try:
        with moto_server() as moto_url:
            harness = Harness(moto_url)
            print(f"handler: {APP_SOURCE.relative_to(ROOT)}, DynamoDB and S3: moto at {moto_url}", file=out)
            print(f"runs: {args.runs} per size and format, interleaved with the floor", file=out)
            print(file=out)
            round_trips = measure_round_trips(harness)
            peaks = measure_memory(harness)
            series = measure_overhead(harness, args.runs)
            return 0 if report(out, series, peaks, round_trips) else 1
    finally:
        sys.stdout = out


if __name__ == "__main__":
    sys.exit(main())
