"""Read template.yaml and stand up its resources locally, so the local stack cannot drift from AWS.

Only what the local stack needs is resolved: !Ref, !GetAtt, !Sub and parameter defaults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "template.yaml"


class _CloudFormationLoader(yaml.SafeLoader):
    """A YAML loader that keeps CloudFormation's short-form tags (!Ref X -> {"Ref": "X"})."""


def _construct_intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CloudFormationLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_CloudFormationLoader)  # noqa: S506 - a SafeLoader subclass


@dataclass
class LocalTemplate:
    """The template with local physical names: ``{stack}-{LogicalId}`` for every resource."""

    template: dict[str, Any]
    stack_name: str = "infery-local"
    region: str = "us-east-1"
    parameter_overrides: dict[str, str] = field(default_factory=dict)

    @property
    def resources(self) -> dict[str, Any]:
        return self.template["Resources"]

    def physical_name(self, logical_id: str) -> str:
        return f"{self.stack_name}-{logical_id}"

    def parameter(self, name: str) -> str:
        if name in self.parameter_overrides:
            return self.parameter_overrides[name]
        definition = self.template.get("Parameters", {}).get(name)
        if definition is None:
            raise KeyError(f"template has no parameter {name}")
        if "Default" not in definition:
            return f"local-{name}"  # only the AWS deployment needs these (image, model artifact)
        return str(definition["Default"])

    def _ref(self, name: str) -> str:
        pseudo = {"AWS::StackName": self.stack_name, "AWS::Region": self.region, "AWS::AccountId": "000000000000",
                  "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"}
        if name in pseudo:
            return pseudo[name]
        if name in self.resources:
            return self.physical_name(name)
        return self.parameter(name)

    def _substitute(self, name: str, variables: dict[str, Any]) -> str:
        if name.startswith("!"):  # ${!Literal} is Fn::Sub's escape for a literal ${Literal}
            return "${" + name[1:] + "}"
        if name in variables:
            return str(self.resolve(variables[name]))
        return self._ref(name.split(".")[0])

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            (function, argument), = value.items()
            if function == "Ref":
                return self._ref(argument)
            if function == "Fn::GetAtt":
                return self.physical_name(argument[0])
            if function == "Fn::Sub":
                text, variables = (argument, {}) if isinstance(argument, str) else argument
                return re.sub(r"\$\{([^}]+)\}", lambda m: self._substitute(m.group(1), variables), text)
        if isinstance(value, dict):
            return {key: self.resolve(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        return value

    def function_environment(self, logical_id: str) -> dict[str, str]:
        global_env = self.template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        own_env = self.resources[logical_id]["Properties"].get("Environment", {}).get("Variables", {})
        return {name: str(self.resolve(value)) for name, value in {**global_env, **own_env}.items()}

    def resources_of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {name: body for name, body in self.resources.items() if body["Type"] == resource_type}

    def api_routes(self) -> list[tuple[str, str, str]]:
        """(method, path template, function logical id) for every Api event of every function."""
        routes = []
        for logical_id, function in self.resources_of_type("AWS::Serverless::Function").items():
            for event in function["Properties"].get("Events", {}).values():
                if event["Type"] == "Api":
                    routes.append((event["Properties"]["Method"].upper(), event["Properties"]["Path"], logical_id))
        return routes

    def schedules(self) -> list[tuple[str, float]]:
        """(function logical id, period in seconds) for every Schedule event written as rate(N unit)."""
        schedules = []
        for logical_id, function in self.resources_of_type("AWS::Serverless::Function").items():
            for event in function["Properties"].get("Events", {}).values():
                if event["Type"] == "Schedule":
                    schedules.append((logical_id, rate_seconds(event["Properties"]["Schedule"])))
        return schedules

    def function_source(self, logical_id: str) -> tuple[Path, str]:
        properties = self.resources[logical_id]["Properties"]
        module, handler = properties["Handler"].rsplit(".", 1)
        return TEMPLATE_PATH.parent / properties["CodeUri"] / f"{module}.py", handler

    def layer_python_paths(self) -> list[str]:
        layers = self.resources_of_type("AWS::Serverless::LayerVersion").values()
        return [str(TEMPLATE_PATH.parent / layer["Properties"]["ContentUri"] / "python") for layer in layers]

    def gateway_responses(self) -> dict[str, Any]:
        return self.resources["InferyApi"]["Properties"].get("GatewayResponses", {})


def rate_seconds(expression: str) -> float:
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression.strip())
    if not match:
        raise ValueError(f"only rate(N unit) schedules run locally, not {expression!r}")
    unit_seconds = {"minute": 60, "hour": 3600, "day": 86400}[match.group(2).rstrip("s")]
    return int(match.group(1)) * unit_seconds


def create_tables(local: LocalTemplate, dynamodb_client: Any) -> list[str]:
    """Create every AWS::DynamoDB::Table of the template, as the template defines it."""
    created = []
    for logical_id, body in local.resources_of_type("AWS::DynamoDB::Table").items():
        properties = local.resolve(body["Properties"])
        arguments = {name: properties[name] for name in
                     ("AttributeDefinitions", "KeySchema", "BillingMode", "GlobalSecondaryIndexes",
                      "LocalSecondaryIndexes") if name in properties}
        table_name = properties.get("TableName", local.physical_name(logical_id))
        dynamodb_client.create_table(TableName=table_name, **arguments)
        ttl = properties.get("TimeToLiveSpecification")
        if ttl:
            dynamodb_client.update_time_to_live(TableName=table_name, TimeToLiveSpecification=ttl)
        created.append(table_name)
    return created
