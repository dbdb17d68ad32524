"""Least privilege in template.yaml: every role allows only what its code calls, on the resources it uses.

The template is read as local_stack reads it (load_template). A function's "code" is its app.py plus every module of
the layer's ``infery`` package that it imports, directly or through other modules, plus the library code it hands a
table to (powertools Idempotency). An allowed action must be needed by a call found in that code (ACTION_CALLS
says which calls need which action); no action or resource of a data service may be a wildcard; and what the code
cannot work without is checked to be granted, so tightening a policy cannot silently break a path.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from local_stack.template import TEMPLATE_PATH, load_template

ROOT = TEMPLATE_PATH.parent
LAYER = ROOT / "layers" / "common" / "python"
DATA_SERVICES = {"s3", "dynamodb", "sqs", "sns", "sagemaker", "kms"}

# Every action a policy may allow, and the calls that need it: a boto3 method called, or passed on to be called
# (``all_items(client.scan, ...)``), or a TransactWriteItems item. An action missing here cannot be allowed: add it
# with the calls that need it.


def method(*names: str) -> tuple[str, ...]:
    return tuple(rf"\.{name}\s*[(,)]" for name in names)


ACTION_CALLS: dict[str, tuple[str, ...]] = {
    "dynamodb:GetItem": method("get_item"),
    # a TransactWriteItems call is authorized item by item, as the item's own action
    "dynamodb:PutItem": (*method("put_item"), r"[\"']Put[\"']\s*:"),
    "dynamodb:UpdateItem": (*method("update_item"), r"[\"']Update[\"']\s*:"),
    "dynamodb:DeleteItem": (*method("delete_item"), r"[\"']Delete[\"']\s*:"),
    "dynamodb:ConditionCheckItem": (r"[\"']ConditionCheck[\"']\s*:",),
    "dynamodb:Query": method("query"),
    "dynamodb:Scan": method("scan"),
    "dynamodb:BatchGetItem": method("batch_get_item"),
    "dynamodb:BatchWriteItem": method("batch_write_item", "batch_writer"),
    # head_object is authorized as GetObject
    "s3:GetObject": method("get_object", "head_object", "download_file", "download_fileobj"),
    # a presigned POST is authorized as the signer's PutObject when the client sends it
    # a multipart upload (begun, its parts, completed) is authorized as PutObject; its abort on its own
    "s3:PutObject": method(
        "put_object",
        "upload_file",
        "upload_fileobj",
        "generate_presigned_post",
        "create_multipart_upload",
        "upload_part",
        "complete_multipart_upload",
    ),
    "s3:AbortMultipartUpload": method("abort_multipart_upload"),
    # listing, or telling a missing object (404, NoSuchKey) apart: without ListBucket S3 answers 403 instead
    "s3:ListBucket": (*method("list_objects", "list_objects_v2"), r"[\"'](NoSuchKey|404|NotFound)[\"']"),
    "s3:DeleteObject": method("delete_object", "delete_objects"),
    # reading or deleting one version of an object (an upload slot's first, a later one)
    "s3:GetObjectVersion": (r"[\"']VersionId[\"']\s*:",),
    "s3:DeleteObjectVersion": (r"\.delete_object\([^)]*VersionId=",),
    "s3:ListBucketVersions": (r"[\"']list_object_versions[\"']",),
    "sqs:SendMessage": method("send_message", "send_message_batch"),
    "sqs:ReceiveMessage": method("receive_message"),
    "sqs:DeleteMessage": method("delete_message", "delete_message_batch"),
    "sns:Publish": method("publish"),
    "sagemaker:InvokeEndpoint": method("invoke_endpoint"),
    "sagemaker:InvokeEndpointAsync": method("invoke_endpoint_async"),
}

# Library code that makes calls with a function's permissions: when the function's code names the marker, the
# library module's own calls count as the function's.
LIBRARY_CALLS = {
    "DynamoDBPersistenceLayer": "aws_lambda_powertools.utilities.idempotency.persistence.dynamodb",
}

# What SageMaker itself does with the model's execution role (not the container's code): read the asynchronous
# request bodies, write asynchronous responses and failures, publish asynchronous outcomes.
SAGEMAKER_PLATFORM_ACTIONS = {"s3:GetObject", "s3:PutObject", "sns:Publish"}

# Actions with no resource-level permissions: the only ones a statement may allow on "*".
NO_RESOURCE_LEVEL = {
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
}

# An S3 object resource must name a prefix of the bucket: ${Bucket.Arn}/prefix/* (never the whole bucket).
S3_PREFIX_RESOURCE = re.compile(r"\$\{\w+\.Arn\}/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/\*")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {name: body for name, body in template["Resources"].items() if body["Type"] == resource_type}


def as_text(value: Any) -> str:
    """A resource or action as written: !GetAtt X.Arn -> ${X.Arn}, !Ref X -> ${X}, !Sub's template string."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref":
            return "${" + argument + "}"
        if function == "Fn::GetAtt":
            return "${" + ".".join(argument if isinstance(argument, list) else [argument]) + "}"
        if function == "Fn::Sub":
            return argument if isinstance(argument, str) else argument[0]
    raise AssertionError(f"an IAM value this test cannot read: {value!r}")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements_of_function(body: dict[str, Any]) -> list[dict[str, Any]]:
    statements = []
    for policy in body["Properties"].get("Policies", []):
        assert isinstance(policy, dict) and set(policy) == {"Statement"}, (
            f"only inline statements, no managed policy or SAM policy template (they expand to broad actions): "
            f"{policy!r}"
        )
        statements.extend(policy["Statement"])
    return statements


def statements_of_role(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        statement
        for policy in body["Properties"].get("Policies", [])
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def identity_statements(template: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every identity-based statement of the template, by the resource (function, role, policy) that holds it."""
    found = {
        name: statements_of_function(body)
        for name, body in resources_of_type(template, "AWS::Serverless::Function").items()
    }
    found |= {name: statements_of_role(body) for name, body in resources_of_type(template, "AWS::IAM::Role").items()}
    for policy_type in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        found |= {
            name: body["Properties"]["PolicyDocument"]["Statement"]
            for name, body in resources_of_type(template, policy_type).items()
        }
    return found


def allowed(statements: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(action, resource as written) for every Allow statement."""
    pairs = []
    for statement in statements:
        assert statement["Effect"] == "Allow", statement
        assert "NotAction" not in statement and "NotResource" not in statement, statement
        for action in as_list(statement["Action"]):
            for resource in as_list(statement["Resource"]):
                pairs.append((as_text(action), as_text(resource)))
    return pairs


# ---------------------------------------------------------------------------------------------------------------
# the code a function runs


def _module_name(source: Path) -> str | None:
    """``infery.usecases.jobs`` for ``infery/usecases/jobs.py`` (a package's ``__init__`` is the package)."""
    if not source.is_relative_to(LAYER):
        return None
    parts = list(source.relative_to(LAYER).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, source: Path) -> str | None:
    """The module an import names, relative imports resolved from the importing module, at any depth."""
    if node.level == 0:
        return node.module
    importer = _module_name(source)
    if importer is None:
        return None
    package = importer.split(".") if source.name == "__init__.py" else importer.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imported_layer_modules(source: Path) -> set[str]:
    """The layer modules ``source`` imports when it runs (not those under ``if TYPE_CHECKING:``, which never run):
    ``from infery.x.y import name`` counts ``infery.x.y``, its packages, and ``infery.x.y.name`` (a module or not)."""
    names = set()
    tree = ast.parse(source.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for statement in node.body
        for inner in ast.walk(statement)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            module = _absolute(node, source)
            if module and module.split(".")[0] == "infery":
                names.add(module)
                names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.split(".")[0] == "infery")
    # importing infery.a.b runs the packages infery and infery.a first
    return names | {".".join(name.split(".")[:depth]) for name in names for depth in range(1, name.count(".") + 1)}


def layer_source(module: str) -> Path | None:
    """The file of a layer module or package, or None when the name is not a module (a class, a function)."""
    path = LAYER.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


WIRING = LAYER / "infery" / "wiring.py"


def _wired_modules(sources: set[Path]) -> set[str]:
    """The layer modules behind the collaborators the function's code takes from infery.wiring (``wiring.<name>``,
    or ``<object>.wiring.<name>`` where a route holds the handler's wiring), in ``sources``.

    The wiring module builds every collaborator of every function, each on first use; a function runs only those it
    asks for, and those they are built from (``self.<name>`` inside a property). A property imports the module of
    what it builds itself (the module level imports them only for type checking), so the names are read from
    every import of the module, wherever it is.
    """
    tree = ast.parse(WIRING.read_text())
    imported = {
        alias.asname or alias.name: module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (module := _absolute(node, WIRING)) and module.startswith("infery.")
        for alias in node.names
    }
    members = {
        member.name: member
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        for member in node.body
        if isinstance(member, ast.FunctionDef)
    }
    pending = [
        node.attr
        for source in sources - {WIRING}
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Attribute)
        and (
            (isinstance(node.value, ast.Name) and node.value.id == "wiring")
            or (isinstance(node.value, ast.Attribute) and node.value.attr == "wiring")
        )
    ]
    assert pending, f"{sorted(sources)} import infery.wiring but use none of its collaborators"
    modules: set[str] = set()
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        assert name in members or name in ("settings", "tables"), f"wiring has no collaborator {name!r}"
        for node in ast.walk(members[name]) if name in members else ():
            if isinstance(node, ast.Name) and node.id in imported:
                modules.add(imported[node.id])
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
                pending.append(node.attr)
    return modules


@cache
def function_code(code_uri: str) -> str:
    """The function's app.py, every layer module it reaches, and the library modules that act for it."""
    app = ROOT / code_uri / "app.py"
    seen: set[Path] = set()
    pending = [app]
    while pending:
        while pending:
            source = pending.pop()
            if source in seen:
                continue
            seen.add(source)
            for module in _imported_layer_modules(source) if source != WIRING else ():
                path = layer_source(module)
                if path is not None:
                    pending.append(path)
        # the wiring's collaborators once every module that may use one is known (the routes take them too);
        # what they are built from may lead to more modules, and those to more collaborators
        if WIRING in seen:
            wired = (layer_source(module) for module in _wired_modules(seen))
            pending = [path for path in wired if path is not None and path not in seen]
    code = "\n".join(path.read_text() for path in sorted(seen))
    for marker, module in LIBRARY_CALLS.items():
        if marker in code:
            spec = importlib.util.find_spec(module)
            assert spec is not None and spec.origin is not None, module
            code += "\n" + Path(spec.origin).read_text()
    return code


def endpoint_code() -> str:
    return "\n".join(path.read_text() for path in sorted((ROOT / "endpoint").glob("*.py")))


def needed_by(action: str, code: str) -> bool:
    assert action in ACTION_CALLS, f"{action} is in no row of ACTION_CALLS: add the calls that need it"
    return any(re.search(pattern, code) for pattern in ACTION_CALLS[action])


def service_of(action: str) -> str:
    return action.split(":", 1)[0]


# ---------------------------------------------------------------------------------------------------------------
# tests


def test_the_code_reading_finds_the_calls_it_must(template):
    # the analysis itself: if these stop being found, the checks below would pass for the wrong reason
    transcribe = function_code("functions/transcribe")
    assert "class CreditStore" in transcribe and "class KeyStore" in transcribe and "class AudioStore" in transcribe
    assert needed_by("dynamodb:PutItem", transcribe) and needed_by("sagemaker:InvokeEndpoint", transcribe)
    assert needed_by("dynamodb:DeleteItem", transcribe)  # the reservation's Delete, and powertools Idempotency
    reconciler = function_code("functions/reconciler")
    assert needed_by("dynamodb:Scan", reconciler) and needed_by("sqs:SendMessage", reconciler)  # stuck jobs
    assert not needed_by("s3:GetObject", reconciler) and not needed_by("dynamodb:BatchWriteItem", reconciler)
    assert "def lambda_handler" in function_code("functions/worker")


def test_functions_use_only_inline_statements(template):
    for name, body in resources_of_type(template, "AWS::Serverless::Function").items():
        statements_of_function(body)  # asserts: no SAM policy template (DynamoDBCrudPolicy ...), no managed policy
        assert body["Properties"].get("Role") is None, f"{name}: its role must come from its Policies"


def test_no_wildcard_action_anywhere_and_no_wildcard_resource_for_a_data_service(template):
    for holder, statements in identity_statements(template).items():
        for action, resource in allowed(statements):
            assert "*" not in action, f"{holder}: wildcard action {action}"
            service = service_of(action)
            if service not in DATA_SERVICES:
                assert resource != "*" or action in NO_RESOURCE_LEVEL, (
                    f"{holder}: {action} on '*' although it has resource-level permissions"
                )
                continue
            assert resource != "*", f"{holder}: {action} on every resource"
            if "*" in resource:
                assert service == "s3" and S3_PREFIX_RESOURCE.fullmatch(resource), (
                    f"{holder}: {action} on the wildcard resource {resource} (S3 objects must name a prefix)"
                )


def test_roles_attach_no_managed_policy_but_api_gateways_log_writer(template):
    for name, body in resources_of_type(template, "AWS::IAM::Role").items():
        managed = [as_text(arn) for arn in body["Properties"].get("ManagedPolicyArns", [])]
        assert all(arn.endswith(":policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs") for arn in managed), (
            name,
            managed,
        )


FUNCTIONS = ["TranscribeFunction", "WorkerFunction", "ReconcilerFunction"]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_allows_only_actions_its_code_calls(template, function):
    body = template["Resources"][function]
    code = function_code(body["Properties"]["CodeUri"])
    for action, resource in allowed(statements_of_function(body)):
        assert needed_by(action, code), (
            f"{function} allows {action} on {resource}, but neither its app.py nor the infery modules it uses "
            f"make a call that needs it ({', '.join(ACTION_CALLS[action])})"
        )


def test_every_function_is_checked(template):
    assert sorted(resources_of_type(template, "AWS::Serverless::Function")) == sorted(FUNCTIONS)


def _grants(template: dict[str, Any], holder: str) -> set[tuple[str, str]]:
    body = template["Resources"][holder]
    statements = (
        statements_of_function(body) if body["Type"] == "AWS::Serverless::Function" else statements_of_role(body)
    )
    return set(allowed(statements))


def _resources_with(template: dict[str, Any], action: str) -> set[tuple[str, str]]:
    return {
        (holder, resource)
        for holder in identity_statements(template)
        for granted, resource in _grants(template, holder)
        if granted == action
    }


def test_the_ledger_is_append_only(template):
    for holder in identity_statements(template):
        actions = {action for action, resource in _grants(template, holder) if "LedgerTable" in resource}
        assert actions <= {"dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:Query"}, (holder, actions)


def test_deletes_scans_and_batch_writes_only_where_the_code_does_them(template):
    # a reservation is deleted when it is closed; powertools deletes an idempotency record when its request fails
    assert {resource for _, resource in _resources_with(template, "dynamodb:DeleteItem")} == {
        "${ReservationsTable.Arn}",
        "${IdempotencyTable.Arn}",
    }
    # the reconciler's: stale reservations, and the open jobs (the sparse index holds only those) for stuck ones
    assert _resources_with(template, "dynamodb:Scan") == {
        ("ReconcilerFunction", "${ReservationsTable.Arn}"),
        ("ReconcilerFunction", "${JobsTable.Arn}/index/OpenByKey"),
    }
    assert _resources_with(template, "dynamodb:BatchWriteItem") == set()
    for holder in identity_statements(template):
        assert not {action for action, _ in _grants(template, holder)} & {
            "s3:DeleteObject",
            "s3:PutObjectAcl",
            "s3:PutLifecycleConfiguration",
            "s3:PutBucketPolicy",
        }, holder


def test_the_model_reads_and_writes_only_its_prefixes(template):
    grants = _grants(template, "WhisperModelRole")
    s3 = {(action, resource) for action, resource in grants if service_of(action) == "s3"}
    assert s3 == {
        ("s3:GetObject", "arn:${AWS::Partition}:s3:::${Path}"),  # the model artifact, from ModelDataUrl
        ("s3:GetObject", "${AudioBucket.Arn}/uploads/*"),
        ("s3:GetObject", "${AudioBucket.Arn}/inbox/*"),
        ("s3:GetObject", "${AudioBucket.Arn}/async-inputs/*"),
        ("s3:GetObjectVersion", "${AudioBucket.Arn}/uploads/*"),
        ("s3:GetObjectVersion", "${AudioBucket.Arn}/inbox/*"),
        ("s3:PutObject", "${AudioBucket.Arn}/async-outputs/*"),
        ("s3:PutObject", "${AudioBucket.Arn}/async-failures/*"),
        ("s3:PutObject", "${AudioBucket.Arn}/progress/*"),
    }
    assert ("sns:Publish", "${InferenceResultsTopic}") in grants
    data_actions = {action for action, _ in grants if service_of(action) in DATA_SERVICES}
    code = endpoint_code()
    for action in data_actions - SAGEMAKER_PLATFORM_ACTIONS:
        assert needed_by(action, code), f"the model's role allows {action}, which neither SageMaker nor endpoint/ needs"
    # the container's own calls: audio by reference, progress reports
    assert needed_by("s3:GetObject", code) and needed_by("s3:PutObject", code)


def test_no_role_but_the_functions_that_serve_them_reads_results(template):
    readers = {holder for holder, resource in _resources_with(template, "s3:GetObject") if "/results/" in resource}
    assert readers == {"TranscribeFunction", "WorkerFunction"}


# What each function cannot work without, written out: a tightened policy must still grant all of it.
NEEDED = {
    "TranscribeFunction": {
        ("dynamodb:GetItem", "${KeysTable.Arn}"),  # authenticate
        ("dynamodb:UpdateItem", "${KeysTable.Arn}"),  # the balance, in every credit transaction
        ("dynamodb:PutItem", "${LedgerTable.Arn}"),
        ("dynamodb:GetItem", "${LedgerTable.Arn}"),
        ("dynamodb:Query", "${LedgerTable.Arn}/index/ByTime"),  # GET /v1/usage
        ("dynamodb:PutItem", "${ReservationsTable.Arn}"),
        ("dynamodb:DeleteItem", "${ReservationsTable.Arn}"),
        ("dynamodb:GetItem", "${ReservationsTable.Arn}"),
        ("dynamodb:UpdateItem", "${RateLimitsTable.Arn}"),
        ("dynamodb:GetItem", "${IdempotencyTable.Arn}"),
        ("dynamodb:PutItem", "${IdempotencyTable.Arn}"),
        ("dynamodb:UpdateItem", "${IdempotencyTable.Arn}"),
        ("dynamodb:DeleteItem", "${IdempotencyTable.Arn}"),
        ("dynamodb:PutItem", "${JobsTable.Arn}"),
        ("dynamodb:GetItem", "${JobsTable.Arn}"),
        ("s3:PutObject", "${AudioBucket.Arn}/uploads/*"),  # job audio, presigned POSTs
        ("s3:PutObject", "${AudioBucket.Arn}/speakers/*"),  # a job's known speakers' samples
        ("s3:GetObject", "${AudioBucket.Arn}/uploads/*"),
        ("s3:GetObject", "${AudioBucket.Arn}/results/*"),
        ("s3:GetObject", "${AudioBucket.Arn}/progress/*"),
        ("s3:ListBucket", "${AudioBucket.Arn}"),  # upload_not_found is a 404
        ("s3:ListBucketVersions", "${AudioBucket.Arn}"),  # an upload is its slot's first version
        ("s3:GetObjectVersion", "${AudioBucket.Arn}/uploads/*"),
        ("dynamodb:Query", "${JobsTable.Arn}/index/OpenByKey"),  # the cap on a key's open uploads and jobs
        ("sqs:SendMessage", "${JobsQueue.Arn}"),
        ("sagemaker:InvokeEndpoint", "${WhisperEndpoint}"),
    },
    "WorkerFunction": {
        ("dynamodb:GetItem", "${KeysTable.Arn}"),
        ("dynamodb:UpdateItem", "${KeysTable.Arn}"),
        ("dynamodb:Query", "${KeysTable.Arn}/index/ByKeyId"),  # a batch drop names its key by key_id
        ("dynamodb:PutItem", "${LedgerTable.Arn}"),
        ("dynamodb:Query", "${LedgerTable.Arn}"),  # was this job settled already?
        ("dynamodb:PutItem", "${ReservationsTable.Arn}"),
        ("dynamodb:DeleteItem", "${ReservationsTable.Arn}"),
        ("dynamodb:GetItem", "${ReservationsTable.Arn}"),
        ("dynamodb:PutItem", "${JobsTable.Arn}"),
        ("dynamodb:GetItem", "${JobsTable.Arn}"),
        ("dynamodb:UpdateItem", "${JobsTable.Arn}"),
        ("s3:GetObject", "${AudioBucket.Arn}/uploads/*"),
        ("s3:GetObject", "${AudioBucket.Arn}/inbox/*"),
        ("s3:GetObject", "${AudioBucket.Arn}/speakers/*"),  # a job's known speakers' samples
        ("s3:GetObject", "${AudioBucket.Arn}/async-outputs/*"),
        ("s3:GetObject", "${AudioBucket.Arn}/async-failures/*"),
        ("s3:GetObject", "${AudioBucket.Arn}/results/*"),
        ("s3:PutObject", "${AudioBucket.Arn}/async-inputs/*"),
        ("s3:PutObject", "${AudioBucket.Arn}/results/*"),
        ("s3:ListBucketVersions", "${AudioBucket.Arn}"),
        ("s3:GetObjectVersion", "${AudioBucket.Arn}/uploads/*"),
        ("s3:DeleteObjectVersion", "${AudioBucket.Arn}/uploads/*"),  # a presigned POST used again
        ("sqs:SendMessage", "${JobsQueue.Arn}"),
        ("sagemaker:InvokeEndpointAsync", "${WhisperAsyncEndpoint}"),
    },
    "ReconcilerFunction": {
        ("dynamodb:Scan", "${ReservationsTable.Arn}"),
        ("dynamodb:DeleteItem", "${ReservationsTable.Arn}"),
        ("dynamodb:GetItem", "${KeysTable.Arn}"),
        ("dynamodb:UpdateItem", "${KeysTable.Arn}"),
        ("dynamodb:PutItem", "${LedgerTable.Arn}"),
    },
}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_is_granted_what_its_code_needs(template, function):
    missing = NEEDED[function] - _grants(template, function)
    assert not missing, f"{function} lacks {sorted(missing)}"


def test_the_needed_grants_are_calls_of_the_code(template):
    # the list above must not drift from the code either: each of its actions is needed by a call of the function
    for function, grants in NEEDED.items():
        code = function_code(template["Resources"][function]["Properties"]["CodeUri"])
        for action, resource in grants:
            assert needed_by(action, code), (function, action, resource)


def test_indexes_named_in_policies_are_the_codes_indexes(template):
    # a Query on an index is granted on that index's ARN: the names must be the ones the code queries
    layer_code = "\n".join(path.read_text() for path in sorted((LAYER / "infery").rglob("*.py")))
    for holder in identity_statements(template):
        for action, resource in _grants(template, holder):
            match = re.fullmatch(r"\$\{\w+\.Arn\}/index/(\w+)", resource)
            if match:
                # (the reconciler scans the sparse open-work index: checked in the test of scans above)
                assert action in ("dynamodb:Query", "dynamodb:Scan"), (holder, action, resource)
                assert re.search(rf"[\"']{match.group(1)}[\"']", layer_code), (holder, resource)
