"""What keeping the local stack's data costs its requests: moto with --data-dir against moto without, in one run.

    PYTHONPATH=layers/common/python .venv/bin/python -m benchmarks.local_state_save [--entries 3000] [--requests 200]

Two local moto servers (local_stack.moto_server, each in a process of its own, tables made from template.yaml):
one keeps its state in a temporary folder (what `make serve` does), the other keeps nothing (--ephemeral). Both
get the same key and a ledger of --entries top-ups first. Then credit changes (top-ups: a TransactWriteItems
each, the request every charge makes) are timed one after another, in rounds that take turns between the two
servers, so a busy moment of the machine hits both alike. Every one of them changes DynamoDB, so the kept server
saves all along (debounced: at most one save a second, and less often when a save costs more).

Figures: each server's median and 95th percentile latency, and the kept one's over the other's; the saves the
kept server made while timed (how many, their size, and how long each held moto's lock, from its log).
Target: the kept server's median at most 1.10x the other's. Exit status 0 only when it is met.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3

from local_stack.processes import free_port
from local_stack.template import LocalTemplate, create_tables, load_template

ROOT = Path(__file__).resolve().parents[1]
MEDIAN_TARGET = 1.10
SAVE_LINE = re.compile(r"saved (\S+): (\d+) bytes in ([\d.]+) ms, ([\d.]+) ms of it under the lock")


class Server:
    def __init__(self, name: str, data_dir: Path | None) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log: list[str] = []
        command = [sys.executable, "-m", "local_stack.moto_server", "-p", self.url.rsplit(":", 1)[1], "--verbose"]
        self.process = subprocess.Popen(
            command + (["--data-dir", str(data_dir)] if data_dir else []),
            cwd=ROOT,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read_log, daemon=True).start()
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2):  # noqa: S310 - loopback
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise SystemExit(f"the {name} moto server did not start") from None
                time.sleep(0.1)

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if "saved" in line:
                self.log.append(line)

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",  # noqa: S106
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def _accounts(server: Server, local: LocalTemplate) -> Any:
    from infery.adapters.credit_store import CreditStore
    from infery.adapters.key_store import KeyStore

    environment = local.function_environment("TranscribeFunction")
    dynamodb = server.client("dynamodb")
    create_tables(local, dynamodb)
    keys = KeyStore(dynamodb, environment["KEYS_TABLE_NAME"])
    store = CreditStore(
        dynamodb,
        environment["KEYS_TABLE_NAME"],
        environment["LEDGER_TABLE_NAME"],
        environment["RESERVATIONS_TABLE_NAME"],
    )
    _, key = keys.create("benchmark", 0)
    return store, key


def _timed_top_ups(store: Any, key: Any, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        store.top_up(key, 1, request_id=str(uuid.uuid4()), note="benchmark")
        latencies.append(time.perf_counter() - started)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=3000, help="ledger entries made before timing")
    parser.add_argument("--requests", type=int, default=200, help="credit changes timed per server")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    local = LocalTemplate(load_template(), parameter_overrides={"ModelName": "whisper-tiny.en"})
    with tempfile.TemporaryDirectory(prefix="infery-bench-state-") as folder:
        servers = [Server("ephemeral", None), Server("kept", Path(folder))]
        try:
            accounts = [_accounts(server, local) for server in servers]
            fills = [threading.Thread(target=_timed_top_ups, args=(*account, args.entries)) for account in accounts]
            for fill in fills:
                fill.start()
            for fill in fills:
                fill.join()
            time.sleep(2)  # the kept server's save of the fill, before timing
            servers[1].log.clear()
            latencies: dict[str, list[float]] = {server.name: [] for server in servers}
            per_round = max(1, args.requests // args.rounds)
            for _ in range(args.rounds):
                for server, account in zip(servers, accounts, strict=True):
                    latencies[server.name] += _timed_top_ups(*account, per_round)
            saves = [SAVE_LINE.search(line) for line in servers[1].log]
        finally:
            for server in servers:
                server.stop()
        snapshot_bytes = sum(path.stat().st_size for path in Path(folder).rglob("*.pickle"))

    print(f"ledger: {args.entries} entries before timing; {per_round * args.rounds} credit changes timed per server")
    medians = {}
    for name, values in latencies.items():
        medians[name] = statistics.median(values)
        p95 = statistics.quantiles(values, n=20)[-1]
        print(f"  {name:<10} median {medians[name] * 1000:6.2f} ms   p95 {p95 * 1000:6.2f} ms")
    held = [float(match.group(4)) for match in saves if match]
    if held:
        print(
            f"  saves while timed: {len(held)}, {snapshot_bytes / 1e6:.2f} MB on disk at the end, under moto's "
            f"lock median {statistics.median(held):.1f} ms, max {max(held):.1f} ms"
        )
    ratio = medians["kept"] / medians["ephemeral"]
    met = ratio <= MEDIAN_TARGET
    print(f"kept / ephemeral median: {ratio:.2f}x   target <= {MEDIAN_TARGET:.2f}x: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
