"""How many requests a second one key sustains, in DynamoDB's per-partition limits: a simulation that runs our own code.

The real stores (KeyStore, CreditStore, RateLimiter) and the real use case (TranscriptionService: reserve, infer,
settle) run against ``PartitionedDynamoDB``, an in-memory stand-in for DynamoDB's low-level client that understands
exactly the requests our stores send (any other is refused, so a store that changes its requests fails here loudly)
and charges each to its partition, in simulated time:

- every partition key is its own partition (the best case: DynamoDB's split for heat has already separated them),
  capped at 1,000 write units and 3,000 read units in each simulated second; an item is under 1 KB, so a write costs
  1 unit, a transactional write 2 per item, a consistent read 1, an eventually consistent read 0.5; a write whose
  condition fails is charged as if it had succeeded (a cancelled transaction too: the conservative reading);
- a request over a partition's cap is refused as DynamoDB refuses it: ``ProvisionedThroughputExceededException``
  with the reason ``KeyRangeThroughputExceeded`` (retried by the SDK, as boto3's default "legacy" mode does for
  DynamoDB: 10 attempts, 50 ms x 2^n jitter), or, in a transaction, ``TransactionCanceledException`` whose reason for
  that item is ``ThrottlingError`` (not retried by the SDK: the store's own loop retries it);
- a conditional write on an item some other request wrote since this request last saw it (its read, its own write,
  or the item a cancellation returned) fails its condition, as it would have on DynamoDB when both raced: one failure
  per overlapping pair, the later one processed;
- each call takes a fixed simulated time (a read 3 ms, a write 5 ms, a transaction 10 ms), the model 1 s.

Requests arrive evenly at a rising rate, each step alone on a quiet table; each request runs to its end before the
next starts (the stores are synchronous code), on a "container" (its own stores, so their caches, as a warm Lambda
instance's) free at its arrival, or a new one. Each is authenticated, counted against the key's rate limit (a counter
per shard, as the API counts it), reserved, answered by the model and settled, as the API does.
After each run: no shard below zero, and the books: the ledger's credits add up to the key's balance change.

    python -m benchmarks.dynamodb_partition_sim            # the table for 1, 4, 16 and 64 shards
    python -m benchmarks.dynamodb_partition_sim --shards 16 --rates 500,1000,2000 --seconds 1
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import itertools
import math
import random
import time as real_time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from botocore.exceptions import ClientError
from infery.adapters import credit_store as credit_store_module
from infery.adapters.credit_store import CreditStore
from infery.adapters.dynamodb import deserialize, serialize
from infery.adapters.key_store import KeyStore
from infery.adapters.rate_limits import RateLimiter
from infery.domain.errors import InferyError
from infery.domain.inference import InferenceRequest, InferenceResult, Task
from infery.domain.shards import split_partition
from infery.domain.transcription import LoadedAudio, TranscriptionOptions
from infery.usecases.transcribe import TranscriptionService

from tests.support.builders import inference_result, segment
from tests.support.fakes import FakeAudio
from tests.support.job_world import deployment_terms
from tests.support.speech import silent_wav

WRITE_UNITS_PER_SECOND = 1000
READ_UNITS_PER_SECOND = 3000
READ_SECONDS, WRITE_SECONDS, TRANSACTION_SECONDS = 0.003, 0.005, 0.010
MODEL_SECONDS = 1.0
SDK_ATTEMPTS, SDK_BASE_SECONDS = 10, 0.05
# the key's own limit: 12,000 a second, so the limit itself refuses nothing offered here
RATE_LIMIT_PER_MINUTE = 720_000
# a rate is sustained when at most 0.1% of its requests fail and retries add at most this much at the 99th percentile
SUSTAINED_P99_ADDED_SECONDS = 1.0

KEYS, LEDGER, RESERVATIONS, RATE_LIMITS = "keys", "ledger", "reservations", "rate-limits"
PARTITION_KEYS = {KEYS: "key_hash", LEDGER: "key_id", RESERVATIONS: "request_id", RATE_LIMITS: "counter_id"}
SORT_KEYS = {LEDGER: "entry_id"}

AUDIO_SECONDS = 2.0  # 1 credit at the default terms (1 per started 5 s), reserved and settled alike
AUDIO = LoadedAudio.inline(silent_wav(8_000, AUDIO_SECONDS))
RESULT = inference_result("Hi.", [segment(0, 0.0, AUDIO_SECONDS, " Hi.")], duration=AUDIO_SECONDS)
OPTIONS = TranscriptionOptions(task=Task.TRANSCRIBE, model="whisper-1")


class SimClock:
    """Simulated time: where the request being run has got to. ``sleep`` moves it on (the stores' back-off)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.request = ""

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


@dataclass
class Meter:
    """What each partition was charged, second by second, and what was refused."""

    units: dict[tuple[str, str, str, int], float] = field(default_factory=lambda: defaultdict(float))
    throttled: int = 0
    conditional_failures: int = 0
    conflicts: int = 0

    def fits(self, charges: list[tuple[str, str, str, float]], at: float) -> bool:
        second = int(at)
        totals: dict[tuple[str, str, str, int], float] = defaultdict(float)
        for table, partition, kind, units in charges:
            totals[(table, partition, kind, second)] += units
        for slot, units in totals.items():
            cap = WRITE_UNITS_PER_SECOND if slot[2] == "write" else READ_UNITS_PER_SECOND
            if self.units[slot] + units > cap:
                return False
        return True

    def charge(self, charges: list[tuple[str, str, str, float]], at: float) -> None:
        for table, partition, kind, units in charges:
            self.units[(table, partition, kind, int(at))] += units

    def busiest(self, first_second: int, end_second: int) -> tuple[str, float]:
        """The partition charged most in one second of these: which (table/partition/kind) and how much, as a share
        of its cap."""
        slots = [(slot, units) for slot, units in self.units.items() if first_second <= slot[3] < end_second]
        if not slots:
            return "-", 0.0
        slot, units = max(
            slots,
            key=lambda item: item[1] / (WRITE_UNITS_PER_SECOND if item[0][2] == "write" else READ_UNITS_PER_SECOND),
        )
        table, partition, kind, _ = slot
        where = f"shard {split_partition(partition)[1]}" if table in (KEYS, LEDGER) else partition.rsplit("#", 1)[-1]
        return f"{table} {where} {kind}s", units


def _client_error(code: str, message: str, operation: str, **extra: Any) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, **extra}, operation)


def _throttle(table: str, operation: str) -> ClientError:
    # as DynamoDB reports a partition over its cap (the ThrottlingReasons of the 2025 API)
    return _client_error(
        "ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded.",
        operation,
        ThrottlingReasons=[{"reason": "KeyRangeThroughputExceeded", "resource": f"arn:aws:dynamodb:::table/{table}"}],
    )


# The expressions our stores send, and what each means: anything else is refused.
Condition = Callable[[dict[str, Any] | None, dict[str, Any]], bool]
CONDITIONS: dict[str, Condition] = {
    "attribute_not_exists(key_hash)": lambda item, _: item is None,
    "attribute_not_exists(entry_id)": lambda item, _: item is None,
    "attribute_not_exists(request_id)": lambda item, _: item is None,
    "attribute_exists(request_id)": lambda item, _: item is not None,
    "credits = :seen_balance": lambda item, v: item is not None and item.get("credits") == v[":seen_balance"],
    "credits = :seen_balance AND #status = :active": lambda item, v: (
        item is not None and item.get("credits") == v[":seen_balance"] and item.get("status") == v[":active"]
    ),
    "attribute_not_exists(requests) OR requests < :limit": lambda item, v: (
        item is None or "requests" not in item or item["requests"] < v[":limit"]
    ),
}
Update = Callable[[dict[str, Any], dict[str, Any]], None]
UPDATES: dict[str, Update] = {
    "SET credits = :new_balance": lambda item, v: item.__setitem__("credits", v[":new_balance"]),
    "ADD requests :one SET expires_at = :expires_at": lambda item, v: item.update(
        requests=item.get("requests", 0) + v[":one"], expires_at=v[":expires_at"]
    ),
}


class PartitionedDynamoDB:
    """The low-level DynamoDB client our stores use, in memory, charging each call to its partitions (module doc)."""

    def __init__(self, clock: SimClock, meter: Meter) -> None:
        self.clock = clock
        self.meter = meter
        self.tables: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
        # each item's writes, in time order: (when, by which request)
        self._writes: dict[tuple[str, tuple[str, str]], list[tuple[float, str]]] = defaultdict(list)
        self._seen: dict[tuple[str, str, tuple[str, str]], float] = {}
        self.free = False  # calls not charged: a warm instance's earlier life, the operator's seeding

    # items and their keys

    @staticmethod
    def _key(table: str, key: dict[str, Any]) -> tuple[str, str]:
        return str(key[PARTITION_KEYS[table]]), str(key.get(SORT_KEYS.get(table, ""), ""))

    def _saw(self, table: str, key: tuple[str, str]) -> None:
        self._seen[(self.clock.request, table, key)] = self.clock.now

    def _raced(self, table: str, key: tuple[str, str]) -> bool:
        """Another request wrote the item since this one last saw it (or before it ever did, while it ran)."""
        since = self._seen.get((self.clock.request, table, key))
        if since is None:
            return False
        writes = self._writes[(table, key)]
        for at, who in writes[bisect.bisect_right(writes, (since, "\uffff")) :]:
            if at > self.clock.now:
                return False
            if who != self.clock.request:
                return True
        return False

    def _wrote(self, table: str, key: tuple[str, str]) -> None:
        bisect.insort(self._writes[(table, key)], (self.clock.now, self.clock.request))
        self._saw(table, key)

    def _with_sdk_retries(self, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        for attempt in range(SDK_ATTEMPTS):
            try:
                return call()
            except ClientError as error:
                if error.response["Error"]["Code"] != "ProvisionedThroughputExceededException":
                    raise
                self.meter.throttled += 1
                if attempt == SDK_ATTEMPTS - 1:
                    raise
                self.clock.sleep(random.uniform(0, SDK_BASE_SECONDS * 2**attempt))
        raise AssertionError("unreachable")

    # the calls

    def get_item(self, TableName: str, Key: dict[str, Any], ConsistentRead: bool = False, **_: Any) -> dict[str, Any]:  # noqa: N803 - boto3's names
        table, key = TableName, self._key(TableName, deserialize(Key))

        def read() -> dict[str, Any]:
            self.clock.sleep(READ_SECONDS)
            charges = [] if self.free else [(table, key[0], "read", 1.0 if ConsistentRead else 0.5)]
            if not self.meter.fits(charges, self.clock.now):
                raise _throttle(table, "GetItem")
            self.meter.charge(charges, self.clock.now)
            self._saw(table, key)
            item = self.tables[table].get(key)
            return {"Item": serialize(item)} if item is not None else {}

        return self._with_sdk_retries(read)

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        """Eventually consistent reads, one round trip; a key whose partition is over its read units comes back
        unprocessed, as DynamoDB returns it."""
        self.clock.sleep(READ_SECONDS)
        responses: dict[str, list[dict[str, Any]]] = defaultdict(list)
        unprocessed: dict[str, dict[str, Any]] = {}
        for table, request in RequestItems.items():
            for raw_key in request["Keys"]:
                key = self._key(table, deserialize(raw_key))
                charges = [] if self.free else [(table, key[0], "read", 0.5)]
                if not self.meter.fits(charges, self.clock.now):
                    self.meter.throttled += 1
                    unprocessed.setdefault(table, {**request, "Keys": []})["Keys"].append(raw_key)
                    continue
                self.meter.charge(charges, self.clock.now)
                item = self.tables[table].get(key)
                if item is not None:
                    responses[table].append(serialize(item))
        return {"Responses": dict(responses), "UnprocessedKeys": unprocessed}

    def put_item(self, TableName: str, Item: dict[str, Any], ConditionExpression: str, **_: Any) -> dict[str, Any]:  # noqa: N803
        values = deserialize(Item)
        key = self._key(TableName, values)
        if not CONDITIONS[ConditionExpression](self.tables[TableName].get(key), {}):
            raise _client_error("ConditionalCheckFailedException", "The conditional request failed", "PutItem")
        self.tables[TableName][key] = values
        return {}

    def update_item(
        self,
        TableName: str,  # noqa: N803
        Key: dict[str, Any],  # noqa: N803
        UpdateExpression: str,  # noqa: N803
        ConditionExpression: str,  # noqa: N803
        ExpressionAttributeValues: dict[str, Any],  # noqa: N803
        ReturnValues: str = "NONE",  # noqa: N803
        **_: Any,
    ) -> dict[str, Any]:
        table, raw_key = TableName, deserialize(Key)
        key, values = self._key(table, raw_key), deserialize(ExpressionAttributeValues)

        def write() -> dict[str, Any]:
            self.clock.sleep(WRITE_SECONDS)
            charges = [] if self.free else [(table, key[0], "write", 1.0)]
            if not self.meter.fits(charges, self.clock.now):
                raise _throttle(table, "UpdateItem")
            self.meter.charge(charges, self.clock.now)
            item = self.tables[table].get(key)
            if not CONDITIONS[ConditionExpression](item, values):
                self.meter.conditional_failures += 1
                raise _client_error("ConditionalCheckFailedException", "The conditional request failed", "UpdateItem")
            item = dict(item or raw_key)
            UPDATES[UpdateExpression](item, values)
            self.tables[table][key] = item
            self._wrote(table, key)
            return {"Attributes": serialize(item)} if ReturnValues != "NONE" else {}

        return self._with_sdk_retries(write)

    def transact_write_items(self, TransactItems: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        self.clock.sleep(TRANSACTION_SECONDS)
        plan = []
        for entry in TransactItems:
            [(action, spec)] = entry.items()
            table = spec["TableName"]
            raw_key = deserialize(spec["Item"] if action == "Put" else spec["Key"])
            plan.append((action, spec, table, self._key(table, raw_key), raw_key))
        charges = [] if self.free else [(table, key[0], "write", 2.0) for _, _, table, key, _ in plan]
        if not self.meter.fits(charges, self.clock.now):
            self.meter.throttled += 1
            throttled = {
                index
                for index, (_, _, table, key, _) in enumerate(plan)
                if not self.meter.fits([(table, key[0], "write", 2.0)], self.clock.now)
            }
            raise _client_error(
                "TransactionCanceledException",
                "Transaction cancelled, please refer cancellation reasons for specific reasons",
                "TransactWriteItems",
                CancellationReasons=[
                    {"Code": "ThrottlingError" if index in throttled else "None"} for index in range(len(plan))
                ],
            )
        self.meter.charge(charges, self.clock.now)
        reasons, failed = [], False
        for action, spec, table, key, _ in plan:
            item = self.tables[table].get(key)
            values = deserialize(spec.get("ExpressionAttributeValues", {}))
            holds = CONDITIONS[spec["ConditionExpression"]](item, values)
            if holds and action == "Update" and self._raced(table, key):
                holds = False  # the balance this request saw was changed by another before this write landed
                self.meter.conflicts += 1
            reason: dict[str, Any] = {"Code": "None" if holds else "ConditionalCheckFailed"}
            if not holds and item is not None and spec.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD":
                reason["Item"] = serialize(item)
                self._saw(table, key)
            reasons.append(reason)
            failed = failed or not holds
        if failed:
            self.meter.conditional_failures += 1
            raise _client_error(
                "TransactionCanceledException",
                "Transaction cancelled, please refer cancellation reasons for specific reasons",
                "TransactWriteItems",
                CancellationReasons=reasons,
            )
        for action, spec, table, key, raw_key in plan:
            if action == "Put":
                self.tables[table][key] = raw_key
            elif action == "Delete":
                self.tables[table].pop(key, None)
            else:
                item = dict(self.tables[table].get(key) or raw_key)
                UPDATES[spec["UpdateExpression"]](item, deserialize(spec["ExpressionAttributeValues"]))
                self.tables[table][key] = item
            self._wrote(table, key)
        return {}

    # read back after a run (free: not part of the load)

    def ledger_entries(self, key_id: str) -> list[dict[str, Any]]:
        return [item for (partition, _), item in self.tables[LEDGER].items() if split_partition(partition)[0] == key_id]


class SimModel:
    """The real-time endpoint: answers after MODEL_SECONDS of simulated time."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock

    def infer(self, request: InferenceRequest) -> InferenceResult:
        self.clock.sleep(MODEL_SECONDS)
        return RESULT


@dataclass
class Container:
    """One Lambda instance: its own stores (their caches), busy until ``free_at``."""

    keys: KeyStore
    limiter: RateLimiter
    service: TranscriptionService
    free_at: float = 0.0


@dataclass
class RunResult:
    shards: int
    rate_limit: str
    steps: list[tuple[int, int, int, float]]  # (offered req/s, succeeded, failed, p99 added latency in s)
    sustained: int
    p99_added_at_sustained: float
    throttled: int
    conflicts: int
    busiest: tuple[str, float]  # at the sustained rate
    problems: list[str]


def run(
    shards: int,
    rates: list[int],
    seconds_per_step: float = 1.0,
    rate_limit: str = "sharded",
    seed: int = 7,
    balance: int = 10**9,
    sabotage: str | None = None,
) -> RunResult:
    """Offer one key ``rates`` requests a second in turn (each for ``seconds_per_step``), through the real stores and
    use case on ``PartitionedDynamoDB``; the checks after it in ``problems`` (empty when all hold).

    ``rate_limit``: "sharded" (RateLimiter with a counter per shard, as the API counts a sharded key), "single" (one
    counter item per key and minute, as before shards) or "none". ``sabotage``, to show the checks fail: "books"
    writes a credit past the ledger, "negative" moves all of shard 0's credits and 5 more to shard 1 (the total
    unchanged, shard 0 at -5)."""
    random.seed(seed)
    clock, meter = SimClock(), Meter()
    client = PartitionedDynamoDB(clock, meter)
    patched = mock.patch.object(credit_store_module, "time", clock)
    patched.start()
    try:
        return _run(client, clock, meter, shards, rates, seconds_per_step, rate_limit, balance, sabotage)
    finally:
        patched.stop()


def _run(
    client: PartitionedDynamoDB,
    clock: SimClock,
    meter: Meter,
    shards: int,
    rates: list[int],
    seconds_per_step: float,
    rate_limit: str,
    balance: int,
    sabotage: str | None,
) -> RunResult:
    operator_keys, operator_credits = KeyStore(client, KEYS), CreditStore(client, KEYS, LEDGER, RESERVATIONS)
    clock.request, client.free = "operator", True
    api_key, key = operator_keys.create("sim", credit_shards=shards)
    operator_credits.top_up(key, balance, request_id="seed")
    start_balance = operator_credits.balance(key.key_hash)
    client.free = False
    authorization = f"Bearer {api_key}"
    terms = deployment_terms()
    containers: list[tuple[float, int, Container]] = []  # a heap of idle containers by when they became free
    order = itertools.count()

    def container_at(at: float) -> Container:
        if containers and containers[0][0] <= at:
            return heapq.heappop(containers)[2]
        store = CreditStore(client, KEYS, LEDGER, RESERVATIONS)
        keys = KeyStore(client, KEYS)
        # a warm instance: it has authenticated the key before, so it knows its shards (a cold one reads shard 0
        # first), and it read the other shards' balances for the header at some moment of its refresh period (Lambda
        # adds at most 1,000 instances per 10 s to a function: cold ones are at most 100 a second)
        client.free, now = True, clock.now
        keys.authenticate(authorization)
        clock.now = now - random.uniform(0, credit_store_module.TOTAL_MAX_AGE_SECONDS)
        store.recent_shards(key.key_hash)
        clock.now, client.free = now, False
        return Container(
            keys,
            RateLimiter(client, RATE_LIMITS, clock=clock.time),
            TranscriptionService(terms, store, SimModel(clock), FakeAudio()),
        )

    steps = []
    busiest_by_step: dict[int, tuple[str, float]] = {}
    start = 10.0  # past the seed's second
    for offered in rates:
        if steps and (
            steps[-1][2] > 0.01 * (steps[-1][1] + steps[-1][2]) or steps[-1][3] > 2 * SUSTAINED_P99_ADDED_SECONDS
        ):
            break  # well past what it sustains: a higher rate only fails more
        count = max(1, int(offered * seconds_per_step))
        added, succeeded, failed = [], 0, 0
        for index in range(count):
            arrival = start + index / offered
            clock.now, clock.request = arrival, "warm-up"
            container = container_at(arrival)
            clock.now, clock.request = arrival, uuid.uuid4().hex
            try:
                key_now = container.keys.authenticate(authorization)
                if rate_limit != "none":
                    counters = key_now.credit_shards if rate_limit == "sharded" else 1
                    container.limiter.acquire(key_now.key_id, RATE_LIMIT_PER_MINUTE, counters)
                container.service.transcribe(key_now, OPTIONS, AUDIO, request_id=clock.request)
                succeeded += 1
            except (InferyError, ClientError):
                failed += 1
            added.append(clock.now - arrival)
            container.free_at = clock.now
            heapq.heappush(containers, (clock.now, next(order), container))
        base = min(added)
        # the latency our DynamoDB calls and their retries added, beyond an uncontended request's
        extra = sorted(duration - base for duration in added)
        p99 = extra[min(len(extra) - 1, math.ceil(0.99 * len(extra)) - 1)]
        steps.append((offered, succeeded, failed, p99))
        end = start + seconds_per_step + MODEL_SECONDS + 5.0  # each step on a quiet table: what it sustains alone
        busiest_by_step[offered] = meter.busiest(int(start), int(end))
        start = end

    shard_0 = client.tables[KEYS][(key.key_hash, "")]
    if sabotage == "books":
        shard_0["credits"] += 1
    elif sabotage == "negative":
        moved = shard_0["credits"] + 5
        shard_0["credits"] -= moved
        client.tables[KEYS][(f"{key.key_hash}#1", "")]["credits"] += moved
    problems = check_books(client, operator_credits, key.key_hash, key.key_id, start_balance)
    good = [
        (offered, p99)
        for offered, succeeded, failed, p99 in steps
        if failed <= 0.001 * (succeeded + failed) and p99 <= SUSTAINED_P99_ADDED_SECONDS
    ]
    sustained, p99_at = max(good) if good else (0, 0.0)
    busiest = busiest_by_step.get(sustained, ("-", 0.0))
    return RunResult(shards, rate_limit, steps, sustained, p99_at, meter.throttled, meter.conflicts, busiest, problems)


def check_books(
    client: PartitionedDynamoDB, credits: CreditStore, key_hash: str, key_id: str, start_balance: int
) -> list[str]:
    """No shard below zero, and the ledger's credits since the seed add up to the balance's change."""
    problems = []
    shard_rows = [
        item for (partition, _), item in client.tables[KEYS].items() if split_partition(partition)[0] == key_hash
    ]
    balances = [int(item["credits"]) for item in shard_rows]
    if min(balances) < 0:
        problems.append(f"a shard went below zero: {balances}")
    entries = client.ledger_entries(key_id)
    if any(int(entry.get("balance_after", 0)) < 0 for entry in entries):
        problems.append("a ledger entry left its shard below zero")
    ledger_change = sum(int(entry["credits"]) for entry in entries if entry["request_id"] != "seed")
    balance_change = sum(balances) - start_balance
    if ledger_change != balance_change:
        problems.append(f"the books do not balance: ledger {ledger_change}, balance {balance_change}")
    return problems


def table(results: list[RunResult]) -> Iterator[str]:
    yield (
        f"{'shards':>6} {'counters':>10} {'sustained req/s':>16} {'p99 added':>10} {'throttled':>10} "
        f"{'lost races':>10}  busiest partition-second at that rate (units)     books"
    )
    for result in results:
        busiest, units = result.busiest
        yield (
            f"{result.shards:>6} {result.rate_limit:>10} {result.sustained:>16,} "
            f"{result.p99_added_at_sustained * 1000:>8.0f}ms {result.throttled:>10,} {result.conflicts:>10,}  "
            f"{busiest:<44} {units:>6.0f}  {'exact' if not result.problems else '; '.join(result.problems)}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", default="1,4,16,64,100", help="comma-separated shard counts")
    parser.add_argument(
        "--rates", default="100,150,200,300,500,1000,2000,4000,8000,10000,12000", help="offered req/s, step by step"
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="simulated seconds per step")
    parser.add_argument(
        "--single-counter-shards",
        default="64",
        help="shard counts also run with one rate-limit counter per key, as before (comma-separated; '' for none)",
    )
    parser.add_argument("--steps", action="store_true", help="print every step of every run")
    args = parser.parse_args(argv)
    rates = [int(rate) for rate in args.rates.split(",")]
    runs = [(int(count), "sharded") for count in args.shards.split(",")]
    runs += [(int(count), "single") for count in args.single_counter_shards.split(",") if count]
    results = []
    began = real_time.monotonic()
    for shards, mode in runs:
        result = run(shards, rates, args.seconds, mode)
        results.append(result)
        for offered, succeeded, failed, p99 in result.steps if args.steps else []:
            print(
                f"  {shards} shards, {mode}: offered {offered}/s: {succeeded} ok, {failed} failed, "
                f"p99 added {p99 * 1000:.0f} ms"
            )
    for line in table(results):
        print(line)
    print(f"({real_time.monotonic() - began:.0f} s of real time)")
    return 1 if any(result.problems for result in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
