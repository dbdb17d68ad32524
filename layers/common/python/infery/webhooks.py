"""Signed job notifications: ``Infery-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.

The timestamp is inside the signature, so a receiver that checks it (``verify``) refuses replays of
an old notification. Each job has its own secret (``whsec_...``), returned when the job is created.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from .jobs import WebhookAttempt
from .keys import now_iso

SIGNATURE_HEADER = "Infery-Signature"
DEFAULT_TOLERANCE_SECONDS = 300
# waits before each retry: the whole schedule fits well inside the worker's run
RETRY_DELAYS_SECONDS = (1.0, 2.0, 4.0)


def sign(body: bytes, secret: str, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(body: bytes, signature_header: str, secret: str, *, tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
           now: float | None = None) -> bool:
    """True when the header signs exactly this body with this secret, within the tolerance of now."""
    try:
        parts = dict(part.split("=", 1) for part in signature_header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(body, secret, timestamp), f"t={timestamp},v1={parts.get('v1', '')}")


def private_address_of(url: str) -> str | None:
    """The first loopback, private, link-local or otherwise internal address the URL's host resolves to, if any.

    Webhooks are sent from inside our network: without this check a job could make the worker POST to
    internal services (the instance metadata endpoint 169.254.169.254, a VPC database's admin port ...).
    """
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        return None  # unresolvable: the delivery attempt itself reports it
    for address in sorted(addresses):
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not ip.is_global:
            return address
    return None


def deliver(url: str, body: bytes, secret: str, *, record: Callable[[WebhookAttempt], None],
            sleep: Callable[[float], None] = time.sleep, timeout_seconds: float = 10.0,
            allow_private_addresses: bool = False) -> bool:
    """POST the notification, retrying with backoff on errors and non-2xx answers; every attempt is recorded."""
    internal = None if allow_private_addresses else private_address_of(url)
    if internal is not None:
        record(WebhookAttempt(at=now_iso(), error=f"refused: the webhook host resolves to an internal address "
                                                  f"({internal})"))
        return False
    for delay in (0.0, *RETRY_DELAYS_SECONDS):
        if delay:
            sleep(delay)
        request = urllib.request.Request(url, data=body, method="POST", headers={  # noqa: S310 - http(s) only
            "Content-Type": "application/json", "User-Agent": "infery-webhooks/1",
            SIGNATURE_HEADER: sign(body, secret, int(time.time()))})
        try:
            with urllib.request.urlopen(request, timeout=timeout_seconds) as response:  # noqa: S310
                record(WebhookAttempt(at=now_iso(), status_code=response.status))
                return True
        except urllib.error.HTTPError as exc:
            record(WebhookAttempt(at=now_iso(), status_code=exc.code))
        except (urllib.error.URLError, OSError) as exc:
            record(WebhookAttempt(at=now_iso(), error=str(getattr(exc, "reason", exc))[:200]))
    return False
