"""DynamoDB round trips of a sync call: authentication's read of the key is the only read of it.

Reserve and settle start from the balance the request last saw (authentication's, then the reservation's own
result) instead of reading the key again; the transactions are conditional on that balance, so a balance changed
in between is never written over: the change is computed again on the key as the failed condition found it, which
DynamoDB returns with the cancellation, so a lost race costs no read either. Counts, never timings.
"""

from __future__ import annotations

import collections
import json
from typing import Any

from tests.support.api import assert_error, assert_ok
from tests.support.builders import inference_result, segment


def model_answer(duration: float) -> dict:
    return json.loads(
        inference_result(
            "Hello there.", [segment(0, 0.0, duration, " Hello there.")], duration=duration
        ).model_dump_json()
    )


def count_dynamodb_calls(api: Any) -> collections.Counter[str]:
    """Every DynamoDB call the handler's clients make from now on, by operation."""
    counts: collections.Counter[str] = collections.Counter()
    wiring = api.module.wiring
    # the low-level client is the only one a sync call uses: it builds no boto3 resource
    wiring.dynamodb_client.meta.events.register("before-call.dynamodb", lambda model, **_: counts.update([model.name]))
    return counts


def test_a_sync_call_makes_four_dynamodb_calls(fake_runtime, load_api, accounts, wav):
    url, _ = fake_runtime(200, model_answer(4.2))
    api = load_api(url)
    api_key, item = accounts.new_key(10)
    counts = count_dynamodb_calls(api)
    assert_ok(api.transcribe(api_key, wav))
    # authenticate (GetItem), rate limit (UpdateItem), reserve and settle (one transaction each)
    assert counts == {"GetItem": 1, "UpdateItem": 1, "TransactWriteItems": 2}
    assert accounts.balance(item) == 9 and accounts.ledger_sum(item) == 9
    # all through the one low-level client: no boto3 resource (and its own client) was built for it
    assert "dynamodb" not in vars(api.module.wiring)


def test_a_sync_call_with_an_idempotency_key_makes_seven(fake_runtime, load_api, accounts, wav):
    url, _ = fake_runtime(200, model_answer(4.2))
    api = load_api(url)
    api_key, item = accounts.new_key(10)
    counts = count_dynamodb_calls(api)
    assert_ok(api.transcribe(api_key, wav, headers=[("Idempotency-Key", "round-trips-1")]))
    # and the idempotency record's claim (PutItem) and save (UpdateItem), and the ledger query for an earlier attempt
    assert counts == {"GetItem": 1, "UpdateItem": 2, "PutItem": 1, "Query": 1, "TransactWriteItems": 2}
    assert accounts.balance(item) == 9


def test_a_balance_changed_while_the_model_ran_is_settled_exactly_on_the_balance_the_conflict_returned(
    fake_runtime, load_api, accounts, wav
):
    holder: dict[str, Any] = {}
    url, _ = fake_runtime(
        200,
        model_answer(4.2),
        on_request=lambda: accounts.credits.top_up(holder["item"], 5, request_id="top-up-during-inference"),
    )
    api = load_api(url)
    api_key, holder["item"] = accounts.new_key(10)
    counts = count_dynamodb_calls(api)
    reply = api.transcribe(api_key, wav)
    assert_ok(reply)
    item = holder["item"]
    # the settle's first try saw the balance after the reserve and lost to the top-up; it retried on the key as
    # the cancellation returned it, without reading it again
    assert counts["GetItem"] == 1 and counts["TransactWriteItems"] == 3
    assert reply.header("x-infery-credits-balance") == "14"
    assert accounts.balance(item) == 14 and accounts.ledger_sum(item) == 14
    entries = accounts.request_entries(item, reply.request_id)
    assert int(entries["settle"]["balance_after"]) == 14 and accounts.open_reservations(item) == []


def test_a_balance_changed_since_authentication_is_reserved_from_the_balance_as_it_is(
    fake_runtime, load_api, accounts, wav
):
    """A key authenticated with 0 credits that was topped up before its reservation is served, not refused."""
    url, fake = fake_runtime(200, model_answer(4.2))
    api = load_api(url)
    api_key, item = accounts.new_key(0)
    api.module.wiring.dynamodb_client.meta.events.register(
        "after-call.dynamodb.GetItem",
        lambda **_: accounts.credits.top_up(item, 10, request_id="top-up-after-authentication"),
    )
    assert_ok(api.transcribe(api_key, wav))
    assert fake.calls == 1 and accounts.balance(item) == 9 and accounts.ledger_sum(item) == 9


def test_a_key_revoked_after_authentication_is_refused_at_its_reservation(fake_runtime, load_api, accounts, wav):
    """The reservation's transaction holds only while the key is active: the revocation is seen, nothing charged."""
    url, fake = fake_runtime(200, model_answer(4.2))
    api = load_api(url)
    api_key, item = accounts.new_key(10)
    api.module.wiring.dynamodb_client.meta.events.register(
        "after-call.dynamodb.UpdateItem",
        lambda **_: accounts.revoke(item),  # the rate limit, after authentication
    )
    assert_error(api.transcribe(api_key, wav), 401, "revoked_api_key")
    assert fake.calls == 0
    accounts.assert_untouched(item, 10)


def test_a_reservation_that_lost_a_race_retries_on_the_key_its_cancellation_returned(
    fake_runtime, load_api, accounts, wav
):
    """Requests sent together on one key all authenticate on the same balance, and all but one lose their first
    reservation: each retry starts from the key as the conflict found it, not from another read."""
    url, fake = fake_runtime(200, model_answer(4.2))
    api = load_api(url)
    api_key, item = accounts.new_key(10)
    raced: list[bool] = []

    def another_request_reserves_first(**_: Any) -> None:
        if not raced:
            raced.append(True)
            accounts.credits.reserve(item, 2, request_id="the-request-that-won", model="m")

    api.module.wiring.dynamodb_client.meta.events.register(
        "before-call.dynamodb.TransactWriteItems", another_request_reserves_first
    )
    counts = count_dynamodb_calls(api)
    reply = api.transcribe(api_key, wav)
    assert_ok(reply)
    assert fake.calls == 1
    # authentication's read only; the reserve lost (1), retried (2), the settle (3)
    assert counts["GetItem"] == 1 and counts["TransactWriteItems"] == 3
    entries = accounts.request_entries(item, reply.request_id)
    # 10 - 2 (the winner) - 3 reserved for the 11.7 s file = 5; the model heard 4.2 s (1 credit): 2 come back
    assert int(entries["reserve"]["balance_after"]) == 5 and int(entries["settle"]["balance_after"]) == 7
    assert accounts.balance(item) == 7 and accounts.ledger_sum(item) == 7
