"""Over a thousand generated hostile requests through the real handler, against moto.

Every request (tests/support/hostile_requests.py draws them) must get a 4xx in OpenAI's error shape with a message
a person can read and no internal detail. The model is a stand-in that counts its calls: a request refused before
inference must never reach it. After each test nothing is charged (the key's balance and the whole ledger are as they
were, no reservation is open), and nothing is left behind: no job row, no object under the key's uploads/, no queue
message, no idempotency record. The handler's memory is traced per request (tracemalloc's peak over what was
allocated before the call) and must stay under MEMORY_BOUND_BYTES plus MEMORY_PER_BODY_BYTE per byte of body.

The count of generated requests is kept per category; the last test checks that there were at least 1,000 and
prints the counts (whether or not pytest captures output).
"""

from __future__ import annotations

import base64
import collections
import json
import os
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local_stack.processes import free_port
from local_stack.template import LocalTemplate, create_buckets, create_queues, create_tables, create_topics
from tests.support import storage
from tests.support.api import ROOT, TRANSCRIPTIONS, Api, Reply
from tests.support.hostile_requests import (
    ALL_POSTS,
    REAL_AUDIO,
    SYNC_POSTS,
    TRANSCRIPTION_JOBS,
    UPLOADS,
    HostileRequest,
    audio_with_lying_headers,
    bad_keys,
    base64_of_non_audio,
    check_message,
    check_refusal,
    cut_off_multipart,
    flac,
    lying_multipart,
    oversized_bodies,
    poisoned_forms,
    poisoned_uploads,
    random_bodies,
    undecodable_audio,
    webm,
    with_hostile_headers,
    wrong_boundaries,
)
from tests.support.hostile_requests import Form as HostileForm
from tests.support.hostile_requests import encoded as encoded_request
from tests.support.storage import Leftovers, make_audio_resources

SEEDED = 50
MINIMUM_GENERATED = 1000
# The handler's own allocations for one refused request, on top of what its body costs: the body arrives in the
# event as base64 (4/3), is decoded (1), may be split into parts (1) and decoded again from JSON base64 (3/4).
MEMORY_BOUND_BYTES = 8 * 1024 * 1024
MEMORY_PER_BODY_BYTE = 6
# CI replays the same examples every run (a failure is reproducible); a developer's run explores new ones
PROFILE = {"deadline": None, "derandomize": os.environ.get("CI") == "true", "print_blob": True,
           "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                     HealthCheck.large_base_example]}

GENERATED: collections.Counter[str] = collections.Counter()
STATUSES: collections.Counter[int] = collections.Counter()
PEAKS: list[int] = []
CATEGORIES = ("random bytes", "oversized body", "cut-off multipart", "wrong boundary", "lying multipart",
              "base64 of non-audio", "audio with lying headers", "unicode and NUL", "uploads", "hostile headers",
              "bad key", "undecodable audio")


# --- fixtures: storage to check for leftovers, a handler whose model counts its calls ----------------------------

@pytest.fixture(scope="module")
def moto_url(local_template: LocalTemplate) -> Iterator[str]:
    """This module's own moto, in a process of its own (local_stack.moto_server, as the local stack runs it), so the
    memory traced here is the handler's: moto's server allocates about 10 MB for every request it serves."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "local_stack.moto_server", "-H", "127.0.0.1", "-p", str(port)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto did not start") from None
                time.sleep(0.1)
        credentials = {"endpoint_url": url, "region_name": local_template.region,
                       "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        create_tables(local_template, boto3.client("dynamodb", **credentials))
        create_queues(local_template, boto3.client("sqs", **credentials))
        create_topics(local_template, boto3.client("sns", **credentials))
        create_buckets(local_template, boto3.client("s3", **credentials))
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def audio_resources(moto_url: str, local_template: LocalTemplate) -> dict[str, str]:
    """The bucket, queue and tables on this module's moto (its fixture made them)."""
    return make_audio_resources(moto_url, local_template)


storage_endpoints = storage.storage_endpoints  # autouse: S3, SQS and SNS at this module's moto


# What the real model server answers for bytes it cannot decode (endpoint/whisper_server.py, as SageMaker wraps it)
UNDECODABLE = {"ErrorCode": "CLIENT_ERROR_FROM_MODEL", "OriginalStatusCode": 400,
               "Message": "Received client error (400) from primary",
               "OriginalMessage": json.dumps({"error": "The audio could not be decoded: the file is damaged or not "
                                                       "in a supported format (MP3, MP4, M4A, WAV, WebM, OGG, FLAC).",
                                              "code": "undecodable_audio"})}


@dataclass
class Target:
    """The handler, the key every request uses, and the checks each answer must pass."""

    api: Api
    api_key: str
    model: Any
    model_may_be_called: bool = False
    sent: int = 0
    peaks: list[int] = field(default_factory=list)

    def send(self, request: HostileRequest) -> dict[str, Any]:
        calls_before = self.model.calls
        reply = self._call(request)
        headers = {name.lower(): str(value) for name, value in (reply.raw.get("headers") or {}).items()}
        headers |= {name.lower(): str(values[0]) for name, values in (reply.raw.get("multiValueHeaders") or {}).items()}
        assert headers.get("x-request-id") == reply.request_id, reply.raw
        error = check_refusal(reply.status, headers, reply.text.encode(), request)
        if not self.model_may_be_called:
            assert self.model.calls == calls_before, f"a refused request reached the model: {request!r}"
        GENERATED[next(name for name in CATEGORIES if request.category.startswith(name))] += 1
        STATUSES[reply.status] += 1
        self.sent += 1
        return error

    def _call(self, request: HostileRequest) -> Reply:
        event_reply = None
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        try:
            event_reply = self.api.call(request.method, request.path, body=request.body, headers=request.headers)
        finally:
            _, peak = tracemalloc.get_traced_memory()
        used = peak - before
        self.peaks.append(used)
        PEAKS.append(used)
        bound = MEMORY_BOUND_BYTES + MEMORY_PER_BODY_BYTE * (len(request.body) + sum(
            len(name) + len(value) for name, value in request.headers))
        assert used <= bound, f"{used:,} bytes traced for one request (bound {bound:,}): {request!r}"
        return event_reply


@pytest.fixture
def target(fake_runtime, load_api, accounts, audio_resources, storage_endpoints) -> Iterator[Target]:
    url, model = fake_runtime(424, UNDECODABLE, {"x-amzn-ErrorType": "ModelError"})
    api = load_api(url)
    api_key, item = accounts.new_key(SEEDED, rate_limit_per_minute=1_000_000)  # the limit is not under test here
    leftovers = Leftovers(audio_resources)
    idempotency = boto3.resource("dynamodb").Table(audio_resources["idempotency_table"])
    records_before = idempotency.scan(Select="COUNT", ConsistentRead=True)["Count"]
    ledger_before = accounts.ledger_size()
    for path in ALL_POSTS:  # a cold start's first calls load botocore's models: not what one request costs
        api.call("POST", path, body=b"{", content_type="application/json", api_key=api_key)
    tracemalloc.start()
    try:
        hostile = Target(api, api_key, model)
        yield hostile
    finally:
        tracemalloc.stop()
    assert accounts.balance(item) == SEEDED
    assert accounts.ledger(item, "settle") == []
    assert accounts.open_reservations(item) == []
    if hostile.model_may_be_called:  # each request the model refused was reserved, then refunded in full
        assert accounts.ledger_sum(item) == SEEDED
        entries = accounts.ledger(item)
        assert {entry["kind"] for entry in entries} <= {"topup", "reserve", "refund"}, entries
        assert len(accounts.ledger(item, "reserve")) == len(accounts.ledger(item, "refund")) == model.calls
    else:
        assert model.calls == 0, "a refused request reached the model"
        assert accounts.ledger_size() == ledger_before
    leftovers.assert_none(item)
    assert idempotency.scan(Select="COUNT", ConsistentRead=True)["Count"] == records_before


# --- the generated requests ------------------------------------------------------------------------------------------
# Strategies need the key, which exists only once the fixture has run: each test draws with st.data().

@settings(max_examples=130, **PROFILE)
@given(data=st.data())
def test_random_bytes_to_every_post(target, data):
    target.send(data.draw(random_bodies(target.api_key)))


@settings(max_examples=12, **PROFILE)
@given(data=st.data())
def test_bodies_past_the_payload_limit_are_refused_in_bounded_memory(target, data):
    target.send(data.draw(oversized_bodies(target.api_key)))


@settings(max_examples=110, **PROFILE)
@given(data=st.data())
def test_a_cut_off_multipart_body_is_never_transcribed(target, data):
    target.send(data.draw(cut_off_multipart(target.api_key)))


@settings(max_examples=100, **PROFILE)
@given(data=st.data())
def test_a_boundary_that_is_not_the_bodys_is_400(target, data):
    target.send(data.draw(wrong_boundaries(target.api_key)))


@settings(max_examples=120, **PROFILE)
@given(data=st.data())
def test_lying_multipart_bodies_are_refused(target, data):
    target.send(data.draw(lying_multipart(target.api_key)))


@settings(max_examples=90, **PROFILE)
@given(data=st.data())
def test_base64_of_anything_but_audio_is_refused(target, data):
    target.send(data.draw(base64_of_non_audio(target.api_key)))


@settings(max_examples=90, **PROFILE)
@given(data=st.data())
def test_audio_whose_header_lies_is_refused_before_any_credit_is_held(target, data):
    target.send(data.draw(audio_with_lying_headers(target.api_key)))


@settings(max_examples=170, **PROFILE)
@given(data=st.data())
def test_unicode_and_nul_in_every_field_with_one_bad_field(target, data):
    target.send(data.draw(poisoned_forms(target.api_key)))


@settings(max_examples=110, **PROFILE)
@given(data=st.data())
def test_uploads_with_unicode_and_nul_and_one_bad_field(target, data):
    target.send(data.draw(poisoned_uploads(target.api_key)))


@settings(max_examples=100, **PROFILE)
@given(data=st.data())
def test_huge_and_repeated_headers_and_a_lying_content_length(target, data):
    key = target.api_key
    base = st.one_of(random_bodies(key), poisoned_forms(key), poisoned_uploads(key), cut_off_multipart(key),
                     lying_multipart(key))
    target.send(data.draw(with_hostile_headers(base, key)))


@settings(max_examples=50, **PROFILE)
@given(data=st.data())
def test_a_bad_key_is_401_whatever_the_body(target, data):
    key = target.api_key
    target.send(data.draw(bad_keys(st.one_of(random_bodies(key), poisoned_forms(key), poisoned_uploads(key)))))


@settings(max_examples=40, **PROFILE)
@given(data=st.data())
def test_audio_only_the_model_can_refuse_is_400_and_refunded(target, data):
    """Bytes that pass every check before inference; the stand-in refuses them as the model server does."""
    target.model_may_be_called = True
    form = HostileForm({"model": "whisper-1"}, audio=data.draw(undecodable_audio()))
    request = data.draw(encoded_request(form, data.draw(st.sampled_from(SYNC_POSTS)), target.api_key,
                                        "undecodable audio"))
    error = target.send(request)
    assert error["code"] in ("undecodable_audio", "unsupported_audio_format", "sample_rate_too_low",
                             "audio_too_long"), error


# --- what the generated requests found, each pinned by a request that reproduced it -------------------------------

def _refusal(target: Target, path: str, body: bytes, content_type: str | None = "application/json",
             authorization: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = [("Authorization", authorization or f"Bearer {target.api_key}")]
    headers += [("Content-Type", content_type)] if content_type is not None else []
    reply = target.api.call("POST", path, body=body, headers=headers)
    error = reply.json()["error"]
    check_message(error["message"])
    return reply.status, error


def test_finding_a_content_type_is_quoted_written_out_and_cut_short(target):
    """Was: "... not '\x08'." with the raw control character, and a 16 KB Content-Type echoed whole."""
    status, error = _refusal(target, TRANSCRIPTIONS, b"x", "\x08")
    assert (status, error["code"]) == (415, "unsupported_content_type")
    assert error["message"].endswith("not '\\x08'.")
    status, error = _refusal(target, TRANSCRIPTIONS, b"x", "text/" + "x" * 16_000)
    assert status == 415 and len(error["message"]) < 200


def test_finding_control_characters_a_message_quotes_are_written_out(target):
    """Was: a field's name, a model's name and a key's first characters quoted with their raw NUL and escapes."""
    status, error = _refusal(target, UPLOADS, json.dumps({"a\x00b": 1}).encode())
    assert (status, error["code"]) == (400, "unknown_parameter")
    assert error["message"] == "Unrecognized request argument supplied: a\\x00b"
    status, error = _refusal(target, UPLOADS, json.dumps({"model": "whisper\x1f"}).encode())
    assert (status, error["code"]) == (400, "model_not_found") and "'whisper\\x1f'" in error["message"]
    status, error = _refusal(target, UPLOADS, b"{}", authorization="Bearer \x080000000000000000000000")
    assert status == 401 and "\\x08" in error["message"]


@pytest.mark.parametrize("path", [UPLOADS, TRANSCRIPTIONS, TRANSCRIPTION_JOBS])
@pytest.mark.parametrize("name", ["prompt", "filename", "model"])
def test_finding_an_unpaired_surrogate_in_a_text_field_is_400_not_500(target, path, name):
    """Was: {"prompt": "\\ud800"} (valid JSON) answered 500 on uploads, jobs and the sync call."""
    fields = {"model": "whisper-1"} if path != UPLOADS else {}
    if path != UPLOADS:
        fields["audio"] = base64.b64encode(REAL_AUDIO).decode()
    body = json.dumps({**fields, name: "caf\udce9"}).encode()  # ensure_ascii: the surrogate travels as \\udce9
    status, error = _refusal(target, path, body)
    assert (status, error["code"], error["param"]) == (400, "invalid_value", name), error
    assert "unpaired surrogate" in error["message"]


@pytest.mark.parametrize(("audio", "code"), [
    (flac(1, 100, b"\x00" * 64), "sample_rate_too_low"),
    (flac(16_000, 16_000 * 40_000, b"\x00" * 64), "audio_too_long"),
    (webm(36_001_000.0, b"\x00" * 32), "audio_too_long"),
], ids=["flac-1-hz", "flac-11-hours", "webm-10-hours-and-a-second"])
def test_finding_a_job_whose_audio_header_lies_is_refused_before_anything_is_stored(target, audio, code):
    """Was: 202, the file stored under uploads/, a job row and a queue message for a job that could only fail."""
    body = json.dumps({"model": "whisper-1", "audio": base64.b64encode(audio).decode()}).encode()
    for path in (TRANSCRIPTION_JOBS, TRANSCRIPTIONS):
        status, error = _refusal(target, path, body)
        assert (status, error["code"]) == (400, code), error


def test_the_suite_sent_at_least_a_thousand_generated_requests(capsys):
    """Runs last (pytest keeps a module's order): the counts, printed past pytest's capture, so they show with or
    without -s."""
    if set(GENERATED) != set(CATEGORIES):
        pytest.skip(f"only part of the suite ran: {sorted(GENERATED)}")
    total = sum(GENERATED.values())
    counts = ", ".join(f"{name}: {count}" for name, count in GENERATED.items())
    summary = (f"hostile requests sent to the handler: {total} ({counts}); statuses: {dict(sorted(STATUSES.items()))};"
               f" largest traced memory peak of one request: {max(PEAKS) / 1e6:.1f} MB")
    with capsys.disabled():
        print(f"\n{summary}")
    assert total >= MINIMUM_GENERATED, summary
