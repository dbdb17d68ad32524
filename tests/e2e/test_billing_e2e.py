"""Billing through the whole local stack: reserve, settle and refund under concurrency and failure, and idempotency.

The balance is checked three ways each time: the API's headers and GET /v1/usage, the key's row, and the
ledger as stored in the stack's DynamoDB (moto), read directly with boto3.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
import wave
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests
from infery.domain.ids import idempotency_id

from tests.support.speech import SCRIPT, encode, synthesize_wav, word_recall
from tests.support.stack import RunningStack, start_stack, stop_stack

pytestmark = pytest.mark.e2e

SECONDS_PER_CREDIT = 5  # template.yaml's SecondsPerCredit default
SHORT_TEXT = "The quick brown fox jumps over the lazy dog."
CONCURRENT_REQUESTS = 50
AFFORDABLE_REQUESTS = 20
# twice the default handler processes: more requests reach the credit store at the same moment, and the
# refusals do not wait long in the gateway's queue (it gives a request 29 s from its arrival, queueing included)
HANDLER_PROCESSES = 6
OPENAI_ERROR_FIELDS = {"message", "type", "param", "code"}


def declared_seconds(wav: bytes) -> float:
    with wave.open(io.BytesIO(wav)) as reader:
        return reader.getnframes() / reader.getframerate()


def reservation_for(seconds: float) -> int:
    """README: the reservation covers the declared duration plus 2 % and 0.5 s, at 1 credit per started 5 s."""
    return max(1, math.ceil((seconds * 1.02 + 0.5) / SECONDS_PER_CREDIT))


@pytest.fixture(scope="module")
def short_wav() -> bytes:
    """About 3.3 s of speech: 1 credit, and a reservation of 1 credit too."""
    wav = encode(synthesize_wav(SHORT_TEXT), "wav")  # a clean 16 kHz WAV with an exact data size
    seconds = declared_seconds(wav)
    assert 2 < seconds and reservation_for(seconds) == 1, seconds
    return wav


@pytest.fixture(scope="module")
def long_wav() -> bytes:
    """About 70 s of speech (the script six times): inference takes seconds on a CPU, long enough to be hit."""
    wav = encode(synthesize_wav(" ".join([SCRIPT] * 6)), "wav")
    assert declared_seconds(wav) > 60 and len(wav) < 4 * 1024 * 1024  # under the synchronous limit
    return wav


def post_wav(
    stack: RunningStack, wav: bytes, api_key: str | None = None, headers: dict[str, str] | None = None, **fields: str
) -> requests.Response:
    return requests.post(
        f"{stack.base_url}/audio/transcriptions",
        timeout=180,
        headers={**stack.headers(api_key), **(headers or {})},
        files={"file": ("speech.wav", wav)},
        data={"model": "whisper-1", **fields},
    )


def assert_openai_error(
    response: requests.Response, status: int | tuple[int, ...], code: str | None = None, error_type: str | None = None
) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("x-request-id")
    assert "x-infery-credits-used" not in response.headers
    error = response.json()["error"]
    assert set(error) == OPENAI_ERROR_FIELDS
    assert error["message"] and "Traceback" not in error["message"]
    if code is not None:
        assert error["code"] == code, error
    if error_type is not None:
        assert error["type"] == error_type, error
    return error


def by_request(entries: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for entry in entries:
        grouped.setdefault(entry["request_id"], []).append(entry)
    return grouped


def assert_ledger_is_consistent(entries: list[dict], final_balance: int) -> None:
    """The ledger as a whole: never below zero, and (from an empty key) its credits add up to the balance."""
    assert all(entry["balance_after"] >= 0 for entry in entries), entries
    assert sum(entry["credits"] for entry in entries) == final_balance
    assert {entry["kind"] for entry in entries} <= {"topup", "reserve", "settle", "refund", "release"}


# 1. Many concurrent requests at a key that can pay for only some of them


@pytest.fixture(scope="module")
def poor_stack() -> Iterator[RunningStack]:
    process, running = start_stack(credits=AFFORDABLE_REQUESTS, concurrency=HANDLER_PROCESSES)
    try:
        yield running
    finally:
        stop_stack(process)


def _all_at_once(count: int, send) -> list:
    start_together = threading.Barrier(count)

    def run(_: int):
        start_together.wait(timeout=60)
        return send()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def test_concurrent_requests_never_overspend_the_balance(poor_stack: RunningStack, short_wav: bytes):
    before = poor_stack.usage()
    key_id = before["key_id"]
    assert before["balance"] == AFFORDABLE_REQUESTS

    def send() -> requests.Response:
        # The local gateway's listen backlog is too short for 50 connections at once (see the xfail below): a
        # connection it reset was never read, so it is sent again. Were one read and answered all the same, the
        # ledger would show a request that no response names, and the checks below would fail.
        for _ in range(10):
            try:
                return post_wav(poor_stack, short_wav)
            except requests.ConnectionError:
                time.sleep(0.2)
        return post_wav(poor_stack, short_wav)

    responses = _all_at_once(CONCURRENT_REQUESTS, send)

    statuses = Counter(response.status_code for response in responses)
    assert statuses == {200: AFFORDABLE_REQUESTS, 402: CONCURRENT_REQUESTS - AFFORDABLE_REQUESTS}, [
        (response.status_code, response.text[:200]) for response in responses if response.status_code not in (200, 402)
    ]
    succeeded = [response for response in responses if response.status_code == 200]
    refused = [response for response in responses if response.status_code == 402]
    for response in succeeded:
        assert response.headers["x-infery-credits-used"] == "1"
        assert 0 <= int(response.headers["x-infery-credits-balance"]) < AFFORDABLE_REQUESTS
        assert response.json()["credits_used"] == 1
        assert word_recall(response.json()["text"], ("quick", "fox", "lazy", "dog")) >= 0.5, response.text
    for response in refused:
        assert_openai_error(response, 402, "insufficient_credits", "insufficient_quota")
        assert int(response.headers["x-infery-credits-balance"]) >= 0
    request_ids = [response.headers["x-request-id"] for response in responses]
    assert len(set(request_ids)) == CONCURRENT_REQUESTS

    after = poor_stack.usage()
    assert after["balance"] == 0
    assert poor_stack.key_row(key_id)["credits"] == 0
    assert after["total"]["requests"] == AFFORDABLE_REQUESTS and after["total"]["credits"] == AFFORDABLE_REQUESTS
    assert after["credits_added"] == AFFORDABLE_REQUESTS

    ledger = poor_stack.ledger(key_id)
    assert_ledger_is_consistent(ledger, final_balance=0)
    spent = [entry for entry in ledger if entry["kind"] != "topup"]
    assert sum(entry["credits"] for entry in spent) == after["balance"] - before["balance"]
    assert Counter(entry["kind"] for entry in spent) == {"reserve": AFFORDABLE_REQUESTS, "settle": AFFORDABLE_REQUESTS}
    # every reservation took one credit from a different balance: none was spent twice
    reserves = [entry for entry in spent if entry["kind"] == "reserve"]
    assert sorted(entry["balance_after"] for entry in reserves) == list(range(AFFORDABLE_REQUESTS))
    grouped = by_request(spent)
    assert set(grouped) == {response.headers["x-request-id"] for response in succeeded}
    for response in succeeded:
        entries = {entry["kind"]: entry for entry in grouped[response.headers["x-request-id"]]}
        assert set(entries) == {"reserve", "settle"}
        assert entries["reserve"]["credits"] == -1
        assert entries["settle"]["credits"] == 0 and entries["settle"]["billed_credits"] == 1
    for response in refused:  # a refused request leaves no trace in the ledger
        assert response.headers["x-request-id"] not in grouped
    assert poor_stack.open_reservations() == []


def _listen_backlog(port: int) -> int:
    """The accept queue a listening socket was given: `ss` shows it as the Send-Q of a LISTEN socket."""
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2) to read the listening socket's backlog")
    lines = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    [listening] = [line.split() for line in lines if line.strip()]
    return int(listening[2])


def test_the_gateway_can_queue_fifty_connections_at_once(poor_stack: RunningStack):
    # a burst of 50 connections is reset only when the gateway is slow to accept, so the burst itself is no
    # reliable test; the accept queue that makes it fail is checked instead
    assert _listen_backlog(int(poor_stack.base_url.rsplit(":", 1)[1].split("/")[0])) >= CONCURRENT_REQUESTS


# 2. The model fails or stalls mid-request: the reservation is refunded in full, and the gateway's timeout


@pytest.fixture(scope="module")
def single_worker_stack() -> Iterator[RunningStack]:
    """One handler process, so a second request waits in the gateway's queue behind the first."""
    process, running = start_stack(credits=1_000, concurrency=1)
    try:
        yield running
    finally:
        stop_stack(process)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _in_background(send) -> tuple[threading.Thread, list[requests.Response]]:
    responses: list[requests.Response] = []
    thread = threading.Thread(target=lambda: responses.append(send()), daemon=True)
    thread.start()
    return thread, responses


def _entries_of(stack: RunningStack, key_id: str, request_id: str) -> list[dict]:
    return [entry for entry in stack.ledger(key_id) if entry["request_id"] == request_id]


@pytest.fixture(scope="module")
def stalled_model(single_worker_stack: RunningStack, short_wav: bytes) -> dict:
    """The model server stops answering (SIGSTOP) while a request is in it and a second one waits behind it.

    The first request's call to the model times out (27 s, the handler's own 504); the second waits in the
    gateway's queue until the gateway's 29 s integration timeout answers it with 504 "nothing was charged".
    Then the model server resumes, and whatever still runs is allowed to finish before anything is checked.
    """
    stack = single_worker_stack
    before = stack.usage()
    model_server = stack.model_server_pid
    os.kill(model_server, 0)  # alive: the test that kills it runs after this one
    os.kill(model_server, signal.SIGSTOP)
    try:
        first, first_response = _in_background(lambda: post_wav(stack, short_wav))
        _wait_for(lambda: stack.open_reservations() or first_response, "the first request's reservation")
        assert not first_response, first_response[0].text
        second, second_response = _in_background(lambda: post_wav(stack, short_wav))
        second.join(timeout=120)
        first.join(timeout=120)
    finally:
        os.kill(model_server, signal.SIGCONT)
    # the one handler process takes events in order: once this answers, everything sent before it has ended
    after = stack.usage()
    return {"before": before, "after": after, "first": first_response[0], "second": second_response[0]}


def test_a_request_whose_model_call_times_out_is_refunded(single_worker_stack, stalled_model):
    response = stalled_model["first"]
    assert_openai_error(response, 504, error_type="server_error")  # ours (model_timeout), or the gateway's
    entries = _entries_of(single_worker_stack, stalled_model["before"]["key_id"], response.headers["x-request-id"])
    assert sorted(entry["kind"] for entry in entries) == ["refund", "reserve"]
    assert sum(entry["credits"] for entry in entries) == 0
    assert single_worker_stack.open_reservations() == []


def test_a_request_the_gateway_timed_out_is_not_charged(single_worker_stack, stalled_model):
    response = stalled_model["second"]
    error = assert_openai_error(response, 504, code="timeout", error_type="server_error")
    assert "nothing was charged" in error["message"]
    entries = _entries_of(single_worker_stack, stalled_model["before"]["key_id"], response.headers["x-request-id"])
    assert sum(entry["credits"] for entry in entries) == 0, entries
    assert stalled_model["after"]["balance"] == stalled_model["before"]["balance"]


def test_killing_the_model_server_mid_request_refunds_the_reservation(
    single_worker_stack: RunningStack, long_wav: bytes, short_wav: bytes
):
    stack = single_worker_stack
    before = stack.usage()
    key_id = before["key_id"]
    expected_reservation = reservation_for(declared_seconds(long_wav))
    model_server = stack.model_server_pid
    idle_cpu = _cpu_seconds(model_server)
    sender, responses = _in_background(lambda: post_wav(stack, long_wav))
    try:
        # in flight: its credits are reserved, and the model server has started working on it
        _wait_for(lambda: stack.open_reservations() or responses, "the reservation")
        assert not responses, f"the request ended before it was reserved: {responses[0].text}"
        _wait_for(lambda: _cpu_seconds(model_server) > idle_cpu + 0.5 or responses, "the model server to start")
        assert not responses, f"inference ended before the model server was killed: {responses[0].text}"
    finally:
        os.kill(model_server, signal.SIGKILL)
        sender.join(timeout=180)
    [response] = responses

    error = assert_openai_error(response, (502, 503), error_type="server_error")
    assert error["code"] in ("model_error", "model_unavailable")
    request_id = response.headers["x-request-id"]
    after = stack.usage()
    assert after["balance"] == before["balance"]
    assert stack.key_row(key_id)["credits"] == before["balance"]
    entries = _entries_of(stack, key_id, request_id)
    assert sorted(entry["kind"] for entry in entries) == ["refund", "reserve"]
    moved = {entry["kind"]: entry["credits"] for entry in entries}
    assert moved["reserve"] == -expected_reservation and moved["refund"] == expected_reservation
    assert stack.open_reservations() == []
    [listed] = [request for request in after["recent_requests"] if request["request_id"] == request_id]
    assert listed["status"] == "refunded" and listed["credits"] == 0

    # with the model server gone, the next request is refused as unavailable, and refunded too if it was reserved
    again = post_wav(stack, short_wav)
    assert_openai_error(again, (502, 503), error_type="server_error")
    again_entries = _entries_of(stack, key_id, again.headers["x-request-id"])
    assert sum(entry["credits"] for entry in again_entries) == 0
    assert {entry["kind"] for entry in again_entries} in ({"reserve", "refund"}, set())
    assert stack.usage()["balance"] == before["balance"]
    assert_ledger_is_consistent(stack.ledger(key_id), final_balance=stack.usage()["balance"])


# 3. Idempotency-Key: a retry gets the first answer back and is charged once


@pytest.fixture
def fresh_key(stack: RunningStack) -> tuple[str, str]:
    """A key of its own on the shared stack (the development key's balance is tracked elsewhere)."""
    return stack.create_key(f"idempotency-{uuid.uuid4().hex[:8]}", 100)


def _assert_charged_once(stack: RunningStack, key_id: str, api_key: str, request_id: str, credits: int) -> None:
    assert stack.usage(api_key)["balance"] == 100 - credits
    entries = [entry for entry in stack.ledger(key_id) if entry["kind"] != "topup"]
    assert sorted(entry["kind"] for entry in entries) == ["reserve", "settle"]
    assert {entry["request_id"] for entry in entries} == {request_id}
    [settle] = [entry for entry in entries if entry["kind"] == "settle"]
    assert settle["billed_credits"] == credits
    assert_ledger_is_consistent(stack.ledger(key_id), final_balance=100 - credits)


def test_sdk_retry_with_the_same_idempotency_key_is_answered_once_and_charged_once(stack, fresh_key, speech_files):
    key_id, api_key = fresh_key
    client = stack.client(api_key=api_key)
    audio = speech_files["mp3"].read_bytes()
    idempotency = {"Idempotency-Key": f"order-{uuid.uuid4()}"}

    first = client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("meeting.mp3", audio), extra_headers=idempotency
    )
    retry = client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("meeting.mp3", audio), extra_headers=idempotency
    )

    assert "idempotent-replayed" not in first.headers
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.headers["x-request-id"] != first.headers["x-request-id"]
    assert retry.headers["x-infery-original-request-id"] == first.headers["x-request-id"]
    assert retry.parse().text == first.parse().text and word_recall(first.parse().text) >= 0.7
    used = int(first.headers["x-infery-credits-used"])
    assert used == 3 and retry.headers["x-infery-credits-used"] == first.headers["x-infery-credits-used"]
    # charged under the (key, Idempotency-Key) pair, so that any retry finds the charge
    _assert_charged_once(stack, key_id, api_key, idempotency_id(key_id, idempotency["Idempotency-Key"]), used)

    # the same key for other audio is refused, and costs nothing
    with pytest.raises(openai.BadRequestError) as raised:
        client.audio.transcriptions.create(
            model="whisper-1", file=("other.flac", speech_files["flac"].read_bytes()), extra_headers=idempotency
        )
    assert raised.value.status_code == 400
    assert raised.value.response.json()["error"]["code"] == "idempotency_key_reused"
    assert raised.value.response.json()["error"]["param"] == "Idempotency-Key"
    # charged under the (key, Idempotency-Key) pair, so that any retry finds the charge
    _assert_charged_once(stack, key_id, api_key, idempotency_id(key_id, idempotency["Idempotency-Key"]), used)


def test_raw_http_retry_with_the_same_idempotency_key_is_answered_once_and_charged_once(
    stack, fresh_key, short_wav, speech_files
):
    key_id, api_key = fresh_key
    idempotency = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
    first = post_wav(stack, short_wav, api_key, idempotency, response_format="verbose_json")
    retry = post_wav(stack, short_wav, api_key, idempotency, response_format="verbose_json")
    assert first.status_code == 200 and retry.status_code == 200, (first.text, retry.text)
    assert "idempotent-replayed" not in first.headers and retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == first.json()
    assert first.json()["credits_used"] == 1
    assert retry.headers["x-infery-original-request-id"] == first.headers["x-request-id"]
    _assert_charged_once(stack, key_id, api_key, idempotency_id(key_id, idempotency["Idempotency-Key"]), 1)

    # a different file, or the same file with other options, under the same key: 400, and nothing charged
    other_file = post_wav(stack, speech_files["wav"].read_bytes(), api_key, idempotency, response_format="verbose_json")
    assert_openai_error(other_file, 400, "idempotency_key_reused")
    other_options = post_wav(stack, short_wav, api_key, idempotency, response_format="text")
    assert_openai_error(other_options, 400, "idempotency_key_reused")
    _assert_charged_once(stack, key_id, api_key, idempotency_id(key_id, idempotency["Idempotency-Key"]), 1)

    # a new key is a new request, charged again
    fresh = post_wav(stack, short_wav, api_key, {"Idempotency-Key": f"retry-{uuid.uuid4()}"})
    assert fresh.status_code == 200 and "idempotent-replayed" not in fresh.headers
    assert stack.usage(api_key)["balance"] == 98
