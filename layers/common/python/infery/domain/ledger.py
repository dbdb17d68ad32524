"""Credits and their ledger: what a reservation holds, what a settle collects, and the entries that record them.

The arithmetic here is the only one: the DynamoDB credit store and the tests' in-memory store both apply it to the
balance they read, so the two cannot disagree about what a request costs.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, Field

from infery.domain.clock import now_iso
from infery.domain.errors import InsufficientCredits, InternalError
from infery.domain.keys import ApiKeyItem


class LedgerKind(StrEnum):
    TOPUP = "topup"
    RESERVE = "reserve"
    SETTLE = "settle"  # gives back what the reservation held beyond the real cost (or takes the rest)
    REFUND = "refund"  # our failure: the whole reservation goes back
    RELEASE = "release"  # the reconciler closed a reservation that its crashed request left open


class LedgerEntry(BaseModel):
    """One row of the append-only ledger. ``credits`` is signed: negative when taken from the balance."""

    key_id: str
    entry_id: str
    kind: LedgerKind
    request_id: str
    model: str | None = None
    audio_seconds: float | None = None
    credits: int
    # the balance right after this change: the key's, or for a sharded key its shard's; None for a sharded key's
    # settle that changed no balance (the reservation was the exact cost), which does not read or write the shard
    balance_after: int | None = None
    # for settle entries: what the request cost in all (reserve + settle)
    billed_credits: int | None = None
    # what a settle could not collect because the balance ran out (never charged below zero)
    unpaid_credits: int | None = None
    note: str | None = None
    created_at: str
    # the credit shard the change was made on (None: the key's only or first one); ``balance_after`` is that
    # shard's balance (infery.domain.shards)
    shard: int | None = None


class Reservation(BaseModel):
    request_id: str
    key_hash: str
    key_id: str
    model: str
    credits: int = Field(ge=0)
    created_at: str
    created_epoch: int
    # a job on the asynchronous endpoint legitimately runs longer than the reconciler's grace period
    hold_until_epoch: int | None = None
    # the seconds of audio these credits pay for; the model is told to refuse more
    covered_seconds: float | None = None
    # the credit shard the credits were taken from, where the settle or refund gives them back (None: the key has
    # one shard)
    shard: int | None = None

    @classmethod
    def opened(
        cls,
        key: ApiKeyItem,
        credits: int,
        *,
        request_id: str,
        model: str,
        shard: int,
        created_epoch: int,
        hold_seconds: int | None = None,
        covered_seconds: float | None = None,
    ) -> Reservation:
        """A reservation of ``credits`` on ``key`` (taken from ``shard``), opened at ``created_epoch``."""
        return cls(
            request_id=request_id,
            key_hash=key.key_hash,
            key_id=key.key_id,
            model=model,
            credits=credits,
            created_at=now_iso(),
            created_epoch=created_epoch,
            hold_until_epoch=created_epoch + hold_seconds if hold_seconds else None,
            covered_seconds=round(covered_seconds, 3) if covered_seconds else None,
            shard=shard if key.credit_shards > 1 else None,
        )


class SettledCharge(BaseModel):
    billed_credits: int
    balance_after: int
    unpaid_credits: int = 0


class ReservationClosed(InternalError):
    """This request id was reserved and closed before: its work was done (or given up) once already."""

    default_code = "already_processed"


def check_note(note: str | None) -> None:
    """A ledger note (an operator's invoice number) is one line of text: a control character in it (a CR, a tab,
    an escape) breaks the CSV export's rows or a terminal's display, so it is refused where the note comes in."""
    for character in note or "":
        if unicodedata.category(character) == "Cc":
            raise ValueError(
                f"a note must be one line of printable text; it contains the control character U+{ord(character):04X}"
            )


def take_for_reservation(balance: int, credits: int) -> int:
    """The change a reservation makes to ``balance``: 402 when the balance cannot cover it (never below zero)."""
    if balance < credits:
        raise short_of_credits(credits, balance)
    return -credits


def short_of_credits(credits: int, balance: int) -> InsufficientCredits:
    """The 402 of a reservation of ``credits`` that the key's ``balance`` cannot cover."""
    return InsufficientCredits(
        f"This request needs {credits} credits reserved but the key's balance is {balance}. Top up "
        "the key's credits to continue.",
        headers={"x-infery-credits-balance": str(balance)},
    )


@dataclass(frozen=True)
class Settlement:
    """A reservation closed at the real cost: ``change`` to the balance (positive gives credits back)."""

    change: int
    billed_credits: int
    unpaid_credits: int


def settle(reserved: int, credits_used: int, balance: int) -> Settlement:
    """Give back what the reservation held beyond the real cost, or take the rest while the balance lasts: what the
    balance cannot cover is recorded as unpaid, never charged below zero."""
    extra = credits_used - reserved
    collectable = min(extra, balance) if extra > 0 else extra
    return Settlement(
        change=-collectable,
        billed_credits=reserved + collectable,
        unpaid_credits=extra - collectable if extra > 0 else 0,
    )
