"""Logger and metrics shared by every function (powertools reads POWERTOOLS_* settings from the environment)."""

from aws_lambda_powertools import Logger, Metrics

logger = Logger(service="infery")
metrics = Metrics(namespace="Infery", service="infery")
