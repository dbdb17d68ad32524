"""A sharded key on the CreditStore and KeyStore against moto: concurrent requests through the real use case never
overdraw a shard, use the balance up, refund every failure, and a rebalance racing them loses no credit; the operator's
`infery keys create/set --shards` and what the keys table holds."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from infery.adapters.credit_store import CreditStore
from infery.domain.errors import InsufficientCredits, InternalError, ModelFailed
from infery.domain.inference import InferenceRequest, InferenceResult, Task
from infery.domain.jobs import JobStatus, new_job
from infery.domain.ledger import LedgerKind
from infery.domain.shards import MAX_CREDIT_SHARDS, start_shard
from infery.domain.transcription import LoadedAudio, TranscriptionOptions
from infery.usecases.transcribe import TranscriptionService
from infery_cli.__main__ import main

from tests.support.api import assert_ok
from tests.support.fakes import FakeAudio
from tests.support.job_world import RESULT_12S, deployment_terms
from tests.support.job_world import wav as wav_of
from tests.support.model_replies import model_answer

OPTIONS = TranscriptionOptions(task=Task.TRANSCRIBE, model="whisper-1")
PRICE = 3  # 12 s of audio: 3 credits reserved, 3 settled (tests.support.job_world's terms)
SHARDS = 4


def run_requests(accounts: Any, api_key: str, count: int, fails: set[int]) -> list[str]:
    """``count`` requests at once through the use case, each authenticated as the API does; those in ``fails``
    meet a failing model. Their outcomes, by index."""

    def one(index: int) -> str:
        key = accounts.keys.authenticate(f"Bearer {api_key}")
        answer: Any = ModelFailed("The model failed; nothing was charged.") if index in fails else RESULT_12S

        class Endpoint:
            def infer(self, request: InferenceRequest) -> InferenceResult:
                if isinstance(answer, Exception):
                    raise answer
                return answer

        service = TranscriptionService(deployment_terms(), accounts.credits, Endpoint(), FakeAudio())
        try:
            service.transcribe(key, OPTIONS, LoadedAudio.inline(wav_of(12.0)), request_id=f"req-{index}-{uuid.uuid4()}")
        except InsufficientCredits:
            return "refused"
        except ModelFailed:
            return "failed"
        return "settled"

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def open_reservations(accounts: Any, key_id: str) -> list[Any]:
    everything = accounts.credits.open_reservations(older_than_epoch=2**40, now_epoch=2**40)
    return [reservation for reservation in everything if reservation.key_id == key_id]


def books(accounts: Any, key_id: str, parts: int) -> list[Any]:
    """The key's ledger, every part of it; checked: no entry left its shard below zero."""
    entries = accounts.credits.ledger(key_id, parts=parts)
    assert min(entry.balance_after for entry in entries if entry.balance_after is not None) >= 0
    return entries


def test_50_concurrent_requests_on_a_sharded_key_use_its_balance_up_and_never_overdraw(accounts):
    api_key, key = accounts.new_key(100, credit_shards=SHARDS)  # 33 requests' worth, and 1 credit
    outcomes = run_requests(accounts, api_key, 50, fails=set())
    shards = accounts.credits.shard_balances(key.key_hash)
    assert min(shards) >= 0
    # used up to within one request's price per shard (the stated bound); a 402 is only answered once the key's
    # total, gathered on the request's shard, cannot cover one request, so in fact to within one price
    assert sum(shards) < PRICE * SHARDS
    assert outcomes.count("settled") == (100 - sum(shards)) // PRICE
    assert outcomes.count("settled") + outcomes.count("refused") == 50
    entries = books(accounts, key.key_id, SHARDS)
    assert sum(entry.credits for entry in entries) == sum(shards)  # the books: the ledger adds up to the balance
    assert open_reservations(accounts, key.key_id) == []


def test_every_failure_on_a_sharded_key_is_refunded_to_the_shard_it_was_taken_from(accounts):
    api_key, key = accounts.new_key(90, credit_shards=SHARDS)
    fails = set(range(0, 50, 5))
    outcomes = run_requests(accounts, api_key, 50, fails=fails)
    # a request meant to fail may have been refused first, when the balance ran out
    assert {outcomes[index] for index in fails} <= {"failed", "refused"}
    assert outcomes.count("failed") > 0
    entries = books(accounts, key.key_id, SHARDS)
    by_request: dict[str, list[Any]] = {}
    for entry in entries:
        by_request.setdefault(entry.request_id, []).append(entry)
    refunded = [
        found
        for found in by_request.values()
        if {entry.kind for entry in found} == {LedgerKind.RESERVE, LedgerKind.REFUND}
    ]
    assert len(refunded) == outcomes.count("failed")
    for found in refunded:  # given back where it was taken
        assert len({entry.shard for entry in found}) == 1
    balance = accounts.credits.balance(key.key_hash)
    assert balance == 90 - PRICE * outcomes.count("settled") >= 0
    assert sum(entry.credits for entry in entries) == balance
    assert open_reservations(accounts, key.key_id) == []


def test_a_rebalance_racing_reservations_loses_nothing(accounts):
    api_key, key = accounts.new_key(300, credit_shards=SHARDS)

    def rebalance(index: int) -> str:
        # each one gathers credits on another shard, as a short reservation's rebalance does
        accounts.credits.rebalance(key.key_hash, target=index % SHARDS, need=40)
        return "rebalanced"

    with ThreadPoolExecutor(max_workers=2) as pool:
        racing = pool.map(rebalance, range(12))
        outcomes = run_requests(accounts, api_key, 40, fails={3, 17})
        assert list(racing) == ["rebalanced"] * 12
    balance = accounts.credits.balance(key.key_hash)
    assert balance == 300 - PRICE * outcomes.count("settled")
    assert outcomes.count("settled") == 38
    assert min(accounts.credits.shard_balances(key.key_hash)) >= 0
    assert sum(entry.credits for entry in books(accounts, key.key_id, SHARDS)) == balance


def test_a_one_shard_keys_row_is_stored_as_before_and_a_sharded_keys_rows_are_its_copies(accounts):
    _, plain = accounts.new_key(10)
    assert "credit_shards" not in accounts.stored_key(plain) and "ledger_parts" not in accounts.stored_key(plain)
    _, sharded = accounts.new_key(10, credit_shards=3)
    rows = [
        accounts.keys_table.get_item(Key={"key_hash": key_hash}, ConsistentRead=True).get("Item")
        for key_hash in (sharded.key_hash, f"{sharded.key_hash}#1", f"{sharded.key_hash}#2")
    ]
    assert [(row["credit_shards"], row["key_id"], row["status"]) for row in rows] == [(3, sharded.key_id, "active")] * 3
    assert sum(int(row["credits"]) for row in rows) == 10
    assert f"{sharded.key_hash}#3" not in str(accounts.keys_table.scan(ConsistentRead=True)["Items"])


def test_a_sharded_key_authenticates_from_any_shard_and_a_revoke_refuses_it_on_every_one(accounts):
    api_key, key = accounts.new_key(40, credit_shards=SHARDS)
    seen = {accounts.keys.authenticate(f"Bearer {api_key}").shard for _ in range(60)}
    assert seen == set(range(SHARDS))
    read = accounts.keys.authenticate(f"Bearer {api_key}")
    assert (read.key_hash, read.key_id, read.credit_shards) == (key.key_hash, key.key_id, SHARDS)
    accounts.keys.revoke(key.key_id)
    for _ in range(20):
        with pytest.raises(Exception, match="revoked"):
            accounts.keys.authenticate(f"Bearer {api_key}")


def test_the_ledger_of_a_sharded_key_is_read_from_every_part_newest_first(accounts):
    _, key = accounts.new_key(60, credit_shards=SHARDS)
    # three requests starting on each shard (random ids would leave a shard unused about one run in eight)
    run = uuid.uuid4().hex
    ids = [f"r{n}-{run}" for n in range(10_000)]
    request_ids = [[i for i in ids if start_shard(i, SHARDS) == shard][:3] for shard in range(SHARDS)]
    for request_id in (request_id for per_shard in request_ids for request_id in per_shard):
        reservation = accounts.credits.reserve(key, 2, request_id=request_id, model="whisper-1")
        accounts.credits.settle(reservation, 1, audio_seconds=4.0)
    newest_first = list(accounts.credits.ledger_newest_first(key.key_id, parts=SHARDS))
    assert len(newest_first) == 1 + 24
    assert [entry.created_at for entry in newest_first] == sorted(
        (entry.created_at for entry in newest_first), reverse=True
    )
    assert {entry.shard or 0 for entry in newest_first} == set(range(SHARDS))
    assert {entry.key_id for entry in newest_first} == {key.key_id}
    assert accounts.credits.ledger(key.key_id, parts=SHARDS) == newest_first[::-1]
    assert len(accounts.credits.ledger(key.key_id)) < 25  # one part alone is not the key's ledger


def test_the_operator_creates_lists_shows_and_reshards_a_key(accounts, capsys):
    assert main(["keys", "create", "--name", "big", "--credits", "40", "--shards", "4"]) == 0
    out = capsys.readouterr().out
    assert "with 40 credits in 4 shards" in out
    key_id = out.split()[1]
    key = accounts.keys.get(key_id)
    assert accounts.credits.shard_balances(key.key_hash) == [10, 10, 10, 10]
    assert main(["keys", "list", "--json"]) == 0
    listed = [row for row in __import__("json").loads(capsys.readouterr().out) if row["key_id"] == key_id]
    assert [(row["credits"], row["credit_shards"]) for row in listed] == [(40, 4)]
    assert main(["keys", "show", key_id]) == 0
    assert "credits: 40" in capsys.readouterr().out
    assert main(["keys", "set", key_id, "--shards", "2"]) == 0
    assert "keeps its 40 credits in 2 shards" in capsys.readouterr().out
    assert accounts.credits.shard_balances(key.key_hash) == [20, 20]
    assert accounts.keys.get(key_id).ledger_parts == 4


@pytest.mark.parametrize("shards", ["0", "101", "-2"])
def test_a_shard_count_out_of_range_is_refused_and_changes_nothing(accounts, capsys, shards):
    _, key = accounts.new_key(40, credit_shards=2)
    assert main(["keys", "set", key.key_id, "--shards", shards]) == 1
    assert "1 to 100 shards" in capsys.readouterr().err
    assert accounts.credits.shard_balances(key.key_hash) == [20, 20]
    assert main(["keys", "create", "--name", "x", "--shards", shards]) == 1
    assert "1 to 100 shards" in capsys.readouterr().err


def test_a_revoked_key_resharded_stays_revoked_on_every_shard(accounts):
    api_key, key = accounts.new_key(40, credit_shards=2)
    accounts.keys.revoke(key.key_id)
    accounts.credits.set_shards(accounts.keys.get(key.key_id), 4)
    rows = [
        accounts.keys_table.get_item(Key={"key_hash": key_hash}, ConsistentRead=True)["Item"]
        for key_hash in (key.key_hash, *(f"{key.key_hash}#{shard}" for shard in range(1, 4)))
    ]
    assert [row["status"] for row in rows] == ["revoked"] * 4
    assert sum(int(row["credits"]) for row in rows) == 40
    for _ in range(12):
        with pytest.raises(Exception, match="revoked"):
            accounts.keys.authenticate(f"Bearer {api_key}")


def test_usage_and_the_balance_header_of_a_sharded_key_are_its_totals_over_every_shard(
    fake_runtime, load_api, accounts, wav
):
    api = load_api(fake_runtime(200, model_answer(12.0))[0])  # 3 credits a request
    api_key, key = accounts.new_key(100, credit_shards=SHARDS)
    replies = [api.transcribe(api_key, wav) for _ in range(8)]
    for reply in replies:
        assert_ok(reply)
    # each answer's header: the key's total as the instance knows it, its own change exact
    assert replies[-1].header("x-infery-credits-balance") == str(100 - 8 * PRICE)
    answer = api.call("GET", "/v1/usage", api_key=api_key)
    assert_ok(answer)
    report = answer.json()
    assert report["balance"] == 100 - 8 * PRICE == accounts.credits.balance(key.key_hash)
    assert report["total"]["requests"] == 8 and report["total"]["credits"] == 8 * PRICE
    assert len(report["recent_requests"]) == 8
    csv_answer = api.call("GET", "/v1/usage?format=csv", api_key=api_key)
    assert_ok(csv_answer)
    rows = csv_answer.text.strip().splitlines()
    assert len(rows) == 1 + 1 + 8 * 2  # the header, the top-up, a reserve and a settle per request


# --- a key resharded to fewer shards while its requests are open -----------------------------------------------


def _request_on_shard(shard: int, shards: int) -> str:
    return next(f"req-{n}" for n in range(10_000) if start_shard(f"req-{n}", shards) == shard)


def _another_instance(accounts: Any) -> CreditStore:
    """The credit store of another Lambda instance (the job worker's): nothing remembered of this one's requests."""
    store = accounts.credits
    return CreditStore(store._client, store._keys_table, store._ledger_table, store._reservations_table)


def test_an_exact_settle_after_a_reshard_down_charges_once_and_reports_the_balance(accounts):
    _, key = accounts.new_key(100, credit_shards=4)
    reservation = accounts.credits.reserve(key, 3, request_id=_request_on_shard(3, 4), model="whisper-1")
    assert reservation.shard == 3
    accounts.credits.set_shards(accounts.keys.get(key.key_id), 1)
    charge = _another_instance(accounts).settle(reservation, 3, audio_seconds=12.0)
    assert (charge.billed_credits, charge.balance_after) == (3, 97)
    assert accounts.credits.reservation(reservation.request_id) is None
    assert accounts.credits.balance(key.key_hash) == 97


def test_a_reservation_on_a_key_read_before_a_reshard_down_is_taken_from_shard_0(accounts):
    _, key = accounts.new_key(100, credit_shards=4)
    as_authenticated = accounts.keys.get(key.key_id)  # read moments before the operator's `keys set --shards 1`
    accounts.credits.set_shards(as_authenticated, 1)
    reservation = accounts.credits.reserve(as_authenticated, 3, request_id=_request_on_shard(2, 4), model="whisper-1")
    assert reservation.shard is None
    assert accounts.credits.balance(key.key_hash) == 97
    accounts.credits.refund(reservation, reason="test")
    assert accounts.credits.balance(key.key_hash) == 100


def test_a_revoke_that_read_the_key_before_a_reshard_down_leaves_no_half_item(accounts, monkeypatch):
    _, key = accounts.new_key(100, credit_shards=4)
    stale = accounts.keys.get(key.key_id)
    accounts.credits.set_shards(stale, 1)
    reads = iter([stale])
    real_get = accounts.keys.get
    monkeypatch.setattr(accounts.keys, "get", lambda key_id: next(reads, None) or real_get(key_id))
    accounts.keys.revoke(key.key_id)
    monkeypatch.undo()
    leftovers = [
        accounts.keys_table.get_item(Key={"key_hash": f"{key.key_hash}#{shard}"}, ConsistentRead=True).get("Item")
        for shard in (1, 2, 3)
    ]
    assert leftovers == [None, None, None]
    assert accounts.keys.get(key.key_id).status == "revoked"


def test_a_key_at_the_most_shards_rebalances_and_reshards_within_one_transaction_each(accounts):
    """100 shards (DynamoDB's items per transaction): a rebalance that moves every shard and a reshard that deletes
    99 of them each fit one transaction, and lose nothing."""
    _, key = accounts.new_key(250, credit_shards=MAX_CREDIT_SHARDS)
    assert len(accounts.credits.shard_balances(key.key_hash)) == MAX_CREDIT_SHARDS
    # more than any one shard holds (2 or 3 each): gathered from the others onto the request's shard
    reservation = accounts.credits.reserve(key, 200, request_id=_request_on_shard(57, MAX_CREDIT_SHARDS), model="m")
    assert reservation.shard == 57
    assert accounts.credits.balance(key.key_hash) == 50
    assert min(accounts.credits.shard_balances(key.key_hash)) >= 0
    accounts.credits.set_shards(accounts.keys.get(key.key_id), 1)
    assert accounts.credits.shard_balances(key.key_hash) == [50]
    accounts.credits.refund(reservation, reason="test")  # its shard is gone: back on shard 0
    assert accounts.credits.balance(key.key_hash) == 250
    assert sum(entry.credits for entry in books(accounts, key.key_id, MAX_CREDIT_SHARDS)) == 250


def test_a_top_up_whose_rebalance_fails_is_done_once_and_a_retry_with_its_id_adds_nothing(accounts, monkeypatch):
    _, key = accounts.new_key(10, credit_shards=SHARDS)

    def contended(*_: Any, **__: Any) -> int:
        raise InternalError("The credit balance is too contended to update right now.")

    monkeypatch.setattr(accounts.credits, "rebalance", contended)
    # the credits are added and the operator is told the balance: no error that would make them add them again
    assert accounts.credits.top_up(key, 50, request_id="topup-once", note="invoice 7") == 60
    assert accounts.credits.top_up(key, 50, request_id="topup-once", note="invoice 7") == 60
    monkeypatch.undo()
    assert accounts.credits.balance(key.key_hash) == 60
    topups = [entry for entry in books(accounts, key.key_id, SHARDS) if entry.kind is LedgerKind.TOPUP]
    assert [entry.credits for entry in topups if entry.request_id == "topup-once"] == [50]


def test_a_sharded_keys_job_result_shows_its_total_balance_not_one_shards(fake_runtime, load_api, accounts):
    api = load_api(fake_runtime(200, model_answer(12.0))[0])
    api_key, key = accounts.new_key(90, credit_shards=SHARDS)
    wiring = api.module.wiring
    job = new_job(
        job_id="job_" + uuid.uuid4().hex,
        key_id=key.key_id,
        key_hash=key.key_hash,
        options=TranscriptionOptions(task=Task.TRANSCRIBE, model="whisper-1"),
        status=JobStatus.QUEUED,
    )
    wiring.job_store.create(job)
    result_key = wiring.audio_store.put_result(key.key_id, job.job_id, RESULT_12S)
    wiring.job_store.succeed(job.job_id, result_key=result_key, credits_used=3, audio_seconds=12.0)

    answer = api.call("GET", f"/v1/jobs/{job.job_id}/result", api_key=api_key)
    assert_ok(answer)
    assert answer.header("x-infery-credits-balance") == "90" == str(accounts.credits.balance(key.key_hash))


def test_a_402_after_the_last_rebalance_names_the_keys_whole_balance(accounts, monkeypatch):
    _, key = accounts.new_key(30, credit_shards=3)  # 10 credits a shard
    # shards that never even out (requests racing each rebalance): the reservation gives up after its rebalances
    monkeypatch.setattr(accounts.credits, "rebalance", lambda *_, **__: 30)
    with pytest.raises(InsufficientCredits) as refused:
        accounts.credits.reserve(key, 15, request_id=f"short-{uuid.uuid4()}", model="whisper-1")
    assert refused.value.headers["x-infery-credits-balance"] == "30"
    assert "balance is 30" in refused.value.message
