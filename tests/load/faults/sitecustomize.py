"""Fault injection for the load test: DynamoDB throttling in the local stack's handlers.

The load test starts the local stack with this folder on PYTHONPATH, so Python imports this module at start-up in
the stack's process and in the handler processes it starts. While the file named by INFERY_FAULT_THROTTLE_FILE exists,
each DynamoDB request is answered, with probability INFERY_FAULT_THROTTLE_RATE, by DynamoDB's own throttling error
(HTTP 400, ThrottlingException) before it leaves the process: botocore retries it as it would on AWS, and what still
fails reaches the code as a ClientError. Each throttled call adds a byte to INFERY_FAULT_THROTTLE_FILE + ".hits".
Without the variables this module does nothing.
"""

from __future__ import annotations

import os
import random

_FLAG = os.environ.get("INFERY_FAULT_THROTTLE_FILE")
_RATE = float(os.environ.get("INFERY_FAULT_THROTTLE_RATE", "0") or 0)
_BODY = (
    b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException",'
    b'"message":"Rate of requests exceeds the allowed throughput."}'
)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: object):
        yield self._body


def _throttle(request, **_: object):
    if not os.path.exists(_FLAG) or random.random() >= _RATE:  # noqa: S311 - fault injection, not security
        return None
    from botocore.awsrequest import AWSResponse

    with open(_FLAG + ".hits", "ab") as hits:  # one byte per throttled call, for the load test's figures
        hits.write(b".")

    return AWSResponse(
        request.url,
        400,
        {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "throttled-by-the-load-test"},
        _Raw(_BODY),
    )


def _install() -> None:
    import botocore.session

    create_client = botocore.session.Session.create_client

    def create_client_with_faults(self, service_name, *args, **kwargs):
        client = create_client(self, service_name, *args, **kwargs)
        if service_name == "dynamodb":
            client.meta.events.register("before-send.dynamodb", _throttle)
        return client

    botocore.session.Session.create_client = create_client_with_faults


if _FLAG and _RATE > 0:
    _install()
