"""Files past the synchronous limit, end to end: presigned uploads, jobs, the worker, webhooks, batch drops and
`infery transcribe`, all through one local stack of this module's own (`python -m local_stack`).

What the API says is checked against what the stack stored: the ledger in its DynamoDB and the dead-letter
queue in its SQS (moto), read directly with boto3 and the environment from the stack's state file.
"""

from __future__ import annotations

import io
import json
import queue
import re
import threading
import time
import wave
from collections import Counter
from collections.abc import Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from infery.domain.ids import job_id_for_object
from infery.domain.webhook_signature import SIGNATURE_HEADER, verify

from local_stack.template import LocalTemplate, load_template
from tests.support.speech import KEY_WORDS, LONG_KEY_WORDS, encode, large_wav, synthesize_wav, word_recall
from tests.support.stack import RunningStack, running_stack
from tests.support.stack_calls import (
    JOB_TIMEOUT_SECONDS,
    cli,
    create_upload,
    credits_for,
    get_job,
    ledger_entries,
    plain_text_result,
    upload_file,
    usage,
    wait_for_job,
)

pytestmark = pytest.mark.e2e

LARGE_BYTES = 20_000_000
MIN_LONG_RECALL = 0.8
MIN_SHORT_RECALL = 0.7
SRT_CUE = re.compile(r"^\d+\n\d{2}:\d{2}:\d{2},\d{3} --> \d{2}:\d{2}:\d{2},\d{3}\n.+$", re.MULTILINE)
VTT_CUE = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d{3} --> \d{2}:\d{2}:\d{2}\.\d{3}\n.+$", re.MULTILINE)


# --- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_stack() -> Iterator[RunningStack]:
    """A stack of this module's own: its dead-letter queue, bucket and ledger see only what these tests do."""
    with running_stack(credits=100_000) as running:
        yield running


@pytest.fixture(scope="module")
def big_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 110 s of real speech as a 48 kHz stereo WAV of at least 20 MB."""
    path = tmp_path_factory.mktemp("large") / "meeting.wav"
    path.write_bytes(large_wav(LARGE_BYTES))
    assert path.stat().st_size >= LARGE_BYTES
    return path


@pytest.fixture(scope="module")
def small_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The short test script (about 12 s) as a clean 16 kHz WAV: well under the synchronous limit."""
    path = tmp_path_factory.mktemp("small") / "speech.wav"
    path.write_bytes(encode(synthesize_wav(), "wav"))
    return path


class WebhookReceiver:
    """A customer's webhook endpoint: records every notification and answers 200."""

    def __init__(self) -> None:
        self.received: queue.Queue[tuple[str, Message, bytes]] = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.put((self.path, self.headers, body))  # looked up case-insensitively
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def wait_for(self, path: str, timeout: float = JOB_TIMEOUT_SECONDS) -> tuple[Message, bytes]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                got_path, headers, body = self.received.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no webhook arrived at {path} in {timeout} s") from None
            if got_path == path:
                return headers, body

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()


# --- helpers -------------------------------------------------------------------------------------------------


def wav_seconds(path_or_bytes: Path | bytes) -> float:
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    with wave.open(io.BytesIO(data)) as reader:
        return reader.getnframes() / reader.getframerate()


def assert_charged_once(stack: RunningStack, key_id: str, job: dict[str, Any], balance_before: int) -> None:
    """One reserve and one settle for the job, the balance down by exactly its credits, and usage says settled."""
    charged = job["credits_used"]
    assert charged == credits_for(job["audio_seconds"]), job
    entries = ledger_entries(stack, key_id, job["id"])
    assert Counter(entry["kind"] for entry in entries) == Counter({"reserve": 1, "settle": 1}), entries
    assert sum(entry["credits"] for entry in entries) == -charged, entries
    settle = next(entry for entry in entries if entry["kind"] == "settle")
    assert settle["billed_credits"] == charged, settle
    report = usage(stack)
    assert report["balance"] == balance_before - charged, (balance_before, charged, report["balance"])
    mine = [request for request in report["recent_requests"] if request["request_id"] == job["id"]]
    assert len(mine) == 1, report["recent_requests"]
    assert mine[0]["status"] == "settled" and mine[0]["credits"] == charged, mine[0]


# --- 1. a 20 MB recording through a presigned upload and a job -----------------------------------------------


def test_a_20_mb_recording_uploads_transcribes_and_is_charged_once(big_stack: RunningStack, big_wav: Path) -> None:
    before = usage(big_stack)
    key_id = before["key_id"]
    upload = create_upload(big_stack, filename="meeting.wav", response_format="verbose_json")
    assert upload["id"].startswith("upl_") and upload["job_id"].startswith("job_"), upload
    assert upload["method"] == "POST" and upload["max_bytes"] >= LARGE_BYTES, upload
    assert upload["webhook_secret"] is None  # no webhook_url, no secret
    assert get_job(big_stack, upload["job_id"])["status"] == "awaiting_upload"

    started = time.monotonic()
    upload_file(upload, "meeting.wav", big_wav.read_bytes())
    job = wait_for_job(big_stack, upload["job_id"])
    elapsed = time.monotonic() - started

    assert job["status"] == "succeeded", job
    assert job["id"] == upload["job_id"] and job["object"] == "transcription.job"
    assert job["progress"] == 1.0 and job["error"] is None
    assert job["filename"] == "meeting.wav"
    seconds = wav_seconds(big_wav)
    assert seconds > 100 and abs(job["audio_seconds"] - seconds) < 1.0, (seconds, job["audio_seconds"])
    result = job["result"]  # rendered in the format the upload asked for
    assert result["duration"] == pytest.approx(seconds, abs=1.0)
    assert word_recall(result["text"], LONG_KEY_WORDS) >= MIN_LONG_RECALL, result["text"]
    assert result["credits_used"] == job["credits_used"]
    assert_charged_once(big_stack, key_id, job, before["balance"])

    srt = plain_text_result(big_stack, job["id"], "srt")
    assert srt.headers["x-infery-credits-used"] == str(job["credits_used"])
    assert srt.text.startswith("1\n00:00:"), srt.text[:200]
    assert len(SRT_CUE.findall(srt.text)) > 5, srt.text[:500]
    assert word_recall(srt.text, LONG_KEY_WORDS) >= MIN_LONG_RECALL

    vtt = plain_text_result(big_stack, job["id"], "vtt")
    assert vtt.text.startswith("WEBVTT"), vtt.text[:200]
    assert len(VTT_CUE.findall(vtt.text)) > 5, vtt.text[:500]
    assert word_recall(vtt.text, LONG_KEY_WORDS) >= MIN_LONG_RECALL

    # reading the result again charges nothing more
    assert usage(big_stack)["balance"] == before["balance"] - job["credits_used"]
    print(f"20 MB job: {big_wav.stat().st_size / 1e6:.1f} MB, {seconds:.1f} s of audio, done in {elapsed:.1f} s")


# --- 2. signed webhooks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("flow", ["jobs", "uploads"])
def test_a_finished_job_is_notified_with_a_verifiable_signature(
    big_stack: RunningStack, small_wav: Path, receiver: WebhookReceiver, flow: str
) -> None:
    hook_path = f"/hooks/{flow}"
    webhook_url = receiver.url(hook_path)
    if flow == "jobs":
        response = requests.post(
            f"{big_stack.base_url}/audio/transcriptions/jobs",
            headers=big_stack.headers(),
            files={"file": ("speech.wav", small_wav.read_bytes())},
            data={"model": "whisper-1", "webhook_url": webhook_url},
            timeout=60,
        )
        assert response.status_code == 202, response.text
        created = response.json()
        job_id, secret = created["id"], created["webhook_secret"]
        assert created["status"] == "queued" and created["webhook_url"] == webhook_url, created
    else:
        upload = create_upload(big_stack, filename="speech.wav", webhook_url=webhook_url)
        job_id, secret = upload["job_id"], upload["webhook_secret"]
        upload_file(upload, "speech.wav", small_wav.read_bytes())
    assert secret and secret.startswith("whsec_")

    headers, body = receiver.wait_for(hook_path)
    signature = headers[SIGNATURE_HEADER]
    assert signature, dict(headers.items())
    assert verify(body, signature, secret), (signature, body[:200])
    assert not verify(body + b" ", signature, secret)  # the signature covers exactly this body
    assert not verify(body, signature, "whsec_not-the-secret")
    assert headers["Content-Type"] == "application/json"

    notified = json.loads(body)
    assert notified["id"] == job_id and notified["status"] == "succeeded", notified
    assert notified["credits_used"] >= 1
    assert word_recall(notified["result"]["text"], KEY_WORDS) >= MIN_SHORT_RECALL, notified["result"]
    assert "webhook_secret" not in notified and "key_hash" not in notified

    deadline = time.monotonic() + 30
    while not (job := get_job(big_stack, job_id))["webhook_attempts"]:
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["status"] == "succeeded"
    assert len(job["webhook_attempts"]) == 1, job["webhook_attempts"]
    assert 200 <= job["webhook_attempts"][0]["status_code"] < 300, job["webhook_attempts"]


# --- 3. `infery transcribe`, as a new user runs it -----------------------------------------------------------


def test_infery_transcribe_uploads_a_large_file_and_shows_progress(big_stack: RunningStack, big_wav: Path) -> None:
    before = usage(big_stack)
    started = time.monotonic()
    result = cli(big_stack, "transcribe", str(big_wav), "--format", "text")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert word_recall(result.stdout, LONG_KEY_WORDS) >= MIN_LONG_RECALL, result.stdout
    assert not result.stdout.lstrip().startswith("{")  # text, not JSON
    # tqdm writes its bars to stderr; the last state of each is at 100 %
    assert re.search(r"upload: +100%", result.stderr), result.stderr[-2000:]
    assert re.search(r"transcribe[^\r\n]*: +100%", result.stderr), result.stderr[-2000:]

    after = usage(big_stack)
    newest = after["recent_requests"][0]
    assert newest["request_id"].startswith("job_") and newest["status"] == "settled", newest
    assert newest["credits"] == credits_for(newest["audio_seconds"]) == credits_for(wav_seconds(big_wav)), newest
    assert after["balance"] == before["balance"] - newest["credits"]
    assert Counter(
        entry["kind"] for entry in ledger_entries(big_stack, after["key_id"], newest["request_id"])
    ) == Counter({"reserve": 1, "settle": 1})
    print(f"infery transcribe of 20 MB: {elapsed:.1f} s")


def test_infery_transcribe_sends_a_small_file_the_synchronous_way(big_stack: RunningStack, small_wav: Path) -> None:
    before = usage(big_stack)
    result = cli(big_stack, "transcribe", str(small_wav), "--format", "srt")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("1\n00:00:00,000 -->"), result.stdout[:200]
    assert word_recall(result.stdout, KEY_WORDS) >= MIN_SHORT_RECALL, result.stdout
    assert "upload" not in result.stderr  # no upload, no job: one synchronous request
    newest = usage(big_stack)["recent_requests"][0]
    assert not newest["request_id"].startswith("job_") and newest["status"] == "settled", newest
    assert usage(big_stack)["balance"] == before["balance"] - newest["credits"]


def test_infery_transcribe_without_a_key_says_how_to_give_one(big_stack: RunningStack, small_wav: Path) -> None:
    result = cli(big_stack, "transcribe", str(small_wav), api_key=None)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "INFERY_API_KEY" in result.stderr and "--api-key" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# --- 4. batch drops into inbox/ ------------------------------------------------------------------------------


def test_a_file_dropped_into_the_inbox_becomes_a_job_charged_once(big_stack: RunningStack, small_wav: Path) -> None:
    before = usage(big_stack)
    key_id = before["key_id"]
    bucket = big_stack.environment["AUDIO_BUCKET_NAME"]
    object_key = f"inbox/{key_id}/meeting.wav"
    put = big_stack.aws_client("s3").put_object(Bucket=bucket, Key=object_key, Body=small_wav.read_bytes())
    # the same object (bucket, key, ETag) is always the same job: this is its id
    job_id = job_id_for_object(bucket, object_key, put["ETag"].strip('"'))

    deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
    while True:
        response = requests.get(f"{big_stack.base_url}/jobs/{job_id}", headers=big_stack.headers(), timeout=30)
        if response.status_code == 200 and response.json()["status"] in ("succeeded", "failed"):
            job = response.json()
            break
        assert response.status_code in (200, 404), response.text
        assert time.monotonic() < deadline, (response.text, usage(big_stack)["recent_requests"][:3])
        time.sleep(0.5)

    assert job["status"] == "succeeded", job
    assert job["filename"] == "meeting.wav"
    assert word_recall(job["result"]["text"], KEY_WORDS) >= MIN_SHORT_RECALL, job["result"]
    assert job["audio_seconds"] == pytest.approx(wav_seconds(small_wav), abs=0.5)
    assert_charged_once(big_stack, key_id, job, before["balance"])


# --- 5. a poisoned upload ------------------------------------------------------------------------------------


def test_an_upload_that_is_not_audio_fails_uncharged_and_leaves_no_dead_letter(big_stack: RunningStack) -> None:
    before = usage(big_stack)
    upload = create_upload(big_stack, filename="report.wav")
    upload_file(upload, "report.wav", b"%PDF-1.7\n% this is a document, not a recording\n" * 2000)
    job = wait_for_job(big_stack, upload["job_id"])

    assert job["status"] == "failed", job
    assert job["error"]["code"] == "unsupported_audio_format", job["error"]
    assert job["credits_used"] is None and "result" not in job, job
    result = requests.get(f"{big_stack.base_url}/jobs/{job['id']}/result", headers=big_stack.headers(), timeout=30)
    assert result.status_code == 409 and result.json()["error"]["code"] == "job_not_finished", result.text

    after = usage(big_stack)
    assert after["balance"] == before["balance"]
    assert all(request["request_id"] != job["id"] for request in after["recent_requests"])
    assert ledger_entries(big_stack, before["key_id"], job["id"]) == []

    sqs = big_stack.aws_client("sqs")
    local = LocalTemplate(load_template())
    dead_letters = local.physical_name("JobsDeadLetterQueue")
    assert dead_letters == "infery-local-JobsDeadLetterQueue"
    jobs_queue = sqs.get_queue_url(QueueName=local.physical_name("JobsQueue"))["QueueUrl"]
    # the worker finished the message (a failed job is an answer): the jobs queue drains, nothing is redriven
    deadline = time.monotonic() + 30
    while True:
        attributes = sqs.get_queue_attributes(
            QueueUrl=jobs_queue, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        if attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}:
            break
        assert time.monotonic() < deadline, attributes
        time.sleep(0.5)
    dlq = sqs.get_queue_url(QueueName=dead_letters)["QueueUrl"]
    assert sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=2).get("Messages", []) == []
    assert (
        sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
            "ApproximateNumberOfMessages"
        ]
        == "0"
    )
    assert get_job(big_stack, job["id"])["status"] == "failed"  # still failed, never retried into success


# --- 6. the synchronous path refuses a large file and points to uploads --------------------------------------


def _wav_of_at_least(big_wav: Path, size: int) -> bytes:
    """The first part of the large recording, as a WAV of just over ``size`` bytes."""
    with wave.open(str(big_wav)) as reader:
        frame_bytes = reader.getsampwidth() * reader.getnchannels()
        frames = reader.readframes(size // frame_bytes + 1)
        params = reader.getparams()
    output = io.BytesIO()
    with wave.open(output, "wb") as writer:
        writer.setparams(params)
        writer.writeframes(frames)
    return output.getvalue()


# 4.5 MB reaches the handler (its own 413); 5 MB, base64-encoded, is past Lambda's 6 MB (the gateway's 413)
@pytest.mark.parametrize("size", [4_500_000, 5_000_000])
def test_a_synchronous_request_over_the_limit_is_413_naming_the_upload_flow(
    big_stack: RunningStack, big_wav: Path, size: int
) -> None:
    before = usage(big_stack)["balance"]
    audio = _wav_of_at_least(big_wav, size)
    assert len(audio) >= size
    response = requests.post(
        f"{big_stack.base_url}/audio/transcriptions",
        headers=big_stack.headers(),
        files={"file": ("meeting.wav", audio)},
        data={"model": "whisper-1"},
        timeout=120,
    )
    assert response.status_code == 413, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("x-request-id")
    error = response.json()["error"]
    assert error["code"] == "audio_too_large", error
    assert "POST /v1/uploads" in error["message"], error
    assert usage(big_stack)["balance"] == before
