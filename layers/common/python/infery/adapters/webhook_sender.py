"""Delivering a job's signed notification (the signature: infery.domain.webhook_signature) over HTTPS, with retries,
to the address checked when the job was created and checked again when the name is resolved."""

from __future__ import annotations

import http.client
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from infery.adapters.outbound_http import AddressRefused, pinned_connection, resolve
from infery.domain.clock import now_iso
from infery.domain.jobs import WebhookAttempt
from infery.domain.outbound import OutboundRefused, OutboundTarget, Refusal, allowed_targets, outbound_target
from infery.domain.webhook_signature import SIGNATURE_HEADER, sign

# waits before each retry: the whole schedule fits well inside the worker's run
RETRY_DELAYS_SECONDS = (1.0, 2.0, 4.0)


# What an attempt that reached nothing records: no system text or internal status code reaches the client.
UNREACHABLE = "unreachable"
# A receiver's answer body is read this far and dropped: only its status code counts.
_RESPONSE_READ_LIMIT = 64 * 1024


class _Refused(Exception):
    """This URL is never sent to: recorded once, not retried."""


def _target(url: str, allow_private_addresses: bool, allow_http: bool) -> OutboundTarget:
    try:
        return outbound_target(url, allow_private_addresses=allow_private_addresses, allow_http=allow_http)
    except OutboundRefused as refused:
        if refused.refusal is Refusal.UNPARSABLE:
            raise _Refused("refused: the webhook URL cannot be parsed") from None
        if refused.refusal is Refusal.SCHEME and not url.lower().startswith("http://"):
            raise _Refused("refused: the webhook URL must be an https:// URL") from None
        where = allowed_targets(allow_private_addresses=allow_private_addresses, allow_http=allow_http)
        raise _Refused(f"refused: webhooks are sent {where} only") from None


def _resolve(target: OutboundTarget, allow_private_addresses: bool) -> list[str]:
    """The host's addresses, looked up once for this attempt; refused when any of them is internal."""
    try:
        return resolve(target, allow_private_addresses=allow_private_addresses)
    except AddressRefused:
        raise _Refused("refused: the webhook host resolves to an internal address") from None


def _post(
    target: OutboundTarget,
    addresses: list[str],
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    tls_context: ssl.SSLContext,
) -> int:
    """POST once, following nothing; the receiver's status code."""
    connection = pinned_connection(target, addresses, timeout, tls_context)
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(_RESPONSE_READ_LIMIT)
        return response.status
    finally:
        connection.close()


def deliver(
    url: str,
    body: bytes,
    secret: str,
    *,
    record: Callable[[WebhookAttempt], None],
    sleep: Callable[[float], None] = time.sleep,
    timeout_seconds: float = 10.0,
    allow_private_addresses: bool = False,
    allow_http: bool = False,
    tls_context: ssl.SSLContext | None = None,
) -> bool:
    """POST the notification, retrying with backoff on errors and non-2xx answers; every attempt is recorded.

    Each attempt resolves the host once and connects to an address it checked (so a DNS answer that changes
    after the check cannot point the worker inside); redirects are not followed (a 3xx is the receiver's
    answer, like any other non-2xx). Only https to port 443 of a host whose every address is public is sent to,
    unless ``allow_private_addresses`` (internal addresses, on any port) or ``allow_http`` (http:// URLs, to port
    80) say otherwise: the local stack allows both.
    """
    context = tls_context or ssl.create_default_context()
    try:
        target = _target(url, allow_private_addresses, allow_http)
        for delay in (0.0, *RETRY_DELAYS_SECONDS):
            if delay:
                sleep(delay)
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "infery-webhooks/1",
                SIGNATURE_HEADER: sign(body, secret, int(time.time())),
            }
            try:
                status = _post(
                    target, _resolve(target, allow_private_addresses), body, headers, timeout_seconds, context
                )
            except (OSError, http.client.HTTPException, UnicodeError, ValueError):
                # refused, reset, timed out, TLS failed, no such name: said the same way whatever answered
                record(WebhookAttempt(at=now_iso(), error=UNREACHABLE))
                continue
            record(WebhookAttempt(at=now_iso(), status_code=status))
            if 200 <= status < 300:
                return True
    except _Refused as refusal:
        record(WebhookAttempt(at=now_iso(), error=str(refusal)))
    return False


@dataclass(frozen=True)
class HttpWebhookSender:
    """The job use case's webhook sender (its ``WebhookSender`` port): ``deliver`` under this deployment's rules for
    private addresses and plain http."""

    allow_private_addresses: bool = False
    allow_http: bool = False
    sleep: Callable[[float], None] = time.sleep

    def send(self, url: str, body: bytes, secret: str, *, record: Callable[[WebhookAttempt], None]) -> bool:
        return deliver(
            url,
            body,
            secret,
            record=record,
            sleep=self.sleep,
            allow_private_addresses=self.allow_private_addresses,
            allow_http=self.allow_http,
        )
