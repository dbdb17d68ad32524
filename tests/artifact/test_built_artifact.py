"""The deployable artifact: each function that `sam build` built imports its handler, and runs it, on Python 3.12.

Run by `make build-check` (after `make build`), which sets INFERY_BUILD_DIR (the build, .aws-sam/build),
INFERY_BUILD_PYTHON (the functions' runtime, Python 3.12) and INFERY_LAMBDA_RUNTIME_DIR (boto3, which the Lambda
runtime provides and the functions do not ship). Each function is imported in a fresh interpreter started with
-I -S, so nothing outside the artifact can be found: sys.path is the function's built folder (/var/task), the layer's
python/ folder (/opt/python), the runtime's boto3 and the standard library. A dependency missing from a function's
requirements.txt or from the layer fails here, not in a deployment. Without INFERY_BUILD_DIR (a plain `make test`)
the tests are skipped; with it, a missing build fails them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from local_stack.template import LocalTemplate, load_template

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = os.environ.get("INFERY_BUILD_DIR")
pytestmark = pytest.mark.skipif(not BUILD_DIR, reason="checks the output of sam build: run `make build-check`")

# What runs inside the runtime's interpreter: import the handler as Lambda does, optionally call it with an event.
PROBE = """
import importlib, json, sys, sysconfig
spec = json.loads(sys.argv[1])
sys.path[:0] = spec["path"]

class Context:
    function_name = spec["function_name"]
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:" + spec["function_name"]
    aws_request_id = "build-check-request"
    def get_remaining_time_in_millis(self):
        return 30000

module = importlib.import_module(spec["module"])
handler = getattr(module, spec["handler"])
assert callable(handler), spec["handler"]
result = handler(spec["event"], Context()) if spec["event"] is not None else None
origins = {name: getattr(loaded, "__file__", None) for name, loaded in list(sys.modules.items())}
cached = {name: getattr(loaded, "__cached__", None) for name, loaded in list(sys.modules.items())}
standard = sorted({sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]})
print("BUILD-CHECK " + json.dumps({"version": list(sys.version_info[:2]), "origins": origins, "result": result,
                                   "standard": standard, "cached": cached}))
"""

# events the handlers answer without reaching AWS: a key of the wrong shape (refused before any lookup),
# and the s3:TestEvent S3 sends when a bucket's notification is configured (acknowledged, nothing started)
S3_TEST_EVENT = {
    "Records": [
        {
            "messageId": "build-check-1",
            "receiptHandle": "build-check",
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:infery-JobsQueue",
            "awsRegion": "us-east-1",
            "attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": "0",
                "SenderId": "s3",
                "ApproximateFirstReceiveTimestamp": "0",
            },
            "messageAttributes": {},
            "body": json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "infery-audiobucket"}),
        }
    ]
}


def _models_request_with_a_malformed_key() -> dict[str, Any]:
    event = json.loads((ROOT / "events" / "list_models.json").read_text())
    event["headers"]["Authorization"] = "Bearer inf_not-a-key!"
    event["multiValueHeaders"]["Authorization"] = ["Bearer inf_not-a-key!"]
    return event


def _events() -> dict[str, dict[str, Any] | None]:
    return {
        "TranscribeFunction": _models_request_with_a_malformed_key(),
        "WorkerFunction": S3_TEST_EVENT,
        "ReconcilerFunction": None,
    }  # it scans DynamoDB at once: imported only


@pytest.fixture(scope="module")
def build() -> tuple[Path, LocalTemplate]:
    assert BUILD_DIR
    built_template = Path(BUILD_DIR).resolve() / "template.yaml"
    assert built_template.is_file(), f"no build at {BUILD_DIR}: run `make build` first"
    return built_template.parent, LocalTemplate(load_template(built_template), stack_name="infery-build-check")


@pytest.fixture(scope="module")
def runtime_python() -> str:
    python = os.environ.get("INFERY_BUILD_PYTHON")
    assert python and Path(python).is_file(), "INFERY_BUILD_PYTHON must name the functions' runtime (Python 3.12)"
    return python


@pytest.fixture(scope="module")
def runtime_dir() -> Path:
    path = Path(os.environ.get("INFERY_LAMBDA_RUNTIME_DIR", "")).resolve()
    assert (path / "boto3").is_dir(), "INFERY_LAMBDA_RUNTIME_DIR must hold boto3, as the Lambda runtime does"
    return path


def _layer_paths(build_dir: Path, local: LocalTemplate) -> list[Path]:
    layers = local.resources_of_type("AWS::Serverless::LayerVersion").values()
    return [(build_dir / layer["Properties"]["ContentUri"]).resolve() / "python" for layer in layers]


# PEP 552: a .pyc's second 4 bytes are its flags; 0b01 is "hash-based, source not checked"
UNCHECKED_HASH_FLAGS = 0b01


def _ships_unchecked_bytecode(cached: str | None) -> bool:
    if not cached or not Path(cached).is_file():
        return False
    return int.from_bytes(Path(cached).read_bytes()[4:8], "little") == UNCHECKED_HASH_FLAGS


def test_every_function_of_the_template_was_built(build):
    build_dir, local = build
    functions = local.resources_of_type("AWS::Serverless::Function")
    assert set(functions) == set(_events())
    for logical_id, body in functions.items():
        assert (build_dir / body["Properties"]["CodeUri"] / "app.py").is_file(), logical_id
    layers = _layer_paths(build_dir, local)
    assert layers and all((layer / "infery" / "__init__.py").is_file() for layer in layers), layers


@pytest.mark.parametrize("function", sorted(_events()))
def test_the_built_function_imports_and_runs_its_handler_on_the_runtime(build, runtime_python, runtime_dir, function):
    build_dir, local = build
    properties = local.resources[function]["Properties"]
    code_dir = (build_dir / properties["CodeUri"]).resolve()
    layers = _layer_paths(build_dir, local)
    module, handler = properties["Handler"].rsplit(".", 1)
    spec = {
        "path": [str(code_dir), *map(str, layers), str(runtime_dir)],
        "module": module,
        "handler": handler,
        "function_name": function,
        "event": _events()[function],
    }
    environment = {
        **local.function_environment(function),
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "build-check",
        "AWS_SECRET_ACCESS_KEY": "build-check",
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "LAMBDA_TASK_ROOT": str(code_dir),
    }
    completed = subprocess.run(
        # -B: Lambda's /var/task and /opt are read-only, so an import there writes no bytecode either
        [runtime_python, "-I", "-S", "-B", "-c", PROBE, json.dumps(spec)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=code_dir,
    )
    assert completed.returncode == 0, f"{function} does not import or run from its build:\n{completed.stderr}"
    report = json.loads(
        next(line for line in completed.stdout.splitlines() if line.startswith("BUILD-CHECK "))[len("BUILD-CHECK ") :]
    )
    assert report["version"] == [3, 12], report["version"]

    # every module came from the artifact, the layer, the runtime's boto3 or the standard library
    standard = [Path(path).resolve() for path in report["standard"]]
    allowed_roots = [code_dir, *layers, runtime_dir, *standard]
    origins = {name: Path(path).resolve() for name, path in report["origins"].items() if path}
    assert origins[module].is_relative_to(code_dir)
    assert any(origins["infery"].is_relative_to(layer) for layer in layers), origins["infery"]
    # the dependencies ship once, with the layer (layers/common/python/requirements.txt), not with each function
    assert any(origins["pydantic_core"].is_relative_to(layer) for layer in layers), origins["pydantic_core"]
    assert not (code_dir / "pydantic_core").exists(), "a function ships a dependency the layer has"
    strays = {
        name: str(path)
        for name, path in origins.items()
        if not any(path.is_relative_to(root) for root in allowed_roots)
    }
    assert not strays, f"modules from outside the artifact: {strays}"

    # Lambda cannot write bytecode, so the build ships it (make build compiles it), in the unchecked-hash form that
    # holds whatever the files' times after zipping: without it every cold start compiles the layer and the function
    shipped_roots = [code_dir, *layers]
    compiled_every_time = {
        name: str(path)
        for name, path in origins.items()
        if path.suffix == ".py"
        and any(path.is_relative_to(root) for root in shipped_roots)
        and not _ships_unchecked_bytecode(report["cached"].get(name))
    }
    assert not compiled_every_time, f"modules the artifact ships without their bytecode: {compiled_every_time}"

    if function == "TranscribeFunction":  # a refusal before any lookup, in OpenAI's shape
        result = report["result"]
        assert result["statusCode"] == 401, result
        assert json.loads(result["body"])["error"]["code"] == "invalid_api_key"
    if function == "WorkerFunction":
        assert report["result"] == {"batchItemFailures": []}
