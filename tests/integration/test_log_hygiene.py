"""Log hygiene: a full run of every path writes no API key, no audio (base64) and no transcript to any log.

One run through the real handlers (functions/*/app.py, cold-started with template.yaml's environment), moto and the
real Whisper server: synchronous calls (multipart and JSON base64, a prompt, word timestamps, an Idempotency-Key and
its replay), refusals (a mistyped key, an unknown key, a balance too small, a model failure that is refunded), a job
with a webhook through the worker and the asynchronous endpoint, an upload through a presigned POST, the job's
result in another format, usage, and the reconciler. Everything those write is captured: the functions' powertools
logger (its handler's stream, exactly what Lambda sends to CloudWatch, at DEBUG level), every other logger at INFO
(the model server, botocore, the libraries), and whatever is printed (powertools' EMF metrics, request lines).
Then no key, no window of the audio's base64 (at any byte alignment, also inside the base64 event bodies), no
transcript, prompt or webhook secret may appear in it; and the capture must hold the run's correlated log lines,
so the test cannot pass by capturing nothing.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import StringIO
from typing import Any

import pytest
from infery.domain.keys import generate_api_key
from infery.observability import logger as infery_logger

from tests.support import job_stack, jobs, storage
from tests.support.api import TRANSCRIPTIONS, LambdaContext, Reply, assert_error, assert_ok

# the jobs tests' fixtures (bucket, queues, asynchronous endpoint, worker, webhook receiver), used as they are
audio_resources = storage.audio_resources
storage_endpoints = storage.storage_endpoints  # autouse: S3, SQS and SNS at moto for handlers and model
async_inference = job_stack.async_inference
s3 = job_stack.s3
jobs_queue = job_stack.jobs_queue
store = job_stack.store
load_worker = job_stack.load_worker
worker = job_stack.worker
jobs_api = job_stack.jobs_api
webhook_receiver = job_stack.webhook_receiver
webhook_sleeps = job_stack.webhook_sleeps
short_wav = job_stack.short_wav

PROMPT = "Quokka glossary: Zarathustra, Vexillology, Oddfellows."
BASE64_WINDOW = 24  # characters of an audio's base64 that would give it away (18 bytes of audio)
KEY_SHAPED = re.compile(r"inf_[A-Za-z0-9_-]{12,}")


@dataclass
class Captured:
    """Everything the run wrote to a log, and the secrets that must not be in it."""

    stream: StringIO
    caplog: pytest.LogCaptureFixture
    capsys: pytest.CaptureFixture[str]
    api_keys: list[str] = field(default_factory=list)
    audios: list[bytes] = field(default_factory=list)
    base64_bodies: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)

    def text(self) -> str:
        printed = self.capsys.readouterr()
        records = "\n".join(
            logging.Formatter("%(name)s %(levelname)s %(message)s").format(record) for record in self.caplog.records
        )
        return "\n".join([self.stream.getvalue(), records, printed.out, printed.err])

    def sent(self, reply: Reply) -> Reply:
        """Remember the request's body as API Gateway delivered it (multipart arrives base64-encoded)."""
        if reply.event.get("isBase64Encoded") and reply.event.get("body"):
            self.base64_bodies.append(reply.event["body"])
        return reply


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Iterator[Captured]:
    handler = infery_logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    stream = StringIO()
    previous_stream = handler.setStream(stream)
    previous_level = infery_logger.log_level
    infery_logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.INFO)
    try:
        yield Captured(stream, caplog, capsys)
    finally:
        handler.setStream(previous_stream)
        infery_logger.setLevel(previous_level)


def base64_windows(data: bytes, count: int = 12) -> set[str]:
    """Windows of ``data``'s base64 at every byte alignment, spread over its middle (a WAV header is mostly
    zeros, which any base64 shares)."""
    windows = set()
    for offset in range(3):
        encoded = base64.b64encode(data[offset:]).decode()
        span = len(encoded) - BASE64_WINDOW
        for index in range(count):
            start = (span // 10) + index * (span * 8 // 10) // count
            start -= start % 4  # on a quantum: the same characters wherever this alignment of the data is encoded
            windows.add(encoded[start : start + BASE64_WINDOW])
    return windows


def assert_clean(captured: Captured, logs: str) -> None:
    for api_key in captured.api_keys:
        assert api_key not in logs, "an API key is in the logs"
        assert api_key[4:20] not in logs, "a part of an API key is in the logs"
    assert not KEY_SHAPED.findall(logs), f"key-shaped strings in the logs: {KEY_SHAPED.findall(logs)[:3]}"
    for audio in captured.audios:
        leaked = [window for window in base64_windows(audio) if window in logs]
        assert not leaked, f"the audio's base64 is in the logs: {leaked[:2]}"
    for body in captured.base64_bodies:
        span = len(body) - BASE64_WINDOW
        for start in range(0, span, max(4, span // 40)):
            assert body[start : start + BASE64_WINDOW] not in logs, "a request body (base64) is in the logs"
    lowered = logs.lower()
    for text in captured.texts:
        for phrase in transcript_phrases(text):
            assert phrase not in lowered, f"transcript text in the logs: {phrase!r}"
    for secret in captured.secrets:
        assert secret not in logs, "a secret (webhook secret or prompt) is in the logs"


def transcript_phrases(text: str) -> list[str]:
    """Every run of three words of the transcript, lower case: what a logged transcript could not avoid."""
    words = re.findall(r"[a-z']+", text.lower())
    return [" ".join(words[index : index + 3]) for index in range(len(words) - 2)]


def json_lines(stream_text: str) -> list[dict[str, Any]]:
    lines = []
    for line in stream_text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_a_full_run_logs_no_key_no_audio_and_no_transcript(
    captured,
    jobs_api,
    load_api,
    fake_runtime,
    worker,
    jobs_queue,
    accounts,
    wav,
    short_wav,
    webhook_receiver,
    webhook_sleeps,
    load_reconciler,
):
    api = jobs_api
    api_key, item = accounts.new_key(200)
    poor_key, _ = accounts.new_key(0)
    mistyped = api_key[:10] + ("A" if api_key[10] != "A" else "B") + api_key[11:]
    unknown = generate_api_key()
    captured.api_keys += [api_key, poor_key, mistyped, unknown]
    captured.audios += [wav, short_wav]
    captured.secrets.append(PROMPT)

    # synchronous: multipart with a prompt and word timestamps, JSON base64 with an Idempotency-Key and its replay
    verbose = captured.sent(
        api.transcribe(
            api_key, wav, response_format="verbose_json", prompt=PROMPT, **{"timestamp_granularities[]": "word"}
        )
    )
    assert_ok(verbose)
    captured.texts.append(verbose.json()["text"])
    captured.texts += [segment["text"] for segment in verbose.json()["segments"]]
    plain = api.call(
        "POST",
        TRANSCRIPTIONS,
        api_key=api_key,
        content_type="application/json",
        headers=[("Idempotency-Key", "hygiene-1")],
        body=json.dumps(
            {
                "model": "whisper-1",
                "response_format": "text",
                "file_base64": base64.b64encode(short_wav).decode(),
                "filename": "standup.wav",
            }
        ).encode(),
    )
    assert_ok(plain)
    captured.texts.append(plain.text)
    replay = api.replay(plain)
    assert_ok(replay)

    # refusals: a mistyped key, an unknown key, a balance too small
    assert_error(captured.sent(api.transcribe(mistyped, short_wav)), 401, "invalid_api_key")
    assert_error(captured.sent(api.transcribe(unknown, short_wav)), 401)
    assert_error(captured.sent(api.transcribe(poor_key, short_wav)), 402, "insufficient_credits")

    # a model failure: refunded, logged as a refusal
    model_error = {
        "Message": "Received server error (500) from primary.",
        "OriginalStatusCode": 500,
        "OriginalMessage": json.dumps({"error": "CUDA error", "code": "oom"}),
    }
    failing_url, _ = fake_runtime(424, model_error, {"x-amzn-ErrorType": "ModelError"})
    assert_error(captured.sent(load_api(failing_url).transcribe(api_key, short_wav)), 502, "model_error")

    # a job with a webhook, through the worker and the asynchronous endpoint; its result in another format
    receiver = webhook_receiver()
    created = captured.sent(
        api.transcribe(
            api_key, short_wav, path=jobs.TRANSCRIPTION_JOBS, webhook_url=receiver.url, response_format="verbose_json"
        )
    )
    assert created.status == 202, created.text
    captured.secrets.append(created.json()["webhook_secret"])
    jobs.assert_no_batch_failures(worker.deliver(jobs_queue.drain()))
    job_id = created.json()["id"]
    finished = jobs.get_job(api, api_key, job_id)
    assert_ok(finished)
    assert finished.json()["status"] == "succeeded", finished.json()
    captured.texts.append(finished.json()["result"]["text"])
    srt = jobs.get_job(api, api_key, job_id, result=True, query="?response_format=srt")
    assert_ok(srt)
    assert len(receiver.requests) == 1

    # an upload through its presigned POST, transcribed as a job on arrival
    upload = jobs.post_upload(api, api_key, {"filename": "board.wav"}).json()
    jobs.upload_to_s3(upload, wav)
    jobs.assert_no_batch_failures(worker.deliver(jobs.event_for(jobs_queue.drain(), upload["fields"]["key"])))
    uploaded = jobs.get_job(api, api_key, upload["job_id"])
    assert uploaded.json()["status"] == "succeeded", uploaded.json()
    captured.texts.append(uploaded.json()["result"]["text"])

    # the key's usage, and the reconciler's run
    assert_ok(api.call("GET", "/v1/usage", api_key=api_key))
    load_reconciler().lambda_handler({}, LambdaContext(function_name="infery-it-ReconcilerFunction"))

    logs = captured.text()
    # the capture holds the run: the functions' JSON lines, correlated by key, request and job, and the metrics
    lines = json_lines(captured.stream.getvalue())
    assert any(
        line.get("message") == "transcribed" and line.get("key_id") == item.key_id and line.get("function_request_id")
        for line in lines
    ), lines[:5]
    assert any(line.get("message") == "request refused" and line.get("code") == "invalid_api_key" for line in lines)
    # powertools' EMF metrics of the API, the worker and the reconciler were printed and captured
    assert '"_aws"' in logs and all(
        f'"{name}"' in logs for name in ("CreditsCharged", "WorkerMessages", "ReservationsReleased")
    )
    assert all(text.strip() for text in captured.texts) and len(captured.texts) >= 5

    assert_clean(captured, logs)


def test_the_checks_find_what_they_look_for(captured, wav):
    """The detectors themselves: each secret, written to a log, is found."""
    api_key = generate_api_key()
    captured.api_keys.append(api_key)
    captured.audios.append(wav)
    captured.texts.append("The quick brown fox jumps over the lazy dog.")
    captured.secrets.append(PROMPT)
    assert_clean(captured, captured.text())  # nothing logged yet: clean
    inside_a_body = base64.b64encode(b"--b\r\n" + wav).decode()  # the audio at another byte alignment
    for leak in (
        f"authorization: Bearer {api_key}",
        f"key={api_key[:24]}",
        inside_a_body,
        "text=... jumps over the lazy ...",
        f"prompt: {PROMPT}",
    ):
        with pytest.raises(AssertionError):
            assert_clean(captured, leak)
    infery_logger.info("looked up", extra={"api_key": api_key})  # through the captured handler
    with pytest.raises(AssertionError):
        assert_clean(captured, captured.text())
