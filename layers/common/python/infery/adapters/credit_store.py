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
import random
import time
from collections.abc import Callable
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
    take_for_reservation,
)

_MAX_ATTEMPTS = 40
# how many reservations' balances a store remembers until they are closed (a hint: forgetting one costs a read)
_REMEMBERED_BALANCES = 1000
LEDGER_TIME_INDEX = "ByTime"


# A change's arithmetic: the balance read -> (the change to it, the ledger entry's other fields).
Change = Callable[[int], tuple[int, dict[str, Any]]]


class _AlreadyApplied(Exception):
    """The ledger entry (or the reservation) shows this change was made already."""


class CreditStore:
    def __init__(self, client: Any, keys_table_name: str, ledger_table_name: str, reservations_table_name: str) -> None:
        self._client = client
        self._keys_table = keys_table_name
        self._ledger_table = ledger_table_name
        self._reservations_table = reservations_table_name
        # request id -> the key's balance right after this store reserved for it: its settle or refund starts from
        # that balance instead of reading the key again (and reads it only when another change came in between)
        self._balances_after_reserve: collections.OrderedDict[str, int] = collections.OrderedDict()

    # reads

    def balance(self, key_hash: str) -> int:
        return int(self._key_row(key_hash)["credits"])

    def ledger(self, key_id: str, *, since: str | None = None, until: str | None = None) -> list[LedgerEntry]:
        """The key's ledger entries in time order, optionally from ``since`` up to (excluding) ``until``."""
        condition, values = "key_id = :key_id", {":key_id": key_id}
        if since or until:
            # ISO timestamps start with a digit: "0" sorts before every one, "~" after (DynamoDB refuses "")
            condition += " AND created_at BETWEEN :since AND :until"
            values |= {":since": since or "0", ":until": until or "~"}
        items = all_items(
            self._client.query,
            TableName=self._ledger_table,
            IndexName=LEDGER_TIME_INDEX,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=serialize(values),
        )
        entries = [LedgerEntry.model_validate(deserialize(item)) for item in items]
        if until:
            entries = [entry for entry in entries if entry.created_at < until]
        return entries

    def entries_for_request(self, key_id: str, request_id_prefix: str) -> list[LedgerEntry]:
        """Every ledger entry of the key whose request id starts with this prefix (a job's attempts)."""
        page = self._client.query(
            TableName=self._ledger_table,
            ConsistentRead=True,
            KeyConditionExpression="key_id = :key_id AND begins_with(entry_id, :prefix)",
            ExpressionAttributeValues=serialize({":key_id": key_id, ":prefix": request_id_prefix}),
        )
        return [LedgerEntry.model_validate(deserialize(item)) for item in page["Items"]]

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
        """Add credits (an operator's payment); return the balance after. One request_id adds once."""
        if credits <= 0:
            raise ValueError("a top-up adds a positive number of credits")
        check_note(note)
        try:
            return self._apply(
                key.key_hash, key.key_id, LedgerKind.TOPUP, request_id, lambda _: (credits, {"note": note})
            )
        except _AlreadyApplied:
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
        ``hold_seconds``: how long the reconciler must leave it alone (a job longer than its grace period)."""
        created_epoch = int(time.time())
        reservation = Reservation(
            request_id=request_id,
            key_hash=key.key_hash,
            key_id=key.key_id,
            model=model,
            credits=credits,
            created_at=now_iso(),
            created_epoch=created_epoch,
            hold_until_epoch=created_epoch + hold_seconds if hold_seconds else None,
            covered_seconds=round(covered_seconds, 3) if covered_seconds else None,
        )

        def take(current: int) -> tuple[int, dict[str, Any]]:
            return take_for_reservation(current, credits), {"model": model}

        put_reservation = {
            "Put": {
                "TableName": self._reservations_table,
                "Item": serialize(reservation.model_dump()),
                "ConditionExpression": "attribute_not_exists(request_id)",
            }
        }
        try:
            # the key as authentication read it (consistently, moments ago) is the balance to start from
            balance_after = self._apply(
                key.key_hash,
                key.key_id,
                LedgerKind.RESERVE,
                request_id,
                take,
                extra_items=[put_reservation],
                require_active=True,
                seen_balance=key.credits,
            )
        except _AlreadyApplied:
            stored = self.reservation(request_id)
            if stored is None:
                raise ReservationClosed(
                    f"Request {request_id} was already reserved and settled or refunded; nothing more was charged."
                ) from None
            return stored
        self._remember_balance(request_id, balance_after)
        return reservation

    def _remember_balance(self, request_id: str, balance: int) -> None:
        self._balances_after_reserve[request_id] = balance
        while len(self._balances_after_reserve) > _REMEMBERED_BALANCES:  # reservations this process never closed
            self._balances_after_reserve.popitem(last=False)

    def reservation(self, request_id: str) -> Reservation | None:
        item = consistent_item(self._client, self._reservations_table, {"request_id": request_id})
        return Reservation.model_validate(item) if item else None

    def settle(self, reservation: Reservation, credits_used: int, *, audio_seconds: float) -> SettledCharge:
        """Close the reservation at the real cost: give back the excess, or take the rest while the balance lasts."""
        outcome: list[Settlement] = []  # the settlement of the balance the transaction was applied to

        def settle_delta(current: int) -> tuple[int, dict[str, Any]]:
            outcome.append(settle(reservation.credits, credits_used, current))
            return outcome[-1].change, {
                "model": reservation.model,
                "audio_seconds": audio_seconds,
                "billed_credits": outcome[-1].billed_credits,
                "unpaid_credits": outcome[-1].unpaid_credits or None,
            }

        try:
            balance_after = self._close(reservation, LedgerKind.SETTLE, settle_delta)
        except _AlreadyApplied:
            return SettledCharge(billed_credits=credits_used, balance_after=self.balance(reservation.key_hash))
        return SettledCharge(
            billed_credits=outcome[-1].billed_credits,
            balance_after=balance_after,
            unpaid_credits=outcome[-1].unpaid_credits,
        )

    def refund(self, reservation: Reservation, *, reason: str, kind: LedgerKind = LedgerKind.REFUND) -> int | None:
        """Give the whole reservation back; None when it was closed already."""
        try:
            return self._close(
                reservation, kind, lambda _: (reservation.credits, {"model": reservation.model, "note": reason})
            )
        except _AlreadyApplied:
            return None

    def _close(self, reservation: Reservation, kind: LedgerKind, compute: Change) -> int:
        delete_reservation = {
            "Delete": {
                "TableName": self._reservations_table,
                "Key": serialize({"request_id": reservation.request_id}),
                "ConditionExpression": "attribute_exists(request_id)",
            }
        }
        # a key revoked while its request ran still gets its unused credits back
        return self._apply(
            reservation.key_hash,
            reservation.key_id,
            kind,
            reservation.request_id,
            compute,
            extra_items=[delete_reservation],
            seen_balance=self._balances_after_reserve.pop(reservation.request_id, None),
        )

    def _apply(
        self,
        key_hash: str,
        key_id: str,
        kind: LedgerKind,
        request_id: str,
        compute: Change,
        *,
        extra_items: list[dict[str, Any]] | None = None,
        require_active: bool = False,
        seen_balance: int | None = None,
    ) -> int:
        """Apply ``compute(current_balance) -> (delta, ledger fields)`` once; return the balance after.

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
                row = row_found_by_conflict or self._key_row(key_hash)
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
                if self._ledger_has(key_id, entry_id):
                    raise _AlreadyApplied from None  # a replay of a change already made, not a new one
                raise
            new_balance = current + delta
            if new_balance < 0:
                if assumed:
                    continue
                raise InternalError("A credit change would make the balance negative; nothing was changed.")
            entry = LedgerEntry(
                key_id=key_id,
                entry_id=entry_id,
                kind=kind,
                request_id=request_id,
                credits=delta,
                balance_after=new_balance,
                created_at=created_at,
                **fields,
            )
            items = [
                {"Update": self._balance_update(key_hash, current, new_balance, require_active=require_active)},
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

    def _balance_update(self, key_hash: str, seen: int, new_balance: int, *, require_active: bool) -> dict[str, Any]:
        """The key's balance from ``seen`` to ``new_balance``, only if it is still ``seen`` (and the key active)."""
        update: dict[str, Any] = {
            "TableName": self._keys_table,
            "Key": serialize({"key_hash": key_hash}),
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

    def _ledger_has(self, key_id: str, entry_id: str) -> bool:
        return "Item" in self._client.get_item(
            TableName=self._ledger_table,
            Key=serialize({"key_id": key_id, "entry_id": entry_id}),
            ConsistentRead=True,
            ProjectionExpression="entry_id",
        )

    def _key_row(self, key_hash: str) -> dict[str, Any]:
        item = consistent_item(self._client, self._keys_table, {"key_hash": key_hash})
        if not item:
            raise NotFound("This key does not exist.", code="key_not_found")
        return item
