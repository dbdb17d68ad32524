"""Where infery may connect on a client's behalf (a webhook's receiver, the server of audio sent by URL): the rules
on a URL's scheme and port, one set for both. Which addresses are allowed: infery.domain.addresses; the connection
itself, pinned to the checked address: infery.adapters.outbound_http."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from enum import StrEnum

# On AWS only https to its port is connected to; the local stack allows private addresses (its servers run on
# loopback, often over http) and with them any port.
HTTPS_PORT = 443
HTTP_PORT = 80


class Refusal(StrEnum):
    """Why a URL is never connected to."""

    UNPARSABLE = "unparsable"
    SCHEME = "scheme"  # not http(s), or http where only https is allowed, or no host
    PORT = "port"


class OutboundRefused(ValueError):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal


@dataclass(frozen=True)
class OutboundTarget:
    scheme: str
    host: str  # as sent in Host and SNI (IDNA-encoded)
    port: int
    path: str  # with its query, as sent in the request line

    @property
    def default_port(self) -> bool:
        return self.port == (HTTPS_PORT if self.scheme == "https" else HTTP_PORT)


def outbound_target(url: str, *, allow_private_addresses: bool, allow_http: bool) -> OutboundTarget:
    """The URL's scheme, host, port and path, or OutboundRefused when the deployment never connects there: https
    to port 443, unless ``allow_http`` (http:// to port 80 too) or ``allow_private_addresses`` (any port)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        raise OutboundRefused(Refusal.UNPARSABLE) from None
    if parts.scheme not in ("https", "http") or not host or (parts.scheme == "http" and not allow_http):
        raise OutboundRefused(Refusal.SCHEME)
    default_port = HTTPS_PORT if parts.scheme == "https" else HTTP_PORT
    # where private addresses are allowed (the local stack) any port is: a server there listens where it can
    if not allow_private_addresses and port not in (None, default_port):
        raise OutboundRefused(Refusal.PORT)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return OutboundTarget(parts.scheme, host, port or default_port, path)


def allowed_targets(*, allow_private_addresses: bool, allow_http: bool) -> str:
    """Where connections go, in words: "over https to port 443", ..."""
    if allow_private_addresses:
        return "over http or https" if allow_http else "over https"
    if allow_http:
        return f"over https to port {HTTPS_PORT} or over http to port {HTTP_PORT}"
    return f"over https to port {HTTPS_PORT}"
