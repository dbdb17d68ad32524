"""moto's server, one request at a time, with transactions that cost what they touch.

moto's own server handles requests on parallel threads, and its DynamoDB backend takes no lock: two
TransactWriteItems conditioned on the same balance can both pass their check and both write (seen in
tests/integration: 11 charges accepted against a balance of 10). DynamoDB itself never does that, so
the local stack serialises moto's requests to keep DynamoDB's atomicity, which the credit code relies on.

moto backs up every table a TransactWriteItems touches, whole (a deep copy), to roll a failed one back: with
the ledger in it, every credit change cost time in proportion to the ledger's size (measured: 5 ms on an empty
ledger, 56 ms at 2,000 entries, 216 ms at 8,000), so a local stack got slower with every request it served, one
request at a time. Here a transaction backs up the items it names instead, and a failed one puts them back.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import signal
import threading
import time
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import Item
from moto.dynamodb.models.table import Table
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from .persistence import DataDirInUse, IncompatibleSnapshot, MotoState
from .s3_post_policy import PostPolicyApp

_TouchedItem = tuple[str, dict[str, Any], Item | None]


def _items_named(backend: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> list[_TouchedItem]:
    """Each item a transaction names (table, key) with a copy of it as it is now (None: it does not exist)."""
    touched: list[_TouchedItem] = []
    for transact_item in transact_items:
        operation, request = next(iter(transact_item.items()))
        table = backend.get_table(request["TableName"])
        if operation == "Put":
            key_names = [table.hash_key_attr, *([table.range_key_attr] if table.range_key_attr else [])]
            key = {name: request["Item"][name] for name in key_names}
        else:
            key = request["Key"]
        touched.append((request["TableName"], key, copy.deepcopy(backend.get_item(request["TableName"], key))))
    return touched


def _put_back(backend: DynamoDBBackend, touched: list[_TouchedItem]) -> None:
    for table_name, key, before in touched:
        if before is None:
            table = backend.get_table(table_name)
            table.delete_item(*backend.get_keys_value(table, key))
        else:
            backend.get_table(table_name).put_item(before.to_json()["Attributes"])


def _deepcopy_but_tables(value: Any, memo: dict[int, Any] | None = None) -> Any:
    return value if isinstance(value, Table) else copy.deepcopy(value, memo)


_whole_table_transaction = DynamoDBBackend.transact_write_items


def _transaction_backing_up_its_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    try:
        touched = _items_named(self, transact_items)
    except Exception:  # noqa: BLE001 - a request moto refuses: let moto say why, with its own backup
        touched = None
    if touched is None:
        dynamodb_models.copy = copy
        try:
            return _whole_table_transaction(self, transact_items)
        finally:
            dynamodb_models.copy = _COPY_WITHOUT_TABLES
    try:
        return _whole_table_transaction(self, transact_items)
    except Exception:
        _put_back(self, touched)  # moto's own rollback put back the same table objects: a no-op
        raise


# what moto's models module calls ``copy``: the copy module, but for tables (Any: it stands in for a module)
_COPY_WITHOUT_TABLES: Any = types.SimpleNamespace(deepcopy=_deepcopy_but_tables)


def back_up_only_the_items_a_transaction_names() -> None:
    """Make moto's TransactWriteItems back up the items it names, not whole tables (requests one at a time only)."""
    dynamodb_models.copy = _COPY_WITHOUT_TABLES
    DynamoDBBackend.transact_write_items = _transaction_backing_up_its_items  # type: ignore[method-assign]


class SerializedApp:
    def __init__(self, app: Callable[..., Iterable[bytes]], state: MotoState | None = None) -> None:
        self._app = app
        self._state = state
        # a saved state is pickled under the same lock, so a snapshot never holds half a request
        self._lock = state.lock if state is not None else threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            # the body is read inside the lock, so the request is complete before the next one starts
            body = list(self._app(environ, start_response))
            if self._state is not None:
                self._state.request_served(environ)
            return body


def make_moto_server(host: str, port: int, state: MotoState | None = None) -> BaseWSGIServer:
    back_up_only_the_items_a_transaction_names()  # safe because SerializedApp runs one request at a time
    # S3 refuses what a presigned POST's policy does not allow; checked before the lock, a slow upload holds up nothing
    return make_server(
        host, port, PostPolicyApp(SerializedApp(DomainDispatcherApplication(create_backend_app), state)), threaded=True
    )


class BackgroundMotoServer:
    """For tests: moto on a daemon thread, like moto's ThreadedMotoServer but serialised."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = make_moto_server(host, port)
        self.url = f"http://{host}:{self._server.server_port}"

    def start(self) -> None:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _raise_keyboard_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _exit_with_parent(parent: int) -> None:
    # a local stack killed outright (SIGKILL) cannot stop its moto: this one saves and exits on its own
    while os.getppid() == parent:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    parser.add_argument("--verbose", action="store_true", help="log every request (werkzeug's request lines)")
    parser.add_argument(
        "--data-dir", type=Path, help="keep moto's state in this folder: restored now, saved after changes"
    )
    parser.add_argument("--fresh", action="store_true", help="delete the state saved in --data-dir first")
    parser.add_argument(
        "--stopped-by-parent",
        action="store_true",
        help="ignore Ctrl-C (the parent stops this server after its other parts, with SIGTERM) and exit with "
        "the parent",
    )
    arguments = parser.parse_args()
    # the local stack's pollers call SQS several times a second: one line per call hides everything else
    logging.getLogger("werkzeug").setLevel(logging.INFO if arguments.verbose else logging.WARNING)
    logging.basicConfig(format="moto server: %(message)s")
    logging.getLogger("local_stack.persistence").setLevel(logging.INFO if arguments.verbose else logging.WARNING)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    if arguments.stopped_by_parent:
        # Ctrl-C reaches the whole process group at once; the stack's other parts may still write while they stop
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    state = None
    if arguments.data_dir is not None:
        state = MotoState(arguments.data_dir)
        try:
            state.claim()
            if arguments.fresh:
                state.empty()
            state.restore()
        except DataDirInUse as exc:
            raise SystemExit(f"moto server: {exc}") from None
        except IncompatibleSnapshot as exc:
            raise SystemExit(
                f"moto server: {exc}. Start with --fresh to start empty (what the folder holds is lost), "
                "or with the moto it was saved by"
            ) from None
    server = make_moto_server(arguments.host, arguments.port, state)
    if state is not None:
        state.start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if state is not None:
            state.close()  # waits for a request in flight (it holds the lock), then saves what changed


if __name__ == "__main__":
    main()
