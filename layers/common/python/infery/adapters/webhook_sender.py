"""Delivering a job's signed notification (the signature: infery.domain.webhook_signature) over HTTPS, with retries,
to the address checked when the job was created and checked again when the name is resolved."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from infery.domain.addresses import is_public_address
from infery.domain.clock import now_iso
from infery.domain.jobs import WebhookAttempt
from infery.domain.webhook_signature import SIGNATURE_HEADER, sign

# waits before each retry: the whole schedule fits well inside the worker's run
RETRY_DELAYS_SECONDS = (1.0, 2.0, 4.0)


# Where a notification may go on AWS: https, to port 443. The local stack allows private addresses (its
# receivers run on loopback, often over http) and with them any scheme of the two and any port.
WEBHOOK_PORT = 443
# What an attempt that reached nothing records: no system text or internal status code reaches the client.
UNREACHABLE = "unreachable"
# A receiver's answer body is read this far and dropped: only its status code counts.
_RESPONSE_READ_LIMIT = 64 * 1024


class _Refused(Exception):
    """This URL is never sent to: recorded once, not retried."""


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # as sent in Host and SNI (IDNA-encoded)
    port: int
    path: str


def _target(url: str, allow_private_addresses: bool, allow_http: bool) -> _Target:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        raise _Refused("refused: the webhook URL cannot be parsed") from None
    if parts.scheme not in ("https", "http") or not host:
        raise _Refused("refused: the webhook URL must be an https:// URL")
    default_port = WEBHOOK_PORT if parts.scheme == "https" else 80
    # where private addresses are allowed (the local stack) any port is: a receiver there listens where it can
    if (parts.scheme == "http" and not allow_http) or (
        not allow_private_addresses and port not in (None, default_port)
    ):
        raise _Refused(f"refused: webhooks are sent {_allowed_targets(allow_private_addresses, allow_http)} only")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(parts.scheme, host, port or default_port, path)


def _allowed_targets(allow_private_addresses: bool, allow_http: bool) -> str:
    if allow_private_addresses:
        return "over https"  # only http is refused then
    if allow_http:
        return f"over https to port {WEBHOOK_PORT} or over http to port 80"
    return f"over https to port {WEBHOOK_PORT}"


def _resolve(target: _Target, allow_private_addresses: bool) -> list[str]:
    """The host's addresses, looked up once for this attempt; refused when any of them is internal."""
    infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise OSError("no address")
    if not allow_private_addresses and not all(is_public_address(address) for address in addresses):
        raise _Refused("refused: the webhook host resolves to an internal address")
    return addresses


def _connect(addresses: list[str], port: int, timeout: float | None) -> socket.socket:
    """A connection to one of the addresses that were checked (never to the name: it would be resolved again)."""
    failure: OSError = OSError("no address")
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            failure = exc
    raise failure


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: _Target, addresses: list[str], timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._addresses = addresses

    def connect(self) -> None:
        self.sock = _connect(self._addresses, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """https to a checked address; the certificate is verified against the name, which SNI carries."""

    def __init__(self, target: _Target, addresses: list[str], timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._addresses = addresses
        self._tls_context = context

    def connect(self) -> None:
        sock = _connect(self._addresses, self.port, self.timeout)
        try:
            self.sock = self._tls_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _post(
    target: _Target,
    addresses: list[str],
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    tls_context: ssl.SSLContext,
) -> int:
    """POST once, following nothing; the receiver's status code."""
    connection: http.client.HTTPConnection
    if target.scheme == "https":
        connection = _PinnedHTTPSConnection(target, addresses, timeout, tls_context)
    else:
        connection = _PinnedHTTPConnection(target, addresses, timeout)
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
