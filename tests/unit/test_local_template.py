"""local_stack.template: template.yaml read with CloudFormation's tags and resolved to local names."""

from __future__ import annotations

import copy

import pytest

from local_stack.template import TEMPLATE_PATH, LocalTemplate, load_template, rate_seconds


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template()


@pytest.fixture
def local(template) -> LocalTemplate:
    return LocalTemplate(template)


def test_the_repository_template_is_loaded(template):
    assert TEMPLATE_PATH.name == "template.yaml" and TEMPLATE_PATH.is_file()
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    assert {
        "InferyApi",
        "TranscribeFunction",
        "ReconcilerFunction",
        "KeysTable",
        "LedgerTable",
        "ReservationsTable",
        "RateLimitsTable",
        "IdempotencyTable",
        "WhisperEndpoint",
    } <= set(template["Resources"])


def test_short_form_tags_become_intrinsic_functions(template):
    assert template["Globals"]["Function"]["Environment"]["Variables"]["KEYS_TABLE_NAME"] == {"Ref": "KeysTable"}
    variables = template["Resources"]["TranscribeFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["DEFAULT_MODEL"] == {"Ref": "ModelName"}
    assert variables["SAGEMAKER_ENDPOINT_NAME"] == {"Fn::GetAtt": ["WhisperEndpoint", "EndpointName"]}
    assert template["Outputs"]["ApiBaseUrl"]["Value"] == {
        "Fn::Sub": "https://${InferyApi}.execute-api.${AWS::Region}.amazonaws.com/prod/v1"
    }
    # sequence and nested tags keep their structure
    assert template["Resources"]["WhisperModelRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0][
        "Resource"
    ]["Fn::Sub"][1]["Path"] == {"Fn::Select": [1, {"Fn::Split": ["s3://", {"Ref": "ModelDataUrl"}]}]}


def test_a_ref_to_a_resource_is_its_local_physical_name(local):
    assert local.resolve({"Ref": "KeysTable"}) == "infery-local-KeysTable"
    assert local.resolve({"Fn::GetAtt": ["WhisperEndpoint", "EndpointName"]}) == "infery-local-WhisperEndpoint"


def test_the_stack_name_can_be_chosen(template):
    assert LocalTemplate(template, stack_name="ci-7").resolve({"Ref": "LedgerTable"}) == "ci-7-LedgerTable"


def test_a_ref_to_a_parameter_is_its_default_an_override_or_a_local_placeholder(template):
    local = LocalTemplate(template, parameter_overrides={"ModelName": "whisper-tiny.en"})
    assert local.resolve({"Ref": "ModelName"}) == "whisper-tiny.en"
    assert local.resolve({"Ref": "SecondsPerCredit"}) == "5"  # a Number default, as a string
    assert local.resolve({"Ref": "MaxSyncAudioBytes"}) == "4194304"
    assert local.resolve({"Ref": "ModelImageUri"}) == "local-ModelImageUri"  # no Default: AWS-only


def test_pseudo_parameters(template):
    local = LocalTemplate(template, region="eu-west-1")
    assert local.resolve({"Ref": "AWS::StackName"}) == "infery-local"
    assert local.resolve({"Ref": "AWS::Region"}) == "eu-west-1"
    assert local.resolve({"Ref": "AWS::AccountId"}) == "123456789012"  # moto's default account, where it files ARNs


def test_sub_replaces_pseudo_parameters_resources_and_attributes(local):
    assert local.resolve({"Fn::Sub": "${AWS::StackName}-uploads"}) == "infery-local-uploads"
    assert local.resolve({"Fn::Sub": "${AWS::StackName}/${KeysTable}"}) == "infery-local/infery-local-KeysTable"
    assert local.resolve({"Fn::Sub": "${WhisperEndpoint.EndpointName}"}) == "infery-local-WhisperEndpoint"
    assert local.resolve({"Fn::Sub": "https://${InferyApi}.execute-api.${AWS::Region}.amazonaws.com/prod/v1"}) == (
        "https://infery-local-InferyApi.execute-api.us-east-1.amazonaws.com/prod/v1"
    )


def test_resolve_walks_nested_values_and_keeps_literals(local):
    assert local.resolve({"TableName": {"Ref": "KeysTable"}, "Tags": [{"Value": {"Ref": "LogLevel"}}, 3, None]}) == {
        "TableName": "infery-local-KeysTable",
        "Tags": [{"Value": "INFO"}, 3, None],
    }
    assert local.resolve("plain") == "plain"


def test_an_unknown_ref_is_a_key_error(local):
    with pytest.raises(KeyError, match="NoSuchThing"):
        local.resolve({"Ref": "NoSuchThing"})


@pytest.mark.parametrize(
    ("sub", "expected"),
    [
        (["${Greeting}-${AWS::StackName}", {"Greeting": "hi"}], "hi-infery-local"),
        ("${!Literal}-${AWS::StackName}", "${Literal}-infery-local"),
    ],
    ids=["variable-map", "escaped-literal"],
)
def test_sub_takes_its_variable_map_and_literal_escapes(local, sub, expected):
    assert local.resolve({"Fn::Sub": sub}) == expected


def test_the_transcribe_functions_environment_is_resolved_from_the_template(template):
    environment = LocalTemplate(template, parameter_overrides={"ModelName": "whisper-tiny.en"}).function_environment(
        "TranscribeFunction"
    )
    assert environment["KEYS_TABLE_NAME"] == "infery-local-KeysTable"
    assert environment["LEDGER_TABLE_NAME"] == "infery-local-LedgerTable"
    assert environment["SAGEMAKER_ENDPOINT_NAME"] == "infery-local-WhisperEndpoint"
    assert environment["DEFAULT_MODEL"] == "whisper-tiny.en"
    assert (environment["SECONDS_PER_CREDIT"], environment["MIN_CREDITS_PER_REQUEST"]) == ("5", "1")
    assert environment["ENDPOINT_TIMEOUT_SECONDS"] == "27"
    assert (
        environment["RESERVATIONS_TABLE_NAME"],
        environment["RATE_LIMITS_TABLE_NAME"],
        environment["IDEMPOTENCY_TABLE_NAME"],
    ) == ("infery-local-ReservationsTable", "infery-local-RateLimitsTable", "infery-local-IdempotencyTable")
    assert (environment["MODEL_PRICES"], environment["DEFAULT_RATE_LIMIT_PER_MINUTE"]) == ("{}", "600")
    assert all(isinstance(value, str) and "Ref" not in value and "Fn::" not in value for value in environment.values())


def test_a_functions_environment_is_the_globals_and_its_own_variables(local):
    worker, reconciler = local.function_environment("WorkerFunction"), local.function_environment("ReconcilerFunction")
    assert worker["KEYS_TABLE_NAME"] == reconciler["KEYS_TABLE_NAME"] == "infery-local-KeysTable"  # the globals
    assert worker["AUDIO_BUCKET_NAME"] == "infery-local-audiobucket"  # its own
    assert "AUDIO_BUCKET_NAME" not in reconciler and "RATE_LIMITS_TABLE_NAME" not in worker  # another function's


def test_the_api_routes_are_the_functions_api_events(local):
    assert sorted(local.api_routes()) == [
        ("GET", "/console", "TranscribeFunction"),
        ("GET", "/console/{asset}", "TranscribeFunction"),
        ("GET", "/v1/jobs", "TranscribeFunction"),
        ("GET", "/v1/jobs/{job_id}", "TranscribeFunction"),
        ("GET", "/v1/jobs/{job_id}/result", "TranscribeFunction"),
        ("GET", "/v1/models", "TranscribeFunction"),
        ("GET", "/v1/models/{model_id}", "TranscribeFunction"),
        ("GET", "/v1/usage", "TranscribeFunction"),
        ("POST", "/v1/audio/transcriptions", "TranscribeFunction"),
        ("POST", "/v1/audio/transcriptions/jobs", "TranscribeFunction"),
        ("POST", "/v1/audio/translations", "TranscribeFunction"),
        ("POST", "/v1/audio/translations/jobs", "TranscribeFunction"),
        ("POST", "/v1/uploads", "TranscribeFunction"),
    ]  # the reconciler and the worker have no route: one runs on a schedule, the other on a queue


def test_given_the_repository_template_then_the_reconciler_runs_every_five_minutes(local):
    assert local.schedules() == [("ReconcilerFunction", 300)]
    source, handler = local.function_source("ReconcilerFunction")
    assert (source.parent.name, source.name, handler) == ("reconciler", "app.py", "lambda_handler")
    assert source.is_file()


def test_given_a_template_with_api_and_schedule_events_then_schedules_lists_only_the_schedules(template):
    edited = copy.deepcopy(template)
    events = edited["Resources"]["TranscribeFunction"]["Properties"]["Events"]
    events["Nightly"] = {"Type": "Schedule", "Properties": {"Schedule": "rate(1 day)"}}
    events["Hourly"] = {"Type": "Schedule", "Properties": {"Schedule": " rate(2 hours) "}}
    assert sorted(LocalTemplate(edited).schedules()) == [
        ("ReconcilerFunction", 300),
        ("TranscribeFunction", 7200),
        ("TranscribeFunction", 86400),
    ]


def test_given_a_template_with_a_cron_schedule_then_schedules_refuses_it_rather_than_skip_it(template):
    edited = copy.deepcopy(template)
    edited["Resources"]["ReconcilerFunction"]["Properties"]["Events"]["EveryFiveMinutes"]["Properties"]["Schedule"] = (
        "cron(0/5 * * * ? *)"
    )
    with pytest.raises(ValueError, match="cron"):
        LocalTemplate(edited).schedules()


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(5 minutes)", 300),
        ("rate(1 minute)", 60),
        ("rate(1 hour)", 3600),
        ("rate(3 hours)", 10800),
        ("rate(1 day)", 86400),
        ("rate(7 days)", 604800),
        ("  rate(10 minutes)\n", 600),
    ],
)
def test_given_a_rate_expression_then_its_period_is_in_seconds(expression, seconds):
    assert rate_seconds(expression) == seconds


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "rate()",
        "rate(5)",
        "rate(minutes)",
        "rate(5 weeks)",
        "rate(5 seconds)",
        "rate(-5 minutes)",
        "rate(1.5 hours)",
        "rate 5 minutes",
        "rate(5 minutes",
        "5 minutes",
        "cron(0/5 * * * ? *)",
        "rate(5 minutes) rate(1 hour)",
    ],
)
def test_given_a_bad_or_unsupported_schedule_expression_then_value_error(expression):
    with pytest.raises(ValueError, match="rate"):
        rate_seconds(expression)


def test_given_a_rate_of_zero_then_value_error():
    with pytest.raises(ValueError):
        rate_seconds("rate(0 minutes)")


def test_code_and_layer_locations_exist(local):
    source, handler = local.function_source("TranscribeFunction")
    assert (source.name, handler) == ("app.py", "lambda_handler") and source.is_file()
    paths = local.layer_python_paths()
    assert len(paths) == 1 and paths[0].endswith("layers/common/python")


def test_gateway_responses_are_the_apis(local):
    responses = local.gateway_responses()
    assert {
        "MISSING_AUTHENTICATION_TOKEN",
        "REQUEST_TOO_LARGE",
        "THROTTLED",
        "INTEGRATION_TIMEOUT",
        "DEFAULT_4XX",
        "DEFAULT_5XX",
    } <= set(responses)
    assert responses["MISSING_AUTHENTICATION_TOKEN"]["StatusCode"] == 404


def test_the_audio_bucket_is_versioned_and_takes_browser_uploads_as_the_local_stack_creates_it(local):
    """An upload is its slot's first version (versioning), and the console posts large files straight to the
    bucket from another origin (CORS). The local stack creates the bucket with both, from this template."""
    created: dict[str, dict] = {}

    class RecordingS3:
        def __getattr__(self, operation: str):
            return lambda **arguments: created.setdefault(operation, arguments)

    from local_stack.template import create_buckets

    [bucket] = create_buckets(local, RecordingS3())
    assert created["put_bucket_versioning"] == {
        "Bucket": bucket,
        "VersioningConfiguration": {"Status": "Enabled"},
    }
    [rule] = created["put_bucket_cors"]["CORSConfiguration"]["CORSRules"]
    assert rule["AllowedMethods"] == ["POST"] and rule["AllowedOrigins"] == ["*"]


def test_the_local_stack_takes_parameter_overrides_as_sam_deploy_does_and_refuses_a_name_the_template_lacks():
    from local_stack.__main__ import parameter_overrides

    overrides = parameter_overrides(["JobPartSeconds=60", 'ModelAliases={"a": "whisper-1"}'])
    assert overrides == {"JobPartSeconds": "60", "ModelAliases": '{"a": "whisper-1"}'}
    local = LocalTemplate(load_template(), parameter_overrides=overrides)
    assert local.function_environment("WorkerFunction")["JOB_PART_SECONDS"] == "60"
    with pytest.raises(KeyError, match="JobPartSecond"):
        LocalTemplate(load_template(), parameter_overrides={"JobPartSecond": "60"})
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        parameter_overrides(["JobPartSeconds"])


def test_the_apis_stage_throttle_is_the_operators_to_set_not_a_constant():
    template = load_template()
    [api] = [resource for resource in template["Resources"].values() if resource["Type"] == "AWS::Serverless::Api"]
    [settings] = api["Properties"]["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    assert settings["ThrottlingBurstLimit"] == {"Ref": "ApiThrottlingBurstLimit"}
    parameters = template["Parameters"]
    assert (parameters["ApiThrottlingRateLimit"]["Default"], parameters["ApiThrottlingBurstLimit"]["Default"]) == (
        100,
        200,
    )
