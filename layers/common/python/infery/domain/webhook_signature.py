"""Signed job notifications: ``Infery-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.

The timestamp is inside the signature, so a receiver that checks it (``verify``) refuses replays of
an old notification. Each job has its own secret (``whsec_...``), returned when the job is created.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Infery-Signature"


DEFAULT_TOLERANCE_SECONDS = 300


def sign(body: bytes, secret: str, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    body: bytes,
    signature_header: str,
    secret: str,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when the header signs exactly this body with this secret, within the tolerance of now."""
    try:
        parts = dict(part.split("=", 1) for part in signature_header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(body, secret, timestamp), f"t={timestamp},v1={parts.get('v1', '')}")
