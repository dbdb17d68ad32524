"""The outside world behind the use cases' ports: DynamoDB stores, the S3 bucket, the SQS queue, SageMaker's
real-time and asynchronous endpoints, and webhook delivery over HTTPS.

Adapters import the domain (the entities they store); nothing in the domain or the use cases imports them. The
wiring (``infery.wiring``) is the one place that builds them.
"""
