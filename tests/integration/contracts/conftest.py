"""Each port's two implementations side by side: the in-memory fake the unit tests run on (tests/support/fakes.py) and
the store on AWS, here against the session's moto. Every contract test runs once on each (``fake`` and ``moto`` in its
id), so a fake that drifts from its store fails here, and not as a unit test that passes for the wrong reason."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from infery.adapters.audio_bucket import AudioStore
from infery.adapters.job_store import JobStore
from infery.domain.keys import ApiKeyItem

from tests.support import storage
from tests.support.fakes import FakeAudio, FakeCredits, FakeJobs, FakeKeys

IMPLEMENTATIONS = ["fake", "moto"]

# the bucket, queues and tables the audio and job stores use, on the session's moto (autouse: boto3 reaches them)
audio_resources = storage.audio_resources
storage_endpoints = storage.storage_endpoints


@dataclass
class CreditsWorld:
    """The credits port, and a key of its books with a balance topped up as an operator tops one up."""

    credits: Any  # FakeCredits or CreditStore
    new_key: Callable[..., ApiKeyItem]  # (balance, shards=1)


@pytest.fixture(params=IMPLEMENTATIONS)
def credits_world(request: pytest.FixtureRequest) -> CreditsWorld:
    if request.param == "moto":
        accounts = request.getfixturevalue("accounts")
        return CreditsWorld(
            accounts.credits, lambda balance, shards=1: accounts.new_key(balance, credit_shards=shards)[1]
        )
    fake_keys, fake_credits = FakeKeys(), FakeCredits()

    def new_key(balance: int, shards: int = 1) -> ApiKeyItem:
        _, item = fake_keys.create(f"contract-{uuid.uuid4().hex[:8]}", 0)
        item = fake_keys.add(item.model_copy(update={"credit_shards": shards, "ledger_parts": shards}))
        # the key's rows exist with nothing on them, as KeyStore.create leaves them
        fake_credits.balances[item.key_hash] = 0
        if shards > 1:
            fake_credits.more_shards[item.key_hash] = [0] * (shards - 1)
        if balance:
            fake_credits.top_up(item, balance, request_id=f"seed-{uuid.uuid4()}")
        return item.model_copy(update={"credits": balance})

    return CreditsWorld(fake_credits, new_key)


@pytest.fixture(params=IMPLEMENTATIONS)
def keys(request: pytest.FixtureRequest) -> Any:
    """FakeKeys or KeyStore, empty of the keys a test makes."""
    return request.getfixturevalue("accounts").keys if request.param == "moto" else FakeKeys()


@pytest.fixture(params=IMPLEMENTATIONS)
def jobs(request: pytest.FixtureRequest, audio_resources: dict[str, str]) -> Iterator[Any]:
    """FakeJobs or JobStore. The jobs table is the session's: the jobs a check leaves (claimed, leases running out)
    are deleted after it, or the reconciler's tests would find them stuck."""
    if request.param != "moto":
        yield FakeJobs()
        return
    table = boto3.resource("dynamodb").Table(audio_resources["jobs_table"])
    before = {item["job_id"] for item in table.scan(ProjectionExpression="job_id", ConsistentRead=True)["Items"]}
    yield JobStore(table)
    for item in table.scan(ProjectionExpression="job_id", ConsistentRead=True)["Items"]:
        if item["job_id"] not in before:
            table.delete_item(Key={"job_id": item["job_id"]})


@pytest.fixture(params=IMPLEMENTATIONS)
def audio(request: pytest.FixtureRequest, audio_resources: dict[str, str]) -> Any:
    """FakeAudio or AudioStore, on the same bucket name."""
    if request.param == "moto":
        return AudioStore(
            boto3.client("s3"), audio_resources["bucket"], max_upload_bytes=25_000_000, upload_expiry_seconds=900
        )
    return FakeAudio(bucket=audio_resources["bucket"])
