"""What importing each function's handler module costs a cold start, against importing the libraries it needs.

    PYTHONPATH=layers/common/python .venv/bin/python -m benchmarks.cold_start [--runs 15]

A Lambda cold start imports the handler module (the template's ``Handler: app.lambda_handler``) before the first
request; that import is what this measures, as Lambda's init does it: a fresh process, ``python -c "import app"``
with the function's folder (its CodeUri) as the working directory and the layer's python/ folder on PYTHONPATH
(Lambda's /opt/python). Each process gets the environment the template gives the function (Globals plus its own
variables, resolved as the local stack resolves them), a region, dummy credentials, and an AWS endpoint at a local
port nothing listens on: a handler that called AWS while being imported would fail here, not reach anything.

Every figure is the wall time of a whole process (``time.perf_counter`` around ``subprocess.run``): the
interpreter's own start-up is in every one of them, as it is in a cold start. The commands take turns, run 1 of
each, then run 2 of each, and so on, so a busy moment of the machine hits all of them alike; one untimed run of
each first writes the bytecode caches. The rows:

- **libraries at import (floor)**: the libraries every request of the transcribe handler needs, imported in one
  process with nothing of ours (LIBRARIES_AT_IMPORT: boto3, pydantic, powertools' Logger, Metrics and REST
  resolver): the floor the handler's own import cannot go below;
- **boto3**: ``python -c "import boto3"``, what any function that talks to AWS pays;
- **libraries, all**: those and what only some requests need (LIBRARIES: powertools Idempotency, the multipart
  decoder), which the handler imports when a request first uses them;
- **transcribe**, **worker**, **reconciler**: each function's ``import app``.

Each row shows the median and the min-max over the runs, its median over the floor's median and over boto3's.
Target: the transcribe handler at most 1.15x the floor, what the handler adds to the libraries it cannot do
without (its own modules, the settings, the routes); the worker and the reconciler are held to the same line and
shown. The exit status is 0 only when the transcribe handler meets it (in both tables, with ``--build-dir``). To
see where an import's time goes:

    cd functions/transcribe && PYTHONPATH=../../layers/common/python python -X importtime -c "import app"

**The deployed artifact** (``--build-dir .aws-sam/build --build-python python3.12``, after ``make build-check``,
which also puts the boto3 the Lambda runtime provides into .aws-sam/lambda-runtime): the same imports from what
``make build`` built, on Python 3.12, with nothing written (``PYTHONDONTWRITEBYTECODE``: Lambda's /var/task and
/opt are read-only, so a cold start can only use the bytecode the artifact ships). Its floor imports the same
libraries from the built layer and the runtime's boto3; each function is imported **as built** (with the bytecode
``make build`` compiles) and **sources only** (the same tree without any ``__pycache__``: what ``sam build`` alone
ships, so every cold start compiles the layer and the function again).

With Lambda SnapStart (template.yaml) none of this is paid by a request on AWS: the import runs once, when a
version is published, and new instances are restored from its snapshot. It is what the local stack, a deployment
with SnapStart off, and the snapshot itself pay.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.stack import ROOT
from local_stack.template import LocalTemplate, load_template

TARGET = 1.15  # x the floor's median: the libraries every request needs (LIBRARIES_AT_IMPORT)
LAYER_PYTHON = ROOT / "layers" / "common" / "python"
FUNCTIONS = {
    "transcribe": "TranscribeFunction",
    "worker": "WorkerFunction",
    "reconciler": "ReconcilerFunction",
}
# What the transcribe handler's every request needs: boto3 (DynamoDB, to authenticate), pydantic (the settings and
# the key's model), powertools' logger, metrics and REST resolver.
# ``import pydantic`` alone would import next to nothing (pydantic imports its parts on first use): the names are
# imported, as the handler's modules import them.
LIBRARIES_AT_IMPORT = (
    "import boto3",
    "from pydantic import BaseModel, Field",
    "from aws_lambda_powertools import Logger, Metrics",
    "from aws_lambda_powertools.event_handler import APIGatewayRestResolver",
)
# ... and what only some requests need: an Idempotency-Key (powertools Idempotency), a multipart form. Audio
# probing (mutagen) is left out: the target names the libraries above.
LIBRARIES = (
    *LIBRARIES_AT_IMPORT,
    "from aws_lambda_powertools.utilities.idempotency import idempotent_function",
    "from python_multipart.multipart import MultipartParser",
)
# Nothing listens on the discard port: an AWS call made at import fails instead of reaching anything.
UNREACHABLE_ENDPOINT = "http://127.0.0.1:9"


@dataclass
class Row:
    name: str
    code: str
    cwd: Path
    env: dict[str, str]
    # the row the others are measured against (the first row), and boto3's, shown beside it
    floor: bool = False
    boto3: bool = False
    # a function's import, held to the target ("met" or "NOT met" printed); the exit status counts only the rows
    # that decide it: the transcribe handler's, as it ships
    function: str | None = None
    decides: bool = False
    seconds: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000


def base_environment() -> dict[str, str]:
    """This process's environment without what would change an import (AWS_*, POWERTOOLS_*, PYTHON*), and the
    region, dummy credentials, unreachable endpoint and layer path every row gets."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "POWERTOOLS_", "PYTHON", "_HANDLER"))
    }
    env |= {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "cold-start-benchmark",
        "AWS_SECRET_ACCESS_KEY": "cold-start-benchmark",
        "AWS_ENDPOINT_URL": UNREACHABLE_ENDPOINT,
        "PYTHONPATH": str(LAYER_PYTHON),
    }
    return env


def build_rows() -> list[Row]:
    local = LocalTemplate(load_template())
    base = base_environment()
    rows = [
        Row("libraries at import (floor)", "; ".join(LIBRARIES_AT_IMPORT), ROOT, base, floor=True),
        Row("boto3", "import boto3", ROOT, base, boto3=True),
        Row("libraries, all", "; ".join(LIBRARIES), ROOT, base),
    ]
    for name, logical_id in FUNCTIONS.items():
        code_dir, _ = local.function_source(logical_id)
        env = base | local.function_environment(logical_id) | {"AWS_LAMBDA_FUNCTION_NAME": logical_id}
        rows.append(Row(name, "import app", code_dir.parent, env, function=name, decides=name == "transcribe"))
    return rows


def artifact_rows(build_dir: Path, runtime_dir: Path, sources_only_dir: Path) -> list[Row]:
    """The floor and each function's import from the built artifact, as built and without its bytecode."""
    local = LocalTemplate(load_template())
    base = base_environment() | {"PYTHONDONTWRITEBYTECODE": "1"}  # Lambda's /var/task and /opt are read-only
    built_path = os.pathsep.join([str(build_dir / "CommonLayer" / "python"), str(runtime_dir)])
    rows = [
        Row(
            "libraries at import (floor)",
            "; ".join(LIBRARIES_AT_IMPORT),
            runtime_dir,
            base | {"PYTHONPATH": built_path},
            floor=True,
        ),
        Row("boto3", "import boto3", runtime_dir, base | {"PYTHONPATH": str(runtime_dir)}, boto3=True),
    ]
    for shipped, tree in (("as built", build_dir), ("sources only", sources_only_dir)):
        for name, logical_id in FUNCTIONS.items():
            env = base | local.function_environment(logical_id) | {"AWS_LAMBDA_FUNCTION_NAME": logical_id}
            env["PYTHONPATH"] = os.pathsep.join([str(tree / "CommonLayer" / "python"), str(runtime_dir)])
            decides = name == "transcribe" and tree == build_dir
            rows.append(Row(f"{name}, {shipped}", "import app", tree / logical_id, env, function=name, decides=decides))
    return rows


def measure(python: str, rows: list[Row], runs: int) -> None:
    for row in rows:
        run_once(python, row)  # untimed: writes the bytecode caches where it may
    for _ in range(runs):
        for row in rows:
            row.seconds.append(run_once(python, row))


def report(title: str, rows: list[Row], runs: int) -> bool:
    """Print the rows against the floor (and boto3); True when the transcribe handler's rows meet the target."""
    [floor] = [row.median_ms for row in rows if row.floor]
    [boto3] = [row.median_ms for row in rows if row.boto3]
    print(f"{title}: `import` in a fresh process, wall time, {runs} runs each, interleaved")
    print(f"{'row':<28} {'median ms':>10} {'min-max ms':>14} {'x floor':>8} {'x boto3':>8}  target <= {TARGET}x floor")
    transcribe_met = True
    for row in rows:
        ratio = row.median_ms / floor
        low, high = min(row.seconds) * 1000, max(row.seconds) * 1000
        verdict = ""
        if row.function:
            verdict = "met" if ratio <= TARGET else "NOT met"
        if row.decides:
            transcribe_met &= ratio <= TARGET
        print(
            f"{row.name:<28} {row.median_ms:>10.0f} {f'{low:.0f}-{high:.0f}':>14} {ratio:>8.2f} "
            f"{row.median_ms / boto3:>8.2f}  {verdict}"
        )
    return transcribe_met


def run_once(python: str, row: Row) -> float:
    started = time.perf_counter()
    done = subprocess.run([python, "-c", row.code], cwd=row.cwd, env=row.env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{row.name}: `python -c {row.code!r}` failed (exit {done.returncode}):\n{done.stderr}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs of each command (default 15)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to start (default: this one)")
    parser.add_argument("--build-dir", type=Path, help="also measure this sam build (.aws-sam/build)")
    parser.add_argument("--build-python", default="python3.12", help="the functions' runtime, for --build-dir")
    parser.add_argument(
        "--runtime-dir",
        type=Path,
        default=ROOT / ".aws-sam" / "lambda-runtime",
        help="the runtime's boto3, for --build-dir (make build-check installs it there)",
    )
    args = parser.parse_args()

    rows = build_rows()
    measure(args.python, rows, args.runs)
    met = report("Cold start, the sources", rows, args.runs)
    print(f"floor: {'; '.join(LIBRARIES_AT_IMPORT)}")
    print(f"libraries, all: the floor and {'; '.join(LIBRARIES[len(LIBRARIES_AT_IMPORT) :])}")
    if args.build_dir:
        with tempfile.TemporaryDirectory() as scratch:
            sources_only = Path(scratch) / "build"
            shutil.copytree(args.build_dir, sources_only, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            built = artifact_rows(args.build_dir.resolve(), args.runtime_dir.resolve(), sources_only)
            measure(args.build_python, built, args.runs)
        print()
        met &= report(f"Cold start, the artifact in {args.build_dir} ({args.build_python})", built, args.runs)
    print(
        f"transcribe handler: target <= {TARGET}x the libraries every request needs (the floor): "
        f"{'met' if met else 'NOT met'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
