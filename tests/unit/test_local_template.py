"""local_stack.template: template.yaml read with CloudFormation's tags and resolved to local names."""

from __future__ import annotations

import pytest

from local_stack.template import TEMPLATE_PATH, LocalTemplate, load_template


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template()


@pytest.fixture
def local(template) -> LocalTemplate:
    return LocalTemplate(template)


def test_the_repository_template_is_loaded(template):
    assert TEMPLATE_PATH.name == "template.yaml" and TEMPLATE_PATH.is_file()
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    assert {"InferyApi", "TranscribeFunction", "KeysTable", "LedgerTable", "WhisperEndpoint"} <= set(
        template["Resources"])


def test_short_form_tags_become_intrinsic_functions(template):
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["KEYS_TABLE_NAME"] == {"Ref": "KeysTable"}
    assert variables["DEFAULT_MODEL"] == {"Ref": "ModelName"}
    assert variables["SAGEMAKER_ENDPOINT_NAME"] == {"Fn::GetAtt": ["WhisperEndpoint", "EndpointName"]}
    assert template["Outputs"]["ApiBaseUrl"]["Value"] == {
        "Fn::Sub": "https://${InferyApi}.execute-api.${AWS::Region}.amazonaws.com/prod/v1"}
    # sequence and nested tags keep their structure
    assert template["Resources"]["WhisperModelRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0][
        "Resource"]["Fn::Sub"][1]["Path"] == {"Fn::Select": [1, {"Fn::Split": ["s3://", {"Ref": "ModelDataUrl"}]}]}


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
    assert local.resolve({"Ref": "AWS::AccountId"}) == "000000000000"


def test_sub_replaces_pseudo_parameters_resources_and_attributes(local):
    assert local.resolve({"Fn::Sub": "${AWS::StackName}-uploads"}) == "infery-local-uploads"
    assert local.resolve({"Fn::Sub": "${AWS::StackName}/${KeysTable}"}) == "infery-local/infery-local-KeysTable"
    assert local.resolve({"Fn::Sub": "${WhisperEndpoint.EndpointName}"}) == "infery-local-WhisperEndpoint"
    assert local.resolve({"Fn::Sub": "https://${InferyApi}.execute-api.${AWS::Region}.amazonaws.com/prod/v1"}) == (
        "https://infery-local-InferyApi.execute-api.us-east-1.amazonaws.com/prod/v1")


def test_resolve_walks_nested_values_and_keeps_literals(local):
    assert local.resolve({"TableName": {"Ref": "KeysTable"}, "Tags": [{"Value": {"Ref": "LogLevel"}}, 3, None]}) == {
        "TableName": "infery-local-KeysTable", "Tags": [{"Value": "INFO"}, 3, None]}
    assert local.resolve("plain") == "plain"


def test_an_unknown_ref_is_a_key_error(local):
    with pytest.raises(KeyError, match="NoSuchThing"):
        local.resolve({"Ref": "NoSuchThing"})


@pytest.mark.parametrize(("sub", "expected"), [
    (["${Greeting}-${AWS::StackName}", {"Greeting": "hi"}], "hi-infery-local"),
    ("${!Literal}-${AWS::StackName}", "${Literal}-infery-local"),
], ids=["variable-map", "escaped-literal"])
def test_sub_takes_its_variable_map_and_literal_escapes(local, sub, expected):
    assert local.resolve({"Fn::Sub": sub}) == expected


def test_the_transcribe_functions_environment_is_resolved_from_the_template(template):
    environment = LocalTemplate(template, parameter_overrides={"ModelName": "whisper-tiny.en"}).function_environment(
        "TranscribeFunction")
    assert environment["KEYS_TABLE_NAME"] == "infery-local-KeysTable"
    assert environment["LEDGER_TABLE_NAME"] == "infery-local-LedgerTable"
    assert environment["SAGEMAKER_ENDPOINT_NAME"] == "infery-local-WhisperEndpoint"
    assert environment["DEFAULT_MODEL"] == "whisper-tiny.en"
    assert (environment["SECONDS_PER_CREDIT"], environment["MIN_CREDITS_PER_REQUEST"]) == ("5", "1")
    assert environment["ENDPOINT_TIMEOUT_SECONDS"] == "27"
    assert all(isinstance(value, str) and "Ref" not in value and "Fn::" not in value
               for value in environment.values())


def test_the_api_routes_are_the_functions_api_events(local):
    assert sorted(local.api_routes()) == [
        ("GET", "/v1/models", "TranscribeFunction"),
        ("GET", "/v1/models/{model_id}", "TranscribeFunction"),
        ("POST", "/v1/audio/transcriptions", "TranscribeFunction"),
        ("POST", "/v1/audio/translations", "TranscribeFunction"),
    ]


def test_code_and_layer_locations_exist(local):
    source, handler = local.function_source("TranscribeFunction")
    assert (source.name, handler) == ("app.py", "lambda_handler") and source.is_file()
    paths = local.layer_python_paths()
    assert len(paths) == 1 and paths[0].endswith("layers/common/python")


def test_gateway_responses_are_the_apis(local):
    responses = local.gateway_responses()
    assert {"MISSING_AUTHENTICATION_TOKEN", "REQUEST_TOO_LARGE", "THROTTLED", "INTEGRATION_TIMEOUT", "DEFAULT_4XX",
            "DEFAULT_5XX"} <= set(responses)
    assert responses["MISSING_AUTHENTICATION_TOKEN"]["StatusCode"] == 404
