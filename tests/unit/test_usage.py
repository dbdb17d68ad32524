"""usage: the usage report, the ledger CSV and the report period, all derived from ledger entries alone."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from infery.domain.ledger import LedgerEntry, LedgerKind
from infery.usecases.usage import CSV_COLUMNS, ledger_csv, period, usage_report

from tests.support.builders import ledger_entry

KEY_ID = "key_0123456789abcdef"
TINY, LARGE = "whisper-tiny.en", "whisper-large-v3"


class Ledger:
    """Builds a key's ledger as CreditStore writes it: each entry's balance_after follows from the one before."""

    def __init__(self) -> None:
        self.entries: list[LedgerEntry] = []
        self.balance = 0

    def _add(self, kind: LedgerKind, request_id: str, credits: int, at: str, **fields) -> None:
        self.balance += credits
        assert self.balance >= 0, "a ledger never goes below zero"
        self.entries.append(ledger_entry(KEY_ID, kind, request_id, credits, self.balance, at, **fields))

    def topup(self, request_id: str, credits: int, at: str, note: str | None = None) -> Ledger:
        self._add(LedgerKind.TOPUP, request_id, credits, at, note=note)
        return self

    def reserve(self, request_id: str, credits: int, at: str, model: str = TINY) -> Ledger:
        self._add(LedgerKind.RESERVE, request_id, -credits, at, model=model)
        return self

    def settle(self, request_id: str, reserved: int, cost: int, seconds: float, at: str, model: str = TINY) -> Ledger:
        self._add(
            LedgerKind.SETTLE, request_id, reserved - cost, at, model=model, audio_seconds=seconds, billed_credits=cost
        )
        return self

    def refund(self, request_id: str, reserved: int, at: str, model: str = TINY) -> Ledger:
        self._add(LedgerKind.REFUND, request_id, reserved, at, model=model, note="the model failed")
        return self

    def release(self, request_id: str, reserved: int, at: str, model: str = TINY) -> Ledger:
        self._add(LedgerKind.RELEASE, request_id, reserved, at, model=model, note="released")
        return self

    def request(self, request_id: str, reserved: int, cost: int, seconds: float, at: str, model: str = TINY) -> Ledger:
        """A request reserved and settled a second later."""
        settled_at = at[:18] + str(int(at[18]) + 1) + at[19:]
        return self.reserve(request_id, reserved, at, model).settle(
            request_id, reserved, cost, seconds, settled_at, model
        )


def t(day: int, hour: int = 10, minute: int = 0, second: int = 0) -> str:
    return f"2026-11-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.000+00:00"


def report(ledger: Ledger, **options) -> dict:
    return usage_report(ledger.entries, balance=ledger.balance, since=t(1, 0), until=t(30, 0), **options)


@pytest.fixture
def month() -> Ledger:
    """A month of one key: a top-up, three settled requests over two days and two models, a refund, a release,
    and a request still running."""
    return (
        Ledger()
        .topup("topup-1", 100, t(1, 9), note="invoice 17")
        .request("req-a", reserved=5, cost=3, seconds=12.5, at=t(2, 10))
        .request("req-b", reserved=3, cost=3, seconds=11.0, at=t(2, 11), model=LARGE)
        .reserve("req-c", 4, t(3, 8))
        .refund("req-c", 4, t(3, 8, 0, 30))
        .request("req-d", reserved=2, cost=4, seconds=19.2, at=t(3, 9))  # settling took more than reserved
        .reserve("req-e", 6, t(3, 10))
        .release("req-e", 6, t(3, 11))
        .reserve("req-f", 7, t(4, 12))
    )


def test_given_a_month_then_the_totals_count_only_the_settled_requests(month):
    usage = report(month)
    assert usage["object"] == "usage"
    assert usage["total"] == {"requests": 3, "audio_seconds": pytest.approx(12.5 + 11.0 + 19.2), "credits": 3 + 3 + 4}
    assert usage["credits_added"] == 100
    # what was spent, what is held by the running request, and what is left add up to what was added
    assert usage["balance"] == 100 - 10 - 7 == month.balance


def test_given_a_month_then_each_day_totals_the_requests_settled_on_it(month):
    assert report(month)["by_day"] == [
        {"date": "2026-11-02", "requests": 2, "audio_seconds": pytest.approx(23.5), "credits": 6},
        {"date": "2026-11-03", "requests": 1, "audio_seconds": pytest.approx(19.2), "credits": 4},
    ]  # the 3rd's refund and release and the 4th's running request cost nothing yet


def test_given_a_month_then_each_model_totals_its_own_requests(month):
    assert report(month)["by_model"] == [
        {"model": LARGE, "requests": 1, "audio_seconds": pytest.approx(11.0), "credits": 3},
        {"model": TINY, "requests": 2, "audio_seconds": pytest.approx(31.7), "credits": 7},
    ]


def test_given_a_month_then_recent_requests_are_newest_first_with_their_status_and_cost(month):
    recent = report(month)["recent_requests"]
    assert [(r["request_id"], r["status"], r["credits"]) for r in recent] == [
        ("req-f", "in_progress", 7),  # held, not yet spent
        ("req-e", "released", 0),
        ("req-d", "settled", 4),
        ("req-c", "refunded", 0),
        ("req-b", "settled", 3),
        ("req-a", "settled", 3),
    ]
    by_id = {r["request_id"]: r for r in recent}
    assert (by_id["req-a"]["model"], by_id["req-a"]["audio_seconds"], by_id["req-a"]["created_at"]) == (
        TINY,
        12.5,
        t(2, 10),
    )  # the request's time is its reservation's
    assert by_id["req-c"]["audio_seconds"] is None and by_id["req-b"]["model"] == LARGE
    assert "topup-1" not in by_id


def test_given_more_requests_than_asked_for_then_only_the_newest_are_listed(month):
    assert [r["request_id"] for r in report(month, recent=2)["recent_requests"]] == ["req-f", "req-e"]
    assert len(report(month, recent=100)["recent_requests"]) == 6


def test_given_zero_recent_requests_asked_for_then_none_are_listed(month):
    assert report(month, recent=0)["recent_requests"] == []


def test_given_the_period_then_the_report_names_it_and_the_balance_is_the_one_given(month):
    usage = usage_report(
        month.entries, balance=12345, since="2026-11-01T00:00:00.000+00:00", until="2026-12-01T00:00:00.000+00:00"
    )
    assert usage["period"] == {"start": "2026-11-01T00:00:00.000+00:00", "end": "2026-12-01T00:00:00.000+00:00"}
    assert usage["balance"] == 12345  # the live balance, not one recomputed from a period's entries


def test_given_an_empty_ledger_then_the_report_is_all_zeros():
    usage = usage_report([], balance=0, since=t(1), until=t(2))
    assert usage["total"] == {"requests": 0, "audio_seconds": 0.0, "credits": 0}
    assert (usage["by_day"], usage["by_model"], usage["recent_requests"], usage["credits_added"]) == ([], [], [], 0)


def test_given_only_top_ups_then_nothing_was_spent():
    ledger = Ledger().topup("topup-1", 50, t(1)).topup("topup-2", 25, t(5))
    usage = report(ledger)
    assert (usage["credits_added"], usage["total"]["credits"], usage["recent_requests"]) == (75, 0, [])


def test_given_a_request_settled_after_midnight_then_it_counts_on_the_day_it_started():
    ledger = (
        Ledger()
        .topup("topup-1", 10, t(1))
        .reserve("req-a", 3, t(5, 23, 59, 59))
        .settle("req-a", 3, 2, 9.0, t(6, 0, 0, 5))
    )
    assert [day["date"] for day in report(ledger)["by_day"]] == ["2026-11-05"]


def test_given_many_small_durations_then_the_seconds_total_does_not_drift():
    ledger = Ledger().topup("topup-1", 1000, t(1))
    for index in range(30):
        ledger.request(f"req-{index:02d}", reserved=1, cost=1, seconds=0.1, at=t(2, 0, index))
    assert report(ledger)["total"]["audio_seconds"] == 3.0  # 0.1 added 30 times is 3.0000000000000013 in floats


def test_given_a_request_reserved_before_the_period_and_closed_in_it_then_it_costs_what_it_was_billed():
    whole = (
        Ledger()
        .topup("topup-1", 100, t(1))
        .reserve("req-a", 10, t(4, 23, 59, 59))
        .settle("req-a", 10, 3, 14.0, t(5, 0, 0, 2))
        .reserve("req-b", 10, t(4, 23, 59, 58))
        .refund("req-b", 10, t(5, 0, 0, 1))
    )
    # Given the ledger of a period that starts at midnight on the 5th
    in_period = [entry for entry in whole.entries if entry.created_at >= t(5, 0)]
    usage = usage_report(in_period, balance=whole.balance, since=t(5, 0), until=t(6, 0))
    by_id = {request["request_id"]: request for request in usage["recent_requests"]}
    assert by_id["req-a"]["credits"] == 3  # what it was billed, not -7
    assert by_id["req-b"]["credits"] == 0  # a refund costs nothing, not -10
    assert usage["total"]["credits"] == 3


# the CSV export


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_given_a_ledger_then_the_csv_has_the_header_and_one_row_per_entry_in_order(month):
    text = ledger_csv(month.entries)
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    rows = _rows(text)
    assert len(rows) == len(month.entries) == 12  # a top-up, five closed requests of two, one open
    assert [(row["request_id"], row["kind"]) for row in rows] == [
        (entry.request_id, entry.kind.value) for entry in month.entries
    ]
    assert all(row["key_id"] == KEY_ID for row in rows)


def test_given_a_ledger_then_the_csvs_credits_add_up_to_the_balance_and_each_balance_after_follows(month):
    rows = _rows(ledger_csv(month.entries))
    assert sum(int(row["credits"]) for row in rows) == month.balance == 83
    running = 0
    for row in rows:
        running += int(row["credits"])
        assert int(row["balance_after"]) == running


def test_given_entries_then_each_csv_row_carries_their_fields_and_blanks_for_what_they_lack(month):
    rows = {(row["request_id"], row["kind"]): row for row in _rows(ledger_csv(month.entries))}
    settle = rows[("req-d", "settle")]
    assert (settle["model"], settle["audio_seconds"], settle["credits"], settle["billed_credits"]) == (
        TINY,
        "19.2",
        "-2",
        "4",
    )
    assert settle["note"] == "" and settle["unpaid_credits"] == ""
    topup = rows[("topup-1", "topup")]
    assert (topup["created_at"], topup["credits"], topup["note"], topup["model"]) == (t(1, 9), "100", "invoice 17", "")
    assert "entry_id" not in topup  # an internal key, not an invoice column


def test_given_a_note_with_commas_quotes_and_a_newline_then_the_csv_keeps_it_intact():
    note = 'paid by "ACME, Inc."\nPO 4711'
    text = ledger_csv(Ledger().topup("topup-1", 5, t(1), note=note).entries)
    (row,) = _rows(text)
    assert row["note"] == note and row["credits"] == "5"


def test_given_no_entries_then_the_csv_is_the_header_alone():
    assert ledger_csv([]) == ",".join(CSV_COLUMNS) + "\r\n"


# the period a report covers


def _parse(timestamp: str) -> datetime:
    moment = datetime.fromisoformat(timestamp)
    assert moment.utcoffset() == timedelta(0)  # reports are in UTC, so they sort with the ledger's timestamps
    return moment


def test_given_no_arguments_then_the_period_is_the_last_30_days_up_to_now():
    before = datetime.now(UTC)
    start, end = period()
    after = datetime.now(UTC)
    assert before - timedelta(days=30, milliseconds=1) <= _parse(start) <= after - timedelta(days=30)
    assert _parse(end) > after - timedelta(milliseconds=1)  # an entry written just now is in it
    assert _parse(end) <= after + timedelta(seconds=1)


def test_given_a_number_of_days_then_the_period_starts_that_many_days_back():
    before = datetime.now(UTC)
    start, _ = period(days=7)
    after = datetime.now(UTC)
    assert before - timedelta(days=7, milliseconds=1) <= _parse(start) <= after - timedelta(days=7)


def test_given_since_and_until_then_they_are_the_period_whatever_the_days():
    assert period(days=7, since="2026-11-01T00:00:00.000+00:00", until="2026-12-01T00:00:00.000+00:00") == (
        "2026-11-01T00:00:00.000+00:00",
        "2026-12-01T00:00:00.000+00:00",
    )


def test_given_only_since_then_the_period_runs_to_now():
    start, end = period(since="2026-01-01T00:00:00.000+00:00")
    assert start == "2026-01-01T00:00:00.000+00:00"
    assert abs(_parse(end) - datetime.now(UTC)) < timedelta(minutes=1)


def test_given_zero_days_then_the_period_is_not_silently_thirty_days():
    try:
        start, end = period(days=0)
    except ValueError:
        return  # refusing it is right too
    assert _parse(end) - _parse(start) < timedelta(days=1)


def test_given_a_month_then_each_day_is_split_by_model_too(month):
    split = report(month)["by_day_and_model"]
    assert [(row["date"], row["model"], row["requests"], row["credits"]) for row in split] == [
        ("2026-11-02", LARGE, 1, 3),
        ("2026-11-02", TINY, 1, 3),
        ("2026-11-03", TINY, 1, 4),
    ]
    for day in report(month)["by_day"]:  # the split adds up to each day's totals
        assert sum(row["credits"] for row in split if row["date"] == day["date"]) == day["credits"]
