"""Lambda SnapStart in template.yaml: on the API function's published versions, behind the alias API Gateway invokes,
with a parameter that turns it off, within SnapStart's limits; and a version published whenever a parameter the
function runs with changes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from local_stack.template import load_template

# Lambda's limit on a version's description
DESCRIPTION_MAX_CHARACTERS = 256
# properties of the function that are not part of a published version: a version does not need to change with them
UNVERSIONED_PROPERTIES = {"ReservedConcurrentExecutions", "Events", "Policies", "Role"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def api_function(template) -> dict[str, Any]:
    return template["Resources"]["TranscribeFunction"]["Properties"]


def referenced_parameters(value: Any, parameters: set[str]) -> set[str]:
    """The template parameters ``value`` refers to, with Ref or in a Sub string."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and inner in parameters:
                found.add(inner)
            elif key == "Fn::Sub":
                text = inner if isinstance(inner, str) else inner[0]
                found |= set(re.findall(r"\$\{([A-Za-z0-9]+)\}", text)) & parameters
                if not isinstance(inner, str):
                    found |= referenced_parameters(inner[1], parameters)
            else:
                found |= referenced_parameters(inner, parameters)
    elif isinstance(value, list):
        for inner in value:
            found |= referenced_parameters(inner, parameters)
    return found


def test_the_api_function_has_snapstart_on_its_published_versions_behind_an_alias(api_function):
    assert api_function["AutoPublishAlias"] == "live"
    assert api_function["AutoPublishAliasAllProperties"] is True
    assert api_function["SnapStart"] == {"ApplyOn": {"Fn::If": ["SnapStartOn", "PublishedVersions", "None"]}}


def test_a_parameter_turns_snapstart_off(template):
    parameter = template["Parameters"]["SnapStart"]
    assert parameter["AllowedValues"] == ["Enabled", "Disabled"] and parameter["Default"] == "Enabled"
    assert template["Conditions"]["SnapStartOn"] == {"Fn::Equals": [{"Ref": "SnapStart"}, "Enabled"]}


def test_only_the_api_function_has_snapstart(template):
    """The worker and the reconciler run jobs and schedules: nobody waits on their cold start, so SnapStart's
    charges would buy nothing there."""
    functions = {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    assert set(functions) == {"TranscribeFunction", "WorkerFunction", "ReconcilerFunction"}
    assert [name for name, properties in functions.items() if "SnapStart" in properties] == ["TranscribeFunction"]
    assert "SnapStart" not in template["Globals"]["Function"]


def test_snapstarts_limits_hold_for_the_api_function(template, api_function):
    """No provisioned concurrency, no EFS, at most 512 MB of ephemeral storage, a zip package on Python 3.12+."""
    settings = {**template["Globals"]["Function"], **api_function}
    assert "ProvisionedConcurrencyConfig" not in settings and "FileSystemConfigs" not in settings
    assert settings.get("EphemeralStorage", {"Size": 512})["Size"] <= 512
    assert settings.get("PackageType", "Zip") == "Zip"
    runtime = re.fullmatch(r"python3\.(\d+)", settings["Runtime"])
    assert runtime and int(runtime.group(1)) >= 12


def test_every_parameter_the_api_function_runs_with_is_in_its_versions_description(template, api_function):
    """SAM publishes a version when the function's properties change, not when a parameter they refer to does: the
    version's description names the values, so that a parameter's new value publishes a version the alias moves to."""
    parameters = set(template["Parameters"])
    versioned = {name: value for name, value in api_function.items() if name not in UNVERSIONED_PROPERTIES}
    runs_with = referenced_parameters([template["Globals"]["Function"], versioned], parameters) - {"SnapStart"}
    description = api_function["VersionDescription"]
    assert set(description) == {"Fn::Sub"}
    assert referenced_parameters(description, parameters) == runs_with | {"SnapStart"}


def test_the_versions_description_fits_lambdas_limit(template, api_function):
    """With every parameter at its default and per-model prices for two models, under Lambda's 256 characters."""
    values = {name: str(parameter.get("Default", "")) for name, parameter in template["Parameters"].items()}
    values["ModelPrices"] = (
        '{"whisper-large-v3": {"seconds_per_credit": 2.5, "min_credits_per_request": 2}, '
        '"whisper-1": {"seconds_per_credit": 5}}'
    )
    description = re.sub(
        r"\$\{(\w+)\}", lambda match: values[match.group(1)], api_function["VersionDescription"]["Fn::Sub"]
    )
    assert len(description) <= DESCRIPTION_MAX_CHARACTERS, (len(description), description)
