"""The operator's commands: keys, credits and usage, straight against the stack's DynamoDB tables.

The same code runs against AWS (the usual AWS profile/region settings; table names from the
CloudFormation stack's outputs) and against the local stack (`--local`: the state file that
`make serve` writes holds its endpoints and table names).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError, NoRegionError
from infery.domain.clock import parse_timestamp
from infery.domain.errors import InferyError
from infery.domain.keys import ApiKeyItem
from infery.domain.ledger import LedgerKind, check_note
from infery.settings import AccountTables
from infery.usecases.usage import ledger_csv, period, usage_report
from infery.wiring import AccountsWiring, stack_outputs

from .local_state import local_state_file

_TABLE_OUTPUTS = {
    "KEYS_TABLE_NAME": "KeysTableName",
    "LEDGER_TABLE_NAME": "LedgerTableName",
    "RESERVATIONS_TABLE_NAME": "ReservationsTableName",
}


class OperatorError(Exception):
    """A mistake the operator can fix; printed without a traceback."""


def _table_names_from_stack(stack_name: str) -> dict[str, str]:
    try:
        outputs = stack_outputs(stack_name)
    except NoRegionError as exc:  # the stack's name is known (the default or --stack): its region is what is missing
        raise OperatorError(
            f"cannot read the CloudFormation stack '{stack_name}': no AWS region is set. Pass --region REGION, "
            "set AWS_DEFAULT_REGION, or set a region in your AWS profile; or --local for the local stack."
        ) from exc
    except Exception as exc:  # no credentials, no such stack: say which, not a traceback
        raise OperatorError(
            f"cannot read the CloudFormation stack '{stack_name}': {str(exc).rstrip('.')}. Pass --stack NAME "
            "and --region REGION for another stack, or --local for the local stack."
        ) from exc
    missing = [output for output in _TABLE_OUTPUTS.values() if output not in outputs]
    if missing:
        raise OperatorError(f"the stack '{stack_name}' has no outputs {', '.join(missing)}: is it an infery stack?")
    return {variable: outputs[output] for variable, output in _TABLE_OUTPUTS.items()}


def connect(local: bool, stack_name: str) -> AccountsWiring:
    """The keys and credits of the local stack, of the stack named, or of the tables the environment names."""
    if local:
        state_file = local_state_file()
        if not state_file.exists():
            raise OperatorError(f"no local stack is running ({state_file} is missing): start it with `make serve`")
        os.environ.update(json.loads(state_file.read_text())["environment"])
        names = {variable: os.environ[variable] for variable in _TABLE_OUTPUTS}
    elif all(variable in os.environ for variable in _TABLE_OUTPUTS):
        names = {variable: os.environ[variable] for variable in _TABLE_OUTPUTS}
    else:
        names = _table_names_from_stack(stack_name)
    return AccountsWiring(
        AccountTables(
            keys_table_name=names["KEYS_TABLE_NAME"],
            ledger_table_name=names["LEDGER_TABLE_NAME"],
            reservations_table_name=names["RESERVATIONS_TABLE_NAME"],
        )
    )


def _iso_time(value: str | None, what: str) -> str | None:
    """An ISO date or time (UTC unless it says otherwise) as the ISO timestamp the tables store."""
    if value is None:
        return None
    try:
        return parse_timestamp(value).isoformat(timespec="milliseconds")
    except ValueError as exc:
        raise OperatorError(f"{what} takes an ISO date such as 2026-11-01, not {value!r}") from exc


def _expiry(value: str | None) -> str | None:
    """'30d' (from now) or an ISO date/time."""
    if value is not None and value.endswith("d") and value[:-1].isdigit():
        return (datetime.now(UTC) + timedelta(days=int(value[:-1]))).isoformat(timespec="milliseconds")
    expires_at = _iso_time(value, "--expires ('30d' or a date)")
    if expires_at is not None and parse_timestamp(expires_at) <= datetime.now(UTC):
        raise OperatorError(f"--expires {value} is in the past: the key would be refused from its first request")
    return expires_at


def _print_key(key: ApiKeyItem, balance: int | None = None) -> None:
    view = key.public_view()
    if balance is not None:
        view["credits"] = balance
    for name, value in view.items():
        if value is not None:
            print(f"{name:>22}: {value}")


def keys_create(backend: AccountsWiring, args: argparse.Namespace) -> None:
    models = [model.strip() for model in args.models.split(",") if model.strip()] if args.models else None
    try:
        api_key, key = backend.keys.create(
            args.name,
            0,
            args.key,
            expires_at=_expiry(args.expires),
            rate_limit_per_minute=args.rate_limit,
            allowed_models=models,
            credit_shards=args.shards,
        )
    except ValueError as exc:
        raise OperatorError(str(exc)) from exc
    balance = 0
    if args.credits:
        balance = backend.credits.top_up(key, args.credits, request_id=f"topup-{uuid.uuid4()}", note="initial credits")
    shards = f" in {key.credit_shards} shards" if key.credit_shards > 1 else ""
    print(f"created {key.key_id} ({key.name}) with {balance} credits{shards}")
    print(f"\n    {api_key}\n")
    print("This is the only time the key is shown: only its hash is stored.", file=sys.stderr)


def keys_list(backend: AccountsWiring, args: argparse.Namespace) -> None:
    keys = backend.keys.list()
    if args.json:
        print(json.dumps([key.public_view() for key in keys], indent=2))
        return
    print(f"{'KEY ID':<22} {'NAME':<20} {'STATUS':<8} {'CREDITS':>10}  CREATED")
    for key in keys:
        print(f"{key.key_id:<22} {key.name[:20]:<20} {key.status:<8} {key.credits:>10}  {key.created_at}")


def keys_show(backend: AccountsWiring, args: argparse.Namespace) -> None:
    key = backend.keys.get(args.key_id)
    # the key's row holds its first shard's credits: show the key's total
    _print_key(key, backend.credits.balance(key.key_hash) if key.credit_shards > 1 else None)


def keys_set(backend: AccountsWiring, args: argparse.Namespace) -> None:
    key = backend.keys.get(args.key_id)
    try:
        key = backend.credits.set_shards(key, args.shards)
    except ValueError as exc:
        raise OperatorError(f"--shards: {exc}") from exc
    print(
        f"{key.key_id} ({key.name}) keeps its {backend.credits.balance(key.key_hash)} credits in "
        f"{key.credit_shards} shard{'s' if key.credit_shards != 1 else ''} from now on"
    )


def keys_revoke(backend: AccountsWiring, args: argparse.Namespace) -> None:
    key = backend.keys.revoke(args.key_id)
    print(f"revoked {key.key_id} ({key.name}) at {key.revoked_at}; it is refused from its next request on")


def credits_add(backend: AccountsWiring, args: argparse.Namespace) -> None:
    if args.credits <= 0:
        raise OperatorError("credits to add must be a positive number")
    try:
        check_note(args.note)
    except ValueError as exc:
        raise OperatorError(f"--note: {exc}") from exc
    key = backend.keys.get(args.key_id)
    request_id = args.request_id or f"topup-{uuid.uuid4()}"
    if backend.credits.has_entry(key.key_id, request_id, LedgerKind.TOPUP):
        print(
            f"nothing added: the top-up {request_id} was made before; {key.key_id} ({key.name}) has balance "
            f"{backend.credits.balance(key.key_hash)}"
        )
        return
    balance = backend.credits.top_up(key, args.credits, request_id=request_id, note=args.note)
    print(f"added {args.credits} credits to {key.key_id} ({key.name}): balance {balance}")


def usage(backend: AccountsWiring, args: argparse.Namespace) -> None:
    key = backend.keys.get(args.key_id)
    since, until = period(
        days=args.days, since=_iso_time(args.since, "--since"), until=_iso_time(args.until, "--until")
    )
    if parse_timestamp(since) >= parse_timestamp(until):
        # --until is exclusive, so a one-day period ends on the next day: --since 2026-11-01 --until 2026-12-01 is
        # November, and the months of a year add up without an entry counted twice
        raise OperatorError(
            f"the period from {since} up to {until} is empty: --until is exclusive (entries before "
            "it are counted, not at it); to include a whole day, pass the next day as --until"
        )
    entries = backend.credits.ledger(key.key_id, since=since, until=until, parts=key.ledger_parts)
    if args.csv:
        text = ledger_csv(entries)
        if args.csv == "-":
            sys.stdout.write(text)
        else:
            Path(args.csv).write_text(text, newline="")  # the rows' CRLF as written, on every platform
            print(
                f"wrote {len(entries)} ledger entries of {key.key_id} from {since} up to (not including) "
                f"{until} to {args.csv}"
            )
        return
    report = usage_report(entries, balance=backend.credits.balance(key.key_hash), since=since, until=until)
    print(json.dumps({"key_id": key.key_id, "name": key.name, **report}, indent=2))


def add_operator_commands(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser("keys", help="create, list, show and revoke API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--name", required=True, help="who the key is for")
    create.add_argument("--credits", type=int, default=0, help="credits to start with (a ledgered top-up)")
    create.add_argument("--rate-limit", type=int, help="requests per minute, at least 1 (default: the deployment's)")
    create.add_argument("--models", help="comma-separated models the key may use (default: all)")
    create.add_argument("--expires", help="'30d' from now, or an ISO date")
    create.add_argument(
        "--key",
        help="use this inf_ key instead of generating one (imports): it must be a key "
        "infery generated, with its checksum",
    )
    create.add_argument(
        "--shards",
        type=int,
        default=1,
        help="keep the key's credits in N items, for a key sending more than a few hundred requests a second "
        "(default 1: one exact balance)",
    )
    create.set_defaults(run=keys_create)
    set_command = keys.add_parser("set", help="change a key's settings")
    set_command.add_argument("key_id", help="the key's id, key_...")
    set_command.add_argument("--shards", type=int, required=True, help="keep the key's credits in N items")
    set_command.set_defaults(run=keys_set)
    listing = keys.add_parser("list", help="every key, without secrets")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=keys_list)
    for name, run, text in (("show", keys_show, "one key"), ("revoke", keys_revoke, "refuse the key from now on")):
        command = keys.add_parser(name, help=text)
        command.add_argument("key_id", help="the key's id, key_...")
        command.set_defaults(run=run)

    credit_commands = commands.add_parser("credits", help="top up a key").add_subparsers(
        dest="credits_command", required=True
    )
    add = credit_commands.add_parser("add", help="add credits to a key (a ledgered top-up)")
    add.add_argument("key_id")
    add.add_argument("credits", type=int)
    add.add_argument("--note", help="kept on the ledger entry, e.g. an invoice number")
    add.add_argument("--request-id", help="makes a retried top-up count once (default: a new id)")
    add.set_defaults(run=credits_add)

    report = commands.add_parser("usage", help="a key's usage for a period; --csv exports its ledger")
    report.add_argument("key_id")
    report.add_argument("--days", type=int, help="the last N days (default 30)")
    report.add_argument("--since", help="ISO date or time (UTC unless it says otherwise), inclusive")
    report.add_argument(
        "--until", help="ISO date or time, exclusive: --since 2026-11-01 --until 2026-12-01 is November (default: now)"
    )
    report.add_argument("--csv", metavar="FILE", help="write the ledger entries as CSV to FILE ('-' for stdout)")
    report.set_defaults(run=usage)


def run_operator_command(args: argparse.Namespace) -> None:
    if args.region and not args.local:
        os.environ["AWS_DEFAULT_REGION"] = args.region  # what boto3 reads when it builds each client
    try:
        args.run(connect(args.local, args.stack), args)
    except InferyError as exc:
        raise OperatorError(exc.message) from exc
    except (BotoCoreError, ClientError) as exc:  # no region or credentials, a missing table: say it plainly
        raise OperatorError(f"AWS said: {exc}") from exc
