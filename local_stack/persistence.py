"""The local stack's moto state kept in a folder between runs: saved after changes, restored on start.

moto keeps everything in memory and has no way to save it (its recorder replays requests, which cannot bring
back what depended on the time or on moto's random ids), so its backends are pickled: one file per service
(``moto/dynamodb.pickle``, ``moto/s3.pickle`` ...), so a ledger entry does not rewrite every uploaded object.

A save pickles under the lock that serialises moto's requests (a consistent snapshot: no request is half done)
and writes outside it, to a temporary file renamed over the last one, so a crash leaves the previous save whole.
Saves are debounced: a burst of changes is saved once, at most ``debounce`` seconds after the first of them, and
saves never take more than a small share of the lock's time however large the state grows.
"""

from __future__ import annotations

import _thread
import copyreg
import io
import logging
import os
import pickle
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import moto
from moto.backends import get_backend
from moto.core.base_backend import BackendDict
from moto.s3.utils import _VersionedKeyStore

logger = logging.getLogger(__name__)

SNAPSHOT_FOLDER = "moto"
LOCK_FILE = "lock"
# a save holds moto's lock at most this share of the time: the interval grows with what a save costs
LOCK_SHARE = 0.05

# requests that change nothing (by X-Amz-Target's operation): anything else marks its service changed
_READ_ONLY_PREFIXES = ("Get", "List", "Describe", "Query", "Scan", "BatchGet", "TransactGet", "ReceiveMessage")


def _new_lock(_: object) -> tuple[Callable[[], object], tuple[()]]:
    return threading.Lock, ()


def _new_rlock(_: object) -> tuple[Callable[[], object], tuple[()]]:
    return threading.RLock, ()


def _new_condition(_: object) -> tuple[Callable[[], object], tuple[()]]:
    return threading.Condition, ()


def _versioned_key_store(versions: dict[str, list[Any]]) -> _VersionedKeyStore:
    store = _VersionedKeyStore()
    for name, key_versions in versions.items():
        store.setlist(name, key_versions)
    return store


def _every_version(store: _VersionedKeyStore) -> tuple[Callable[..., object], tuple[dict[str, list[Any]]]]:
    # pickled as a dict, a bucket's key store would keep the latest version of each object only (its items())
    return _versioned_key_store, ({name: store.getlist(name) for name in dict.keys(store)},)


# moto's SQS queues hold a threading.Condition: a lock cannot be pickled, and a restored one starts unlocked
_DISPATCH_TABLE: dict[type, Any] = {
    **copyreg.dispatch_table,
    _thread.LockType: _new_lock,
    _thread.RLock: _new_rlock,
    threading.Condition: _new_condition,
    _VersionedKeyStore: _every_version,
}
# what a BackendDict is made with; anything else it holds is state (S3's: which account owns each bucket name)
_BACKEND_DICT_MAKING = frozenset({"backend", "service_name", "_use_boto3_regions", "_additional_regions", "_id"})


class DataDirInUse(RuntimeError):
    """Another local stack holds the data folder."""


class IncompatibleSnapshot(RuntimeError):
    """A snapshot another moto (or Python) wrote, or one that cannot be read."""


def changed_service(environ: dict[str, Any]) -> str | None:
    """The moto service a request may have changed ('*': cannot tell which), or None for a read."""
    method = environ.get("REQUEST_METHOD", "GET")
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if method in ("GET", "HEAD", "OPTIONS"):
        return None
    if target and target.rsplit(".", 1)[-1].startswith(_READ_ONLY_PREFIXES):
        return None
    # a SigV4 signature names its service: "AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request, ..."
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    try:
        return authorization.split(",")[0].split()[1].split("/")[3].lower()
    except IndexError:
        return "*"  # unsigned (a browser's presigned upload): which service it reached is not worth parsing


class MotoState:
    """moto's backends saved under ``directory``/moto and restored from it; ``lock`` serialises moto's requests."""

    def __init__(self, directory: Path, debounce: float = 1.0) -> None:
        self.directory = directory
        self.snapshots = directory / SNAPSHOT_FOLDER
        self.debounce = debounce
        self.lock = threading.Lock()
        self.last_save: dict[str, float] = {}  # what the last save cost: seconds under the lock, in all
        self._changed: set[str] = set()
        self._write_lock = threading.Lock()  # one save writes at a time, so an older one never lands last
        self._pending = threading.Event()
        self._closing = threading.Event()
        self._saver: threading.Thread | None = None
        self._lock_file: IO[str] | None = None

    def claim(self) -> None:
        """Hold the folder for this process: two stacks saving into one folder would overwrite each other."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = (self.directory / LOCK_FILE).open("a+")
        try:
            import fcntl  # POSIX only: elsewhere the folder is not guarded
        except ImportError:
            return
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise DataDirInUse(
                f"another local stack is using {self.directory}: stop it, or give this one another folder "
                "(--data-dir or INFERY_LOCAL_DATA_DIR) or none (--ephemeral)"
            ) from None

    def empty(self) -> None:
        """Delete the saved state (--fresh); nothing else in the folder, which may be anyone's."""
        shutil.rmtree(self.snapshots, ignore_errors=True)

    def restore(self) -> list[str]:
        """Put every saved service back into moto; the services restored (none on a first run)."""
        restored = []
        for path in sorted(self.snapshots.glob("*.pickle")):
            try:
                with path.open("rb") as file:
                    snapshot = pickle.load(file)  # noqa: S301 - our own file, written by save()
            except Exception as exc:  # noqa: BLE001 - whatever unpickling raises, the answer is the same
                raise IncompatibleSnapshot(f"{path} cannot be read ({exc!r})") from exc
            if snapshot.get("moto") != moto.__version__:
                raise IncompatibleSnapshot(
                    f"{path} was saved by moto {snapshot.get('moto')}, this is moto {moto.__version__}"
                )
            backends: BackendDict[Any] = get_backend(snapshot["service"])
            for account_id, regions in snapshot["backends"].items():
                for region, backend in regions.items():
                    backends[account_id][region] = backend
            vars(backends).update(snapshot["attributes"])
            restored.append(snapshot["service"])
        return restored

    def request_served(self, environ: dict[str, Any]) -> None:
        """Called under ``lock`` after each request: note what it changed and schedule a save."""
        service = changed_service(environ)
        if service is not None:
            self._changed.add(service)
            self._pending.set()

    def start(self) -> None:
        self._saver = threading.Thread(target=self._save_after_changes, name="moto-state-saver", daemon=True)
        self._saver.start()

    def close(self) -> None:
        """Stop saving in the background and save what is left (called once no request can come in)."""
        self._closing.set()
        self._pending.set()
        if self._saver is not None:
            self._saver.join()
        self.save()
        if self._lock_file is not None:
            self._lock_file.close()

    def save(self) -> None:
        """Save every service changed since the last save: pickled under ``lock``, written outside it."""
        with self._write_lock:
            started = time.perf_counter()
            with self.lock:
                changed, self._changed = self._changed, set()
                self._pending.clear()
                pickled = self._pickle(changed)
            under_lock = time.perf_counter() - started
            try:
                for service, data in pickled.items():
                    _write_atomically(self.snapshots / f"{service}.pickle", data)
            except BaseException:
                with self.lock:  # saved next time (a full disk may have room again)
                    self._changed |= changed
                    self._pending.set()
                raise
            if pickled:
                self.last_save = {"under_lock": under_lock, "in_all": time.perf_counter() - started}
                # benchmarks.local_state_save reads these lines (moto_server --verbose shows them)
                logger.info(
                    "saved %s: %d bytes in %.1f ms, %.1f ms of it under the lock",
                    ",".join(sorted(pickled)),
                    sum(len(data) for data in pickled.values()),
                    self.last_save["in_all"] * 1000,
                    under_lock * 1000,
                )

    def _pickle(self, changed: set[str]) -> dict[str, bytes]:
        pickled = {}
        for backends in list(BackendDict._instances):  # type: ignore[misc]  # every moto service this process has used
            service = backends.service_name
            if service not in changed and "*" not in changed:
                continue
            snapshot = {
                "moto": moto.__version__,
                "service": service,
                "backends": {account_id: dict(regions) for account_id, regions in backends.items()},
                "attributes": {
                    name: value for name, value in vars(backends).items() if name not in _BACKEND_DICT_MAKING
                },
            }
            buffer = io.BytesIO()
            pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
            pickler.dispatch_table = _DISPATCH_TABLE
            pickler.dump(snapshot)
            pickled[service] = buffer.getvalue()
        return pickled

    def _save_after_changes(self) -> None:
        while not self._closing.is_set():
            self._pending.wait()
            # gather a burst of changes into one save; a costly save waits longer, to keep its share of the lock
            interval = max(self.debounce, self.last_save.get("under_lock", 0.0) / LOCK_SHARE)
            if self._closing.wait(interval):
                return  # close() saves what is left
            try:
                self.save()
            except Exception:
                logger.exception("saving the local stack's state to %s failed", self.snapshots)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as file:
        try:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        except BaseException:
            os.unlink(file.name)
            raise
    os.replace(file.name, path)
