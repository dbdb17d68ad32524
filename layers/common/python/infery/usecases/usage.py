"""What a key spent, read from its ledger: totals per day and per model, recent requests, and the CSV export.

Everything here is derived from ledger entries only, so a report and an invoice always agree with
the balance: the credits of all entries in a period add up to the balance change over it.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from infery.domain.ledger import LedgerEntry, LedgerKind

CSV_COLUMNS = [
    "created_at",
    "key_id",
    "kind",
    "request_id",
    "model",
    "audio_seconds",
    "credits",
    "balance_after",
    "billed_credits",
    "unpaid_credits",
    "note",
]


class UsageTotals(BaseModel):
    requests: int = 0
    audio_seconds: float = 0.0
    credits: int = 0


class RequestUsage(BaseModel):
    request_id: str
    model: str | None
    status: str  # "settled", "refunded", "released" or "in_progress"
    audio_seconds: float | None
    credits: int  # what it cost in all (a settle's billed_credits); 0 when refunded; the hold while in progress
    created_at: str  # when it began (its first entry in the period read)


def _collect_requests(entries: list[LedgerEntry]) -> list[RequestUsage]:
    by_request: dict[str, list[LedgerEntry]] = defaultdict(list)
    for entry in entries:
        if entry.kind is not LedgerKind.TOPUP:
            by_request[entry.request_id].append(entry)
    requests = []
    for request_id, request_entries in by_request.items():
        kinds = {entry.kind for entry in request_entries}
        closing = next(
            (kind for kind in (LedgerKind.SETTLE, LedgerKind.REFUND, LedgerKind.RELEASE) if kind in kinds), None
        )
        status = {
            LedgerKind.SETTLE: "settled",
            LedgerKind.REFUND: "refunded",
            LedgerKind.RELEASE: "released",
            None: "in_progress",
        }[closing]
        seconds = next((entry.audio_seconds for entry in request_entries if entry.audio_seconds is not None), None)
        settle = next((entry for entry in request_entries if entry.kind is LedgerKind.SETTLE), None)
        # the settle entry knows the whole cost, even when the reservation fell in an earlier period
        if settle is not None:
            cost = (
                settle.billed_credits
                if settle.billed_credits is not None
                else -sum(entry.credits for entry in request_entries)
            )
        elif closing is None:
            cost = -sum(entry.credits for entry in request_entries)
        else:
            cost = 0
        requests.append(
            RequestUsage(
                request_id=request_id,
                model=next((entry.model for entry in request_entries if entry.model), None),
                status=status,
                audio_seconds=seconds,
                credits=cost,
                created_at=min(entry.created_at for entry in request_entries),
            )
        )
    return sorted(requests, key=lambda request: request.created_at)


def _add(totals: UsageTotals, request: RequestUsage) -> None:
    totals.requests += 1
    totals.audio_seconds = round(totals.audio_seconds + (request.audio_seconds or 0.0), 3)
    totals.credits += request.credits


def usage_report(
    entries: list[LedgerEntry], *, balance: int, since: str, until: str, recent: int = 20
) -> dict[str, Any]:
    requests = _collect_requests(entries)
    billed = [request for request in requests if request.status == "settled"]
    total = UsageTotals()
    per_day: dict[str, UsageTotals] = defaultdict(UsageTotals)
    per_model: dict[str, UsageTotals] = defaultdict(UsageTotals)
    per_day_model: dict[str, dict[str, UsageTotals]] = defaultdict(lambda: defaultdict(UsageTotals))
    for request in billed:
        _add(total, request)
        _add(per_day[request.created_at[:10]], request)
        _add(per_model[request.model or "unknown"], request)
        _add(per_day_model[request.created_at[:10]][request.model or "unknown"], request)
    return {
        "object": "usage",
        "balance": balance,
        "period": {"start": since, "end": until},
        "credits_added": sum(entry.credits for entry in entries if entry.kind is LedgerKind.TOPUP),
        "total": total.model_dump(),
        "by_day": [{"date": day, **totals.model_dump()} for day, totals in sorted(per_day.items())],
        "by_model": [{"model": model, **totals.model_dump()} for model, totals in sorted(per_model.items())],
        # each day's totals split by model (the web console's chart)
        "by_day_and_model": [
            {"date": day, "model": model, **totals.model_dump()}
            for day, models in sorted(per_day_model.items())
            for model, totals in sorted(models.items())
        ],
        "recent_requests": [request.model_dump() for request in reversed(requests[-recent:])] if recent > 0 else [],
    }


# What makes a spreadsheet read a cell as a formula (OWASP's CSV injection rule): = + - @, and a tab or carriage
# return before them, which some spreadsheets skip.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A ledger value as a CSV cell: numbers as they are (a refund's -5 stays a number); text that a spreadsheet
    would take for a formula (a note such as =HYPERLINK(...)) behind a single quote, which shows it as text."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def ledger_csv(entries: list[LedgerEntry]) -> str:
    buffer = io.StringIO()
    # RFC 4180's CRLF: with it the writer quotes a cell holding a CR or LF, which csv.reader then reads back whole
    # (after a bare LF, a lone CR in a cell went out unquoted and broke the row)
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for entry in entries:
        writer.writerow({name: csv_cell(value) for name, value in entry.model_dump(mode="json").items()})
    return buffer.getvalue()


def period(days: int | None = None, since: str | None = None, until: str | None = None) -> tuple[str, str]:
    """The [since, until) period a report covers, as ISO timestamps: by default the last 30 days."""
    now = datetime.now(UTC)
    end = until or (now + timedelta(seconds=1)).isoformat(timespec="milliseconds")
    start = since or (now - timedelta(days=30 if days is None else days)).isoformat(timespec="milliseconds")
    return start, end
