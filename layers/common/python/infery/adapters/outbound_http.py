"""Connections infery opens on a client's behalf (webhooks, audio sent by URL), pinned to checked addresses.

A name is resolved once per connection and every address it has is checked (infery.domain.addresses); the
connection goes to one of those addresses, never to the name, so a DNS answer that changes after the check
(rebinding) cannot point infery inside. The Host header and TLS SNI still carry the name, and the certificate is
verified against it.
"""

from __future__ import annotations

import http.client
import math
import socket
import ssl
from collections.abc import Callable
from typing import Any

from infery.domain.addresses import is_allowed_address
from infery.domain.outbound import OutboundTarget

# socket.getaddrinfo's signature; tests give a stand-in that answers for made-up names
Resolver = Callable[..., list[tuple[Any, ...]]]


class AddressRefused(Exception):
    """The name resolves to an address infery never connects to (internal, or a metadata service)."""


def resolve(target: OutboundTarget, *, allow_private_addresses: bool, resolver: Resolver | None = None) -> list[str]:
    """The host's addresses, looked up once; AddressRefused when any of them is not allowed (a name with one
    internal address among public ones is refused: which one a connection would get is not ours to choose)."""
    lookup = resolver or socket.getaddrinfo  # read at call time: tests patch socket.getaddrinfo
    infos = lookup(target.host, target.port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise OSError("no address")
    if not all(is_allowed_address(address, allow_private_addresses=allow_private_addresses) for address in addresses):
        raise AddressRefused(target.host)
    return addresses


# seconds left of the caller's whole deadline; it raises once none is left
Remaining = Callable[[], float]


def _connect(addresses: list[str], port: int, timeout: float | None, remaining: Remaining | None) -> socket.socket:
    """A connection to one of the addresses that were checked (never to the name: it would be resolved again).

    Each address gets the connect timeout, cut to what is left of the caller's deadline: a name with many addresses
    that never answer cannot stretch one fetch to their number times the timeout."""
    failure: OSError = OSError("no address")
    for address in addresses:
        budget = timeout if remaining is None else min(timeout if timeout is not None else math.inf, remaining())
        try:
            return socket.create_connection((address, port), budget)
        except OSError as exc:
            failure = exc
    raise failure


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(
        self, target: OutboundTarget, addresses: list[str], timeout: float, remaining: Remaining | None
    ) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._addresses = addresses
        self._remaining = remaining

    def connect(self) -> None:
        self.sock = _connect(self._addresses, self.port, self.timeout, self._remaining)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """https to a checked address; the certificate is verified against the name, which SNI carries."""

    def __init__(
        self,
        target: OutboundTarget,
        addresses: list[str],
        timeout: float,
        context: ssl.SSLContext,
        remaining: Remaining | None,
    ) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._addresses = addresses
        self._tls_context = context
        self._remaining = remaining

    def connect(self) -> None:
        sock = _connect(self._addresses, self.port, self.timeout, self._remaining)
        try:
            self.sock = self._tls_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def pinned_connection(
    target: OutboundTarget,
    addresses: list[str],
    timeout: float,
    tls_context: ssl.SSLContext,
    remaining: Remaining | None = None,
) -> http.client.HTTPConnection:
    """An HTTP(S) connection to ``target`` that connects to one of ``addresses`` (checked by ``resolve``); with
    ``remaining``, no connection attempt outlasts the caller's deadline."""
    if target.scheme == "https":
        return _PinnedHTTPSConnection(target, addresses, timeout, tls_context, remaining)
    return _PinnedHTTPConnection(target, addresses, timeout, remaining)
