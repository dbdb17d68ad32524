"""Schemathesis against a local stack, from the committed openapi.json, with the dev key.

Every operation gets its examples, schemathesis' coverage cases (each field at and past its limits) and generated
requests, valid and invalid (at most MAX_EXAMPLES each). Each answer is checked: no 5xx, a status the document
lists, its content type and schema, its documented headers, invalid data refused, and a request without the key
refused. Two checks are left out, each for a reason the document cannot change:
- positive_data_acceptance: a schema can say a file is bytes, not that the bytes are audio, so a valid-looking
  request with random bytes for ``file`` is rightly a 415;
- unsupported_method: an unknown method on a known path is 404 unknown_url, as API Gateway answers it (its
  MISSING_AUTHENTICATION_TOKEN response, template.yaml), not 405.
The stack is this module's own; its dev key's rate limit is raised past what the run sends, so no answer is a 429.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from infery.adapters.key_store import key_id_for
from infery.domain.keys import hash_api_key
from schemathesis.config import SchemathesisConfig

from tests.support.stack import ROOT, RunningStack, start_stack, stop_stack

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = 30
CONFIG = SchemathesisConfig.from_dict({
    # the key is sent with every request (ignored_auth checks requests without it); query parameters the API
    # does not know are ignored, as OpenAI's GET endpoints ignore them, so none are added to "invalid" requests
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": os.environ.get("CI") == "true",
                   "with-security-parameters": False, "allow-extra-parameters": False},
    # every method, TRACE and QUERY included: the local gateway answers a method no route has as API Gateway does
    "phases": {"stateful": {"enabled": False}},
    "checks": {"positive_data_acceptance": {"enabled": False}, "unsupported_method": {"enabled": False}},
    "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
})
SCHEMA = schemathesis.openapi.from_path(ROOT / "openapi.json", config=CONFIG)
CALLS: collections.Counter[str] = collections.Counter()
STATUSES: collections.Counter[int] = collections.Counter()
# the credits each answer said it used (x-infery-credits-used of a 2xx that was not a replay), for the books
CREDITS_ANSWERED: list[int] = []


@pytest.fixture(scope="module")
def contract_stack() -> Iterator[RunningStack]:
    process, running = start_stack(credits=100_000)
    try:
        running.dynamodb().update_item(
            TableName=running.environment["KEYS_TABLE_NAME"], Key={"key_hash": {"S": hash_api_key(running.api_key)}},
            UpdateExpression="SET rate_limit_per_minute = :limit",
            ExpressionAttributeValues={":limit": {"N": "100000"}})
        yield running
    finally:
        stop_stack(process)


@SCHEMA.parametrize()
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                 HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_the_api_keeps_its_contract(case: Any, contract_stack: RunningStack) -> None:
    origin = contract_stack.base_url.removesuffix("/v1")
    response = case.call_and_validate(base_url=origin, headers=contract_stack.headers(), timeout=60)
    CALLS[case.operation.label] += 1
    STATUSES[response.status_code] += 1
    used = response.headers.get("x-infery-credits-used")
    if response.status_code < 300 and used is not None and response.headers.get("idempotent-replayed") != "true":
        CREDITS_ANSWERED.append(int(used))


def test_the_contract_run_reached_every_operation(capsys: Any) -> None:
    if not CALLS:
        pytest.skip("the schemathesis run did not run")
    with capsys.disabled():
        print(f"\nschemathesis: {sum(CALLS.values())} requests over {len(CALLS)} operations; "
              f"statuses {dict(sorted(STATUSES.items()))}")
    operations = {f"{method.upper()} {path}" for path, item in SCHEMA.raw_schema["paths"].items() for method in item}
    assert set(CALLS) == operations


def test_the_books_balance_after_the_contract_run(contract_stack: RunningStack, capsys: Any) -> None:
    """The books: what the ledger took = the balance's change = the credits the answers said they used (the
    synchronous answers' x-infery-credits-used, and the credits_used of the jobs the run created, once finished);
    and no reservation is left open."""
    if not CALLS:
        pytest.skip("the schemathesis run did not run")
    key_id = key_id_for(hash_api_key(contract_stack.api_key))
    deadline = time.monotonic() + 240
    while True:  # the jobs the run created finish on their own time
        jobs = contract_stack.jobs_of(key_id)
        running = [job for job in jobs if job["status"] in ("queued", "running")]
        if not running or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not running, f"{len(running)} jobs of the contract run did not finish"
    job_credits = sum(int(job["credits_used"]) for job in jobs if job["status"] == "succeeded")
    ledger_change = sum(int(entry["credits"]) for entry in contract_stack.ledger(key_id) if entry["kind"] != "topup")
    balance_change = int(contract_stack.key_row(key_id)["credits"]) - contract_stack.starting_credits
    with_open_reservations = [item for item in contract_stack.open_reservations() if item["key_id"] == key_id]
    with capsys.disabled():
        print(f"\nbooks after the contract run: ledger change {ledger_change}, balance change {balance_change}, "
              f"credits answered {sum(CREDITS_ANSWERED)} ({len(CREDITS_ANSWERED)} paid answers) + {job_credits} by "
              f"{len(jobs)} jobs")
    assert ledger_change == balance_change == -(sum(CREDITS_ANSWERED) + job_credits)
    assert with_open_reservations == []
