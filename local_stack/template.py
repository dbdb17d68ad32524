"""Read template.yaml and stand up its resources locally, so the local stack cannot drift from AWS.

Only what the local stack needs is resolved: !Ref, !GetAtt, !Sub and parameter defaults.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# moto's default account: ARNs we build must name the account moto files its resources under
ACCOUNT_ID = "123456789012"
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

    def __post_init__(self) -> None:
        unknown = sorted(set(self.parameter_overrides) - set(self.template.get("Parameters", {})))
        if unknown:
            raise KeyError(f"template has no parameter {', '.join(unknown)}")

    @property
    def resources(self) -> dict[str, Any]:
        return self.template["Resources"]

    def physical_name(self, logical_id: str) -> str:
        name = f"{self.stack_name}-{logical_id}"
        # bucket names are lower case; CloudFormation generates them so too
        return name.lower() if self.resources.get(logical_id, {}).get("Type") == "AWS::S3::Bucket" else name

    def _resource_ref(self, logical_id: str) -> str:
        """What Ref gives for a resource: its name, except a queue's URL (in AWS's form; moto reads the name)."""
        name = self.physical_name(logical_id)
        if self.resources[logical_id]["Type"] == "AWS::SQS::Queue":
            return f"https://sqs.{self.region}.amazonaws.com/{ACCOUNT_ID}/{name}"
        if self.resources[logical_id]["Type"] == "AWS::SNS::Topic":
            return f"arn:aws:sns:{self.region}:{ACCOUNT_ID}:{name}"
        return name

    def get_att(self, logical_id: str, attribute: str) -> str:
        name = self.physical_name(logical_id)
        resource_type = self.resources[logical_id]["Type"]
        if attribute == "Arn" and resource_type == "AWS::SQS::Queue":
            return f"arn:aws:sqs:{self.region}:{ACCOUNT_ID}:{name}"
        if attribute == "Arn" and resource_type == "AWS::S3::Bucket":
            return f"arn:aws:s3:::{name}"
        return name

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
        pseudo = {
            "AWS::StackName": self.stack_name,
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.resources:
            return self._resource_ref(name)
        return self.parameter(name)

    def _substitute(self, name: str, variables: dict[str, Any]) -> str:
        if name.startswith("!"):  # ${!Literal} is Fn::Sub's escape for a literal ${Literal}
            return "${" + name[1:] + "}"
        if name in variables:
            return str(self.resolve(variables[name]))
        if "." in name and name.split(".")[0] in self.resources:
            return self.get_att(*name.split(".", 1))
        return self._ref(name)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            ((function, argument),) = value.items()
            if function == "Ref":
                return self._ref(argument)
            if function == "Fn::GetAtt":
                logical_id, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return self.get_att(logical_id, attribute)
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

    def queue_subscriptions(self) -> list[tuple[str, str, int]]:
        """(function logical id, queue name, batch size) for every SQS event of every function."""
        subscriptions = []
        for logical_id, function in self.resources_of_type("AWS::Serverless::Function").items():
            for event in function["Properties"].get("Events", {}).values():
                if event["Type"] == "SQS":
                    queue_arn = self.resolve(event["Properties"]["Queue"])
                    subscriptions.append(
                        (logical_id, queue_arn.rsplit(":", 1)[1], int(event["Properties"].get("BatchSize", 10)))
                    )
        return subscriptions

    def function_source(self, logical_id: str) -> tuple[Path, str]:
        properties = self.resources[logical_id]["Properties"]
        module, handler = properties["Handler"].rsplit(".", 1)
        return TEMPLATE_PATH.parent / properties["CodeUri"] / f"{module}.py", handler

    def layer_python_paths(self) -> list[str]:
        """Where each layer's Python code is (Lambda's /opt/python): a layer that `sam build` builds (a BuildMethod)
        has it at its ContentUri, and the build puts it in python/; a layer taken as it is has its own python/."""
        paths = []
        for layer in self.resources_of_type("AWS::Serverless::LayerVersion").values():
            content = TEMPLATE_PATH.parent / layer["Properties"]["ContentUri"]
            paths.append(str(content if layer.get("Metadata", {}).get("BuildMethod") else content / "python"))
        return paths

    def gateway_responses(self) -> dict[str, Any]:
        return self.resources["InferyApi"]["Properties"].get("GatewayResponses", {})


def rate_seconds(expression: str) -> float:
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression.strip())
    if not match:
        raise ValueError(f"only rate(N unit) schedules run locally, not {expression!r}")
    if int(match.group(1)) < 1:
        raise ValueError(f"a rate must be at least 1, not {expression!r}")
    unit_seconds = {"minute": 60, "hour": 3600, "day": 86400}[match.group(2).rstrip("s")]
    return int(match.group(1)) * unit_seconds


def create_tables(local: LocalTemplate, dynamodb_client: Any) -> list[str]:
    """Create every AWS::DynamoDB::Table of the template, as the template defines it."""
    created = []
    for logical_id, body in local.resources_of_type("AWS::DynamoDB::Table").items():
        properties = local.resolve(body["Properties"])
        arguments = {
            name: properties[name]
            for name in (
                "AttributeDefinitions",
                "KeySchema",
                "BillingMode",
                "GlobalSecondaryIndexes",
                "LocalSecondaryIndexes",
            )
            if name in properties
        }
        table_name = properties.get("TableName", local.physical_name(logical_id))
        dynamodb_client.create_table(TableName=table_name, **arguments)
        ttl = properties.get("TimeToLiveSpecification")
        if ttl:
            dynamodb_client.update_time_to_live(TableName=table_name, TimeToLiveSpecification=ttl)
        created.append(table_name)
    return created


def create_queues(local: LocalTemplate, sqs_client: Any) -> list[str]:
    """Create every AWS::SQS::Queue, dead-letter queues first so redrive policies can name them."""
    queues = local.resources_of_type("AWS::SQS::Queue")
    ordered = sorted(queues, key=lambda logical_id: "RedrivePolicy" in queues[logical_id].get("Properties", {}))
    created = []
    for logical_id in ordered:
        properties = local.resolve(queues[logical_id].get("Properties", {}))
        attributes = {
            name: str(properties[name])
            for name in ("VisibilityTimeout", "MessageRetentionPeriod")
            if name in properties
        }
        if "RedrivePolicy" in properties:
            attributes["RedrivePolicy"] = json.dumps(properties["RedrivePolicy"])
        sqs_client.create_queue(QueueName=local.physical_name(logical_id), Attributes=attributes)
        created.append(local.physical_name(logical_id))
    return created


def create_topics(local: LocalTemplate, sns_client: Any) -> list[str]:
    """Create every AWS::SNS::Topic and its AWS::SNS::Subscription to a queue (moto delivers to SQS)."""
    created = []
    for logical_id in local.resources_of_type("AWS::SNS::Topic"):
        sns_client.create_topic(Name=local.physical_name(logical_id))
        created.append(local.physical_name(logical_id))
    for body in local.resources_of_type("AWS::SNS::Subscription").values():
        properties = local.resolve(body["Properties"])
        attributes = {"RawMessageDelivery": "true"} if properties.get("RawMessageDelivery") in (True, "true") else {}
        sns_client.subscribe(
            TopicArn=properties["TopicArn"],
            Protocol=properties["Protocol"],
            Endpoint=properties["Endpoint"],
            Attributes=attributes,
        )
    return created


@dataclass(frozen=True)
class AsyncEndpointConfig:
    """An asynchronous SageMaker endpoint as its EndpointConfig declares it."""

    endpoint_name: str
    output_path: str
    failure_path: str
    success_topic: str | None
    error_topic: str | None
    max_concurrent_invocations: int


def async_endpoints(local: LocalTemplate) -> list[AsyncEndpointConfig]:
    endpoints = []
    for logical_id, body in local.resources_of_type("AWS::SageMaker::Endpoint").items():
        config_id = body["Properties"]["EndpointConfigName"]["Fn::GetAtt"][0]
        config = local.resolve(local.resources[config_id]["Properties"]).get("AsyncInferenceConfig")
        if not config:
            continue
        output = config["OutputConfig"]
        notifications = output.get("NotificationConfig", {})
        endpoints.append(
            AsyncEndpointConfig(
                endpoint_name=local.physical_name(logical_id),
                output_path=output["S3OutputPath"],
                failure_path=output.get("S3FailurePath", output["S3OutputPath"]),
                success_topic=notifications.get("SuccessTopic"),
                error_topic=notifications.get("ErrorTopic"),
                max_concurrent_invocations=int(
                    config.get("ClientConfig", {}).get("MaxConcurrentInvocationsPerInstance", 4)
                ),
            )
        )
    return endpoints


def create_buckets(local: LocalTemplate, s3_client: Any) -> list[str]:
    """Create every AWS::S3::Bucket with its versioning, CORS and lifecycle rules and its queue notifications."""
    created = []
    for logical_id, body in local.resources_of_type("AWS::S3::Bucket").items():
        properties = local.resolve(body.get("Properties", {}))
        name = local.physical_name(logical_id)
        s3_client.create_bucket(Bucket=name)
        if "VersioningConfiguration" in properties:
            s3_client.put_bucket_versioning(
                Bucket=name, VersioningConfiguration={"Status": properties["VersioningConfiguration"]["Status"]}
            )
        cors_rules = properties.get("CorsConfiguration", {}).get("CorsRules", [])
        if cors_rules:
            s3_client.put_bucket_cors(
                Bucket=name,
                CORSConfiguration={
                    "CORSRules": [
                        {
                            "AllowedMethods": rule["AllowedMethods"],
                            "AllowedOrigins": rule["AllowedOrigins"],
                            "AllowedHeaders": rule.get("AllowedHeaders", []),
                            "MaxAgeSeconds": rule.get("MaxAge", 0),
                        }
                        for rule in cors_rules
                    ]
                },
            )
        rules = properties.get("LifecycleConfiguration", {}).get("Rules", [])
        if rules:
            s3_client.put_bucket_lifecycle_configuration(
                Bucket=name,
                LifecycleConfiguration={
                    "Rules": [
                        {
                            "ID": rule["Id"],
                            "Filter": {"Prefix": rule.get("Prefix", "")},
                            "Status": rule["Status"],
                            "Expiration": {"Days": rule["ExpirationInDays"]},
                        }
                        for rule in rules
                    ]
                },
            )
        queue_configurations = properties.get("NotificationConfiguration", {}).get("QueueConfigurations", [])
        if queue_configurations:
            s3_client.put_bucket_notification_configuration(
                Bucket=name,
                NotificationConfiguration={
                    "QueueConfigurations": [
                        {
                            "QueueArn": configuration["Queue"],
                            "Events": [configuration["Event"]],
                            **(
                                {"Filter": {"Key": {"FilterRules": configuration["Filter"]["S3Key"]["Rules"]}}}
                                if "Filter" in configuration
                                else {}
                            ),
                        }
                        for configuration in queue_configurations
                    ]
                },
            )
        created.append(name)
    return created
