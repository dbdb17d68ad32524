"""Every change of a key's credits: top-up, reserve, settle, refund, release.

Each change is one DynamoDB transaction that updates the balance on the key item and appends its
ledger entry, so the ledger and the balance can never disagree. The balance update is conditional
on the balance we read (optimistic concurrency): the ledger's ``balance_after`` is exact and the
balance never goes below zero, however many requests race.

A reservation is also an item of its own (the reservations table) until it is settled, refunded,
or released by the reconciler; deleting it is part of the closing transaction, so a reservation
can be closed once and only once.
"""

from __future__ import annotations

import collections
import heapq
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from infery.adapters.dynamodb import (
    TRANSACTION_CANCELED,
    all_items,
    cancellation_codes,
    cancelled_item,
    consistent_item,
    deserialize,
    error_code,
    pages,
    serialize,
)
from infery.domain.clock import now_iso
from infery.domain.errors import AuthenticationFailed, InsufficientCredits, InternalError, NotFound
from infery.domain.keys import ApiKeyItem
from infery.domain.ledger import (
    LedgerEntry,
    LedgerKind,
    Reservation,
    ReservationClosed,
    SettledCharge,
    Settlement,
    check_note,
    settle,
    short_of_credits,
    take_for_reservation,
)
from infery.domain.shards import (
    check_shard_count,
    evened,
    ledger_partition,
    shard_item_key,
    split_partition,
    start_shard,
)
from infery.observability import logger

_MAX_ATTEMPTS = 40
# how many reservations' balances a store remembers until they are closed (a hint: forgetting one costs a read)
_REMEMBERED_BALANCES = 1000
LEDGER_TIME_INDEX = "ByTime"
# how old the other shards' balances may be in the total a settle reports for a sharded key: reading every shard on
# every request would put each request's reads on every shard's partition; an instance serving a request a second
# reads them once in this many seconds (at 10,000 requests a second, some 330 read units a second on each shard)
TOTAL_MAX_AGE_SECONDS = 15.0
# how many times a reservation on a sharded key evens the shards out before it gives up (other requests race it)
_MAX_REBALANCES = 5


# A change's arithmetic: the balance read -> (the change to it, the ledger entry's other fields).
Change = Callable[[int], tuple[int, dict[str, Any]]]


class _AlreadyApplied(Exception):
    """The ledger entry (or the reservation) shows this change was made already."""


class _ShardGone(Exception):
    """The shard's item is gone: the key was set to fewer shards while a reservation on it was open."""


def _ledger_entry(item: dict[str, Any]) -> LedgerEntry:
    """A ledger item as an entry: the partition it was read from names the key and the shard."""
    values = deserialize(item)
    key_id, shard = split_partition(values["key_id"])
    return LedgerEntry.model_validate({**values, "key_id": key_id, "shard": shard or values.get("shard")})


class CreditStore:
    def __init__(self, client: Any, keys_table_name: str, ledger_table_name: str, reservations_table_name: str) -> None:
        self._client = client
        self._keys_table = keys_table_name
        self._ledger_table = ledger_table_name
        self._reservations_table = reservations_table_name
        # request id -> the key's balance right after this store reserved for it: its settle or refund starts from
        # that balance instead of reading the key again (and reads it only when another change came in between)
        self._balances_after_reserve: collections.OrderedDict[str, int] = collections.OrderedDict()
        # key hash -> (when read, each shard's balance as last read or written here): a sharded key's total
        self._shard_views: dict[str, tuple[float, list[int]]] = {}

    # reads

    def balance(self, key_hash: str) -> int:
        """The key's balance: every shard's, added up (read consistently)."""
        row = self._key_row(key_hash)
        shards = int(row.get("credit_shards", 1))
        return int(row["credits"]) + sum(int(self._key_row(key_hash, shard)["credits"]) for shard in range(1, shards))

    def shard_balances(self, key_hash: str) -> list[int]:
        """Each shard's balance, shard 0 first (read consistently)."""
        shards = int(self._key_row(key_hash).get("credit_shards", 1))
        return [int(self._key_row(key_hash, shard)["credits"]) for shard in range(shards)]

    def ledger(
        self, key_id: str, *, since: str | None = None, until: str | None = None, parts: int = 1
    ) -> list[LedgerEntry]:
        """The key's ledger entries in time order, optionally from ``since`` up to (excluding) ``until``; ``parts``:
        the key's ``ledger_parts``, every partition its shards ever wrote to."""
        return list(reversed(list(self.ledger_newest_first(key_id, since=since, until=until, parts=parts))))

    def ledger_newest_first(
        self, key_id: str, *, since: str | None = None, until: str | None = None, parts: int = 1
    ) -> Iterator[LedgerEntry]:
        """The key's entries newest first, merged from every ledger partition as each is read, page by page."""
        streams = [self._partition_newest_first(ledger_partition(key_id, part), since, until) for part in range(parts)]
        return heapq.merge(*streams, key=lambda entry: entry.created_at, reverse=True)

    def _partition_newest_first(self, partition: str, since: str | None, until: str | None) -> Iterator[LedgerEntry]:
        condition, values = "key_id = :key_id", {":key_id": partition}
        if since or until:
            # ISO timestamps start with a digit: "0" sorts before every one, "~" after (DynamoDB refuses "")
            condition += " AND created_at BETWEEN :since AND :until"
            values |= {":since": since or "0", ":until": until or "~"}
        for page in pages(
            self._client.query,
            TableName=self._ledger_table,
            IndexName=LEDGER_TIME_INDEX,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=serialize(values),
            ScanIndexForward=False,
        ):
            for item in page["Items"]:
                entry = _ledger_entry(item)
                if not until or entry.created_at < until:
                    yield entry

    def entries_for_request(self, key_id: str, request_id_prefix: str, *, parts: int = 1) -> list[LedgerEntry]:
        """Every ledger entry of the key whose request id starts with this prefix (a job's attempts), in entry id
        order, from each of the key's ``parts`` ledger partitions."""
        found: list[LedgerEntry] = []
        for part in range(parts):
            page = self._client.query(
                TableName=self._ledger_table,
                ConsistentRead=True,
                KeyConditionExpression="key_id = :key_id AND begins_with(entry_id, :prefix)",
                ExpressionAttributeValues=serialize(
                    {":key_id": ledger_partition(key_id, part), ":prefix": request_id_prefix}
                ),
            )
            found.extend(_ledger_entry(item) for item in page["Items"])
        return sorted(found, key=lambda entry: entry.entry_id)

    def open_reservations(self, *, older_than_epoch: int, now_epoch: int | None = None) -> list[Reservation]:
        """Reservations created before ``older_than_epoch`` whose hold (if any) has passed."""
        now = int(time.time()) if now_epoch is None else now_epoch
        items = all_items(
            self._client.scan,
            TableName=self._reservations_table,
            FilterExpression="created_epoch < :cutoff AND (attribute_not_exists(hold_until_epoch) OR "
            "hold_until_epoch < :now)",
            ExpressionAttributeValues=serialize({":cutoff": older_than_epoch, ":now": now}),
            ConsistentRead=True,
        )
        return [Reservation.model_validate(deserialize(item)) for item in items]

    # changes

    def top_up(self, key: ApiKeyItem, credits: int, *, request_id: str, note: str | None = None) -> int:
        """Add credits (an operator's payment); return the key's balance after. One request_id adds once. A sharded
        key's top-up goes to shard 0, then the shards are evened out."""
        if credits <= 0:
            raise ValueError("a top-up adds a positive number of credits")
        check_note(note)
        try:
            balance = self._apply(
                key.key_hash, key.key_id, LedgerKind.TOPUP, request_id, lambda _: (credits, {"note": note})
            )
        except _AlreadyApplied:
            return self.balance(key.key_hash)
        if key.credit_shards == 1:
            return balance
        try:
            return self.rebalance(key.key_hash)
        except (InternalError, ClientError):
            # the credits are added and ledgered (on shard 0): the top-up is done, and an error now would have its
            # operator add them again. A reservation that finds its own shard short evens the shards out itself.
            logger.warning("a top-up's credits stay on shard 0 until a reservation evens the shards out")
            return self.balance(key.key_hash)

    def reserve(
        self,
        key: ApiKeyItem,
        credits: int,
        *,
        request_id: str,
        model: str,
        hold_seconds: int | None = None,
        covered_seconds: float | None = None,
    ) -> Reservation:
        """Take ``credits`` from the available balance for a request about to run; 402 if the balance is short.
        ``hold_seconds``: how long the reconciler must leave it alone (a job longer than its grace period).

        A sharded key's credits come from the request's own shard (``start_shard``); when it cannot cover them the
        shards are evened out, that shard first served, and it is tried again: 402 only when the key's total is
        short."""
        shard = start_shard(request_id, key.credit_shards)
        reservation = Reservation.opened(
            key,
            credits,
            request_id=request_id,
            model=model,
            shard=shard,
            created_epoch=int(time.time()),
            hold_seconds=hold_seconds,
            covered_seconds=covered_seconds,
        )

        def take(current: int) -> tuple[int, dict[str, Any]]:
            return take_for_reservation(current, credits), {"model": model}

        def put(reservation: Reservation) -> dict[str, Any]:
            return {
                "Put": {
                    "TableName": self._reservations_table,
                    "Item": serialize(reservation.model_dump()),
                    "ConditionExpression": "attribute_not_exists(request_id)",
                }
            }

        # the key as authentication read it (consistently, moments ago) is the balance to start from, when it read
        # this shard
        seen = key.credits if key.shard == shard else None
        rebalances = 0
        while True:
            try:
                balance_after = self._apply(
                    key.key_hash,
                    key.key_id,
                    LedgerKind.RESERVE,
                    request_id,
                    take,
                    shard=shard,
                    extra_items=[put(reservation)],
                    require_active=True,
                    seen_balance=seen,
                )
                break
            except _ShardGone:
                # the key was resharded to fewer shards since authentication read it: shard 0 always exists
                shard, seen = 0, None
                reservation = reservation.model_copy(update={"shard": None})
            except _AlreadyApplied:
                stored = self.reservation(request_id)
                if stored is None:
                    raise ReservationClosed(
                        f"Request {request_id} was already reserved and settled or refunded; nothing more was charged."
                    ) from None
                return stored
            except InsufficientCredits:
                if key.credit_shards == 1:
                    raise
                # a sharded key's 402 names its whole balance, never the one shard that was short
                if rebalances == _MAX_REBALANCES:
                    raise short_of_credits(credits, self.balance(key.key_hash)) from None
                rebalances += 1
                seen = None
                total = self.rebalance(key.key_hash, target=shard, need=credits)
                if total < credits:
                    raise short_of_credits(credits, total) from None
        self._remember_balance(request_id, balance_after)
        self._note_shard(key.key_hash, key.credit_shards, shard, balance_after)
        return reservation

    def _remember_balance(self, request_id: str, balance: int) -> None:
        self._balances_after_reserve[request_id] = balance
        while len(self._balances_after_reserve) > _REMEMBERED_BALANCES:  # reservations this process never closed
            self._balances_after_reserve.popitem(last=False)

    def reservation(self, request_id: str) -> Reservation | None:
        item = consistent_item(self._client, self._reservations_table, {"request_id": request_id})
        return Reservation.model_validate(item) if item else None

    def settle(self, reservation: Reservation, credits_used: int, *, audio_seconds: float) -> SettledCharge:
        """Close the reservation at the real cost: give back the excess, or take the rest while the balance lasts
        (the balance of the reservation's shard). ``balance_after``: the key's total (see ``_total``)."""
        outcome: list[Settlement] = []  # the settlement of the balance the transaction was applied to

        def settle_delta(current: int) -> tuple[int, dict[str, Any]]:
            outcome.append(settle(reservation.credits, credits_used, current))
            return outcome[-1].change, {
                "model": reservation.model,
                "audio_seconds": audio_seconds,
                "billed_credits": outcome[-1].billed_credits,
                "unpaid_credits": outcome[-1].unpaid_credits or None,
            }

        if reservation.shard is not None and credits_used == reservation.credits:
            return self._settle_exactly(reservation, audio_seconds)
        try:
            shard, balance_after = self._close(reservation, LedgerKind.SETTLE, settle_delta)
        except _AlreadyApplied:
            return SettledCharge(billed_credits=credits_used, balance_after=self.balance(reservation.key_hash))
        return SettledCharge(
            billed_credits=outcome[-1].billed_credits,
            balance_after=self._total(reservation, shard, balance_after),
            unpaid_credits=outcome[-1].unpaid_credits,
        )

    def _settle_exactly(self, reservation: Reservation, audio_seconds: float) -> SettledCharge:
        """A sharded key's reservation that was the exact cost: the ledger's settle entry and the reservation's end,
        without touching the shard. Its balance is the one item every request of the shard writes: a write fewer
        per request is a race fewer to lose (benchmarks/dynamodb_partition_sim.py)."""
        shard = reservation.shard or 0
        entry = LedgerEntry(
            key_id=ledger_partition(reservation.key_id, shard),
            entry_id=f"{reservation.request_id}#{LedgerKind.SETTLE.value}",
            kind=LedgerKind.SETTLE,
            request_id=reservation.request_id,
            model=reservation.model,
            audio_seconds=audio_seconds,
            credits=0,
            balance_after=None,
            billed_credits=reservation.credits,
            created_at=now_iso(),
            shard=shard or None,
        )
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._ledger_table,
                            "Item": serialize(entry.model_dump(mode="json")),
                            "ConditionExpression": "attribute_not_exists(entry_id)",
                        }
                    },
                    {
                        "Delete": {
                            "TableName": self._reservations_table,
                            "Key": serialize({"request_id": reservation.request_id}),
                            "ConditionExpression": "attribute_exists(request_id)",
                        }
                    },
                ]
            )
        except ClientError as error:
            if error_code(error) != TRANSACTION_CANCELED or "ConditionalCheckFailed" not in cancellation_codes(error):
                raise
            # settled or refunded already: never twice
            return SettledCharge(billed_credits=reservation.credits, balance_after=self.balance(reservation.key_hash))
        # charged: what follows only reports the balance, from shard 0 when the key has fewer shards by now
        known = self._balances_after_reserve.pop(reservation.request_id, None)
        if known is None:
            try:
                known = int(self._shard_or_gone(reservation.key_hash, shard)["credits"])
            except _ShardGone:
                shard, known = 0, int(self._key_row(reservation.key_hash)["credits"])
        return SettledCharge(billed_credits=reservation.credits, balance_after=self._total(reservation, shard, known))

    def refund(self, reservation: Reservation, *, reason: str, kind: LedgerKind = LedgerKind.REFUND) -> int | None:
        """Give the whole reservation back; the key's balance after (see ``_total``); None when it was closed
        already."""
        try:
            shard, balance_after = self._close(
                reservation, kind, lambda _: (reservation.credits, {"model": reservation.model, "note": reason})
            )
        except _AlreadyApplied:
            return None
        return self._total(reservation, shard, balance_after)

    def _close(self, reservation: Reservation, kind: LedgerKind, compute: Change) -> tuple[int, int]:
        """Close on the reservation's shard (on shard 0 if the key has fewer shards now): (the shard, its balance)."""
        delete_reservation = {
            "Delete": {
                "TableName": self._reservations_table,
                "Key": serialize({"request_id": reservation.request_id}),
                "ConditionExpression": "attribute_exists(request_id)",
            }
        }
        seen = self._balances_after_reserve.pop(reservation.request_id, None)
        for shard in dict.fromkeys((reservation.shard or 0, 0)):
            try:
                # a key revoked while its request ran still gets its unused credits back
                return shard, self._apply(
                    reservation.key_hash,
                    reservation.key_id,
                    kind,
                    reservation.request_id,
                    compute,
                    shard=shard,
                    extra_items=[delete_reservation],
                    seen_balance=seen,
                )
            except _ShardGone:
                seen = None
        raise InternalError("The key's first credit shard is missing; nothing was changed.")

    # shards

    def _note_shard(self, key_hash: str, shards: int, shard: int, balance: int) -> None:
        """Keep what this store last saw of a sharded key's shard (for ``_total``)."""
        if shards == 1:
            return
        known = self._shard_views.get(key_hash)
        if known is None or len(known[1]) != shards:
            return
        known[1][shard] = balance

    def _total(self, reservation: Reservation, shard: int, balance: int) -> int:
        """A key's total after a change on ``shard`` left it at ``balance``: exact for a 1-shard key; for a sharded
        key this shard's balance plus the others' as ``recent_shards`` has them."""
        if reservation.shard is None:  # reserved on a 1-shard key
            return balance
        balances = self.recent_shards(reservation.key_hash)
        if shard < len(balances):
            balances[shard] = balance
        return sum(balances)

    def recent_shards(self, key_hash: str) -> list[int]:
        """A sharded key's shards as this store last wrote or read them, read again (shard 0 consistently, the others
        eventually consistent) when older than TOTAL_MAX_AGE_SECONDS: the total the balance header shows."""
        known = self._shard_views.get(key_hash)
        if known is None or time.monotonic() - known[0] > TOTAL_MAX_AGE_SECONDS:
            row = self._key_row(key_hash)
            balances = [int(row["credits"]), *self._other_shards(key_hash, int(row.get("credit_shards", 1)))]
            known = (time.monotonic(), balances)
            self._shard_views[key_hash] = known
        return known[1]

    def _other_shards(self, key_hash: str, shards: int) -> list[int]:
        """Shards 1.. of a key, read in one eventually consistent batch (one round trip, not one per shard); a shard
        the batch could not read (throttled, gone) counts as empty."""
        found: dict[str, int] = {}
        request = {
            self._keys_table: {
                "Keys": [serialize({"key_hash": shard_item_key(key_hash, shard)}) for shard in range(1, shards)],
                "ProjectionExpression": "key_hash, credits",
            }
        }
        for _ in range(3):
            if not request.get(self._keys_table, {}).get("Keys"):
                break
            answer = self._client.batch_get_item(RequestItems=request)
            for item in answer.get("Responses", {}).get(self._keys_table, []):
                values = deserialize(item)
                found[values["key_hash"]] = int(values["credits"])
            request = answer.get("UnprocessedKeys") or {}
        return [found.get(shard_item_key(key_hash, shard), 0) for shard in range(1, shards)]

    def rebalance(self, key_hash: str, *, target: int = 0, need: int = 0) -> int:
        """Even a sharded key's shards out in one transaction (``target`` holding at least ``need`` when the total
        has it); return the key's total. Each shard's update is conditional on the balance read, so a reservation
        racing it either lands before (and is moved with the rest) or after (and finds the new balance): no credit
        is lost or made. No ledger entry: the key's balance does not change."""
        for attempt in range(_MAX_ATTEMPTS):
            rows = [self._key_row(key_hash)]
            shards = int(rows[0].get("credit_shards", 1))
            rows += [self._key_row(key_hash, shard) for shard in range(1, shards)]
            balances = [int(row["credits"]) for row in rows]
            wanted = evened(balances, target if target < shards else 0, need)
            if wanted == balances:
                return sum(balances)
            updates = [
                {"Update": self._balance_update(shard_item_key(key_hash, shard), seen, new, require_active=False)}
                for shard, (seen, new) in enumerate(zip(balances, wanted, strict=True))
                if seen != new
            ]
            try:
                self._client.transact_write_items(TransactItems=updates)
            except ClientError as error:
                if error_code(error) != TRANSACTION_CANCELED:
                    raise
                time.sleep(random.uniform(0, min(0.25, 0.005 * 2**attempt)))
                continue
            self._shard_views[key_hash] = (time.monotonic(), wanted)
            return sum(wanted)
        raise InternalError(
            "The credit balance is too contended to update right now; nothing was charged. Retry the request."
        )

    def set_shards(self, key: ApiKeyItem, shards: int) -> ApiKeyItem:
        """Keep the key's credits in ``shards`` items from now on, evened out, in one transaction conditional on every
        balance read (a request racing it makes it read again). The ledger keeps every partition the key ever used
        (``ledger_parts``). A reservation open on a shard that goes is closed on shard 0."""
        check_shard_count(shards)
        for attempt in range(_MAX_ATTEMPTS):
            row = self._key_row(key.key_hash)
            old = int(row.get("credit_shards", 1))
            rows = [row] + [self._key_row(key.key_hash, shard) for shard in range(1, old)]
            balances = [int(item["credits"]) for item in rows]
            wanted = evened([sum(balances)] + [0] * (shards - 1))
            parts = max(int(row.get("ledger_parts", 1)), shards)
            updated = ApiKeyItem.model_validate(row).model_copy(
                update={"credit_shards": shards, "ledger_parts": parts, "credits": wanted[0]}
            )
            items: list[dict[str, Any]] = []
            for shard in range(max(old, shards)):
                item_key = serialize({"key_hash": shard_item_key(key.key_hash, shard)})
                seen = serialize({":seen_balance": balances[shard]}) if shard < old else {}
                if shard >= shards:
                    items.append(
                        {
                            "Delete": {
                                "TableName": self._keys_table,
                                "Key": item_key,
                                "ConditionExpression": "credits = :seen_balance",
                                "ExpressionAttributeValues": seen,
                            }
                        }
                    )
                    continue
                stored = {**updated.stored(), "key_hash": shard_item_key(key.key_hash, shard), "credits": wanted[shard]}
                put: dict[str, Any] = {"TableName": self._keys_table, "Item": serialize(stored)}
                if shard >= old:
                    put["ConditionExpression"] = "attribute_not_exists(key_hash)"
                else:
                    # the row as read, status too: a key revoked meanwhile is not made active again
                    put["ConditionExpression"] = "credits = :seen_balance AND #status = :seen_status"
                    put["ExpressionAttributeNames"] = {"#status": "status"}
                    put["ExpressionAttributeValues"] = {**seen, **serialize({":seen_status": row["status"]})}
                items.append({"Put": put})
            try:
                self._client.transact_write_items(TransactItems=items)
            except ClientError as error:
                if error_code(error) != TRANSACTION_CANCELED:
                    raise
                time.sleep(random.uniform(0, min(0.25, 0.005 * 2**attempt)))
                continue
            self._shard_views.pop(key.key_hash, None)
            return updated
        raise InternalError("The key's credits are too contended to reshard right now; nothing was changed.")

    def _apply(
        self,
        key_hash: str,
        key_id: str,
        kind: LedgerKind,
        request_id: str,
        compute: Change,
        *,
        shard: int = 0,
        extra_items: list[dict[str, Any]] | None = None,
        require_active: bool = False,
        seen_balance: int | None = None,
    ) -> int:
        """Apply ``compute(current_balance) -> (delta, ledger fields)`` once on the shard's balance and in its ledger
        partition; return the shard's balance after.

        ``seen_balance``: the balance as last read or written by this request, tried first without reading the
        key again. The transaction is conditional on it (and, with ``require_active``, on the key being active),
        so a balance that changed since is never written over: the change is computed again on the key as the
        failed condition found it (DynamoDB returns it with the cancellation), or as read when it did not say.
        """
        entry_id = f"{request_id}#{kind.value}"
        created_at = now_iso()
        row_found_by_conflict: dict[str, Any] | None = None
        for attempt in range(_MAX_ATTEMPTS):
            if seen_balance is not None:
                current, assumed = seen_balance, True
                seen_balance = None  # tried once: a retry starts from the key as the conflict found it, or reads it
            else:
                row = row_found_by_conflict or self._shard_or_gone(key_hash, shard)
                row_found_by_conflict = None
                if require_active and row.get("status") != "active":
                    raise AuthenticationFailed(
                        "This key was revoked while the request ran; nothing was charged.", code="revoked_api_key"
                    )
                current, assumed = int(row["credits"]), False
            try:
                delta, fields = compute(current)
            except InsufficientCredits:
                if assumed:
                    continue  # short by the balance seen before: refuse only on the balance as it is now
                if self._ledger_has(key_id, entry_id, shard):
                    raise _AlreadyApplied from None  # a replay of a change already made, not a new one
                raise
            new_balance = current + delta
            if new_balance < 0:
                if assumed:
                    continue
                raise InternalError("A credit change would make the balance negative; nothing was changed.")
            entry = LedgerEntry(
                key_id=ledger_partition(key_id, shard),
                entry_id=entry_id,
                kind=kind,
                request_id=request_id,
                credits=delta,
                balance_after=new_balance,
                created_at=created_at,
                shard=shard or None,
                **fields,
            )
            items = [
                {
                    "Update": self._balance_update(
                        shard_item_key(key_hash, shard), current, new_balance, require_active=require_active
                    )
                },
                {
                    "Put": {
                        "TableName": self._ledger_table,
                        "Item": serialize(entry.model_dump(mode="json")),
                        "ConditionExpression": "attribute_not_exists(entry_id)",
                    }
                },
                *(extra_items or []),
            ]
            try:
                self._client.transact_write_items(TransactItems=items)
                return new_balance
            except ClientError as error:
                if error_code(error) != TRANSACTION_CANCELED:
                    raise
                codes = cancellation_codes(error)
                if "ConditionalCheckFailed" in codes[1:]:
                    raise _AlreadyApplied from None  # this change was made already: never twice
                # under concurrency on one key every lost race would cost a read: the cancellation holds the key
                # (the balance update is the transaction's first item)
                row_found_by_conflict = cancelled_item(error, 0)
                if assumed:
                    continue  # the balance changed since it was seen: no need to back off yet
                # another request changed the balance since we read it, or the transactions conflicted
                time.sleep(random.uniform(0, min(0.25, 0.005 * 2**attempt)))
        raise InternalError(
            "The credit balance is too contended to update right now; nothing was charged. Retry the request."
        )

    def _shard_or_gone(self, key_hash: str, shard: int) -> dict[str, Any]:
        if shard == 0:
            return self._key_row(key_hash)
        item = consistent_item(self._client, self._keys_table, {"key_hash": shard_item_key(key_hash, shard)})
        if not item:
            raise _ShardGone
        return item

    def _balance_update(self, item_key: str, seen: int, new_balance: int, *, require_active: bool) -> dict[str, Any]:
        """A balance item (the key's row, or a shard's) from ``seen`` to ``new_balance``, only if it is still
        ``seen`` (and the key active)."""
        update: dict[str, Any] = {
            "TableName": self._keys_table,
            "Key": serialize({"key_hash": item_key}),
            "UpdateExpression": "SET credits = :new_balance",
            "ConditionExpression": "credits = :seen_balance",
            "ExpressionAttributeValues": serialize({":new_balance": new_balance, ":seen_balance": seen}),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if require_active:  # a key revoked since it was read: the retry reads it and refuses
            update["ConditionExpression"] += " AND #status = :active"
            update["ExpressionAttributeNames"] = {"#status": "status"}
            update["ExpressionAttributeValues"][":active"] = {"S": "active"}
        return update

    def has_entry(self, key_id: str, request_id: str, kind: LedgerKind) -> bool:
        return self._ledger_has(key_id, f"{request_id}#{kind.value}")

    def _ledger_has(self, key_id: str, entry_id: str, shard: int = 0) -> bool:
        return "Item" in self._client.get_item(
            TableName=self._ledger_table,
            Key=serialize({"key_id": ledger_partition(key_id, shard), "entry_id": entry_id}),
            ConsistentRead=True,
            ProjectionExpression="entry_id",
        )

    def _key_row(self, key_hash: str, shard: int = 0) -> dict[str, Any]:
        item = consistent_item(self._client, self._keys_table, {"key_hash": shard_item_key(key_hash, shard)})
        if not item:
            raise NotFound("This key does not exist.", code="key_not_found")
        return item
