"""Fetching audio sent by URL, under the same address rules as webhooks (infery.adapters.outbound_http).

Every hop (the URL sent, and each of at most MAX_REDIRECTS redirects) is checked again: its scheme and port, and
every address its name resolves to, once; the connection goes to a checked address. The body is counted as it
arrives and refused past the limit, and read to the end of the connection rather than to its Content-Length: a
Content-Length that is missing or says less than is sent changes nothing. One deadline bounds the whole fetch,
connections and redirects included.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from infery.adapters.outbound_http import AddressRefused, Resolver, pinned_connection, resolve
from infery.domain import audio_url
from infery.domain.outbound import OutboundRefused, OutboundTarget, outbound_target

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024
_USER_AGENT = "infery-audio-fetch/1"


class _TooSlow(Exception):
    pass


def _shut(sock: socket.socket, expired: threading.Event) -> None:
    expired.set()
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class HttpAudioFetcher:
    """The use cases' ``AudioFetcher`` port: ``fetch(url, max_bytes=...)`` is the body's bytes, or one of the
    errors of infery.domain.audio_url; ``fetch_into(url, write, max_bytes=...)`` hands the body to ``write`` as it
    arrives, a chunk at a time (a job's file, never held whole)."""

    allow_private_addresses: bool = False
    allow_http: bool = False
    # the connection's and each read's limit, and the whole fetch's
    connect_timeout_seconds: float = 5.0
    timeout_seconds: float = 20.0
    resolver: Resolver | None = None
    tls_context: ssl.SSLContext | None = None
    clock: Callable[[], float] = field(default=time.monotonic)

    def fetch(self, url: str, *, max_bytes: int) -> bytes:
        received = bytearray()
        self.fetch_into(url, received.extend, max_bytes=max_bytes)
        return bytes(received)

    def fetch_into(self, url: str, write: Callable[[bytes], object], *, max_bytes: int) -> int:
        """The body's size; its bytes went to ``write`` in order. An error ``write`` raises ends the fetch as it is;
        the deadline counts ``write``'s time too."""
        deadline = self.clock() + self.timeout_seconds
        context = self.tls_context or ssl.create_default_context()
        try:
            for _hop in range(audio_url.MAX_REDIRECTS + 1):
                target = self._target(url)
                try:
                    addresses = resolve(
                        target, allow_private_addresses=self.allow_private_addresses, resolver=self.resolver
                    )
                except AddressRefused:
                    raise audio_url.address_not_allowed(target.host) from None
                except socket.gaierror:
                    raise audio_url.unreachable(f"its host {target.host!r} was not found") from None
                location = self._get(target, addresses, deadline, context, max_bytes, write)
                if isinstance(location, int):
                    return location
                url = urllib.parse.urljoin(url, location)
            raise audio_url.too_many_redirects()
        except (_TooSlow, TimeoutError):
            raise audio_url.too_slow(self.timeout_seconds) from None
        except ssl.SSLError:
            raise audio_url.unreachable("its TLS certificate or handshake was refused") from None
        except (OSError, http.client.HTTPException, UnicodeError, ValueError):
            # refused, reset, malformed: said the same way whatever answered (nothing of an inside server leaks)
            raise audio_url.unreachable("the connection failed or the answer was not valid HTTP") from None

    def _target(self, url: str) -> OutboundTarget:
        try:
            return outbound_target(
                url, allow_private_addresses=self.allow_private_addresses, allow_http=self.allow_http
            )
        except OutboundRefused as refused:
            raise audio_url.refused_target(
                refused.refusal, allow_private_addresses=self.allow_private_addresses, allow_http=self.allow_http
            ) from None

    def _remaining(self, deadline: float) -> float:
        remaining = deadline - self.clock()
        if remaining <= 0:
            raise _TooSlow
        return remaining

    def _get(
        self,
        target: OutboundTarget,
        addresses: list[str],
        deadline: float,
        context: ssl.SSLContext,
        max_bytes: int,
        write: Callable[[bytes], object],
    ) -> int | str:
        """One GET: the body's size (its bytes written), or a redirect's Location."""
        timeout = min(self.connect_timeout_seconds, self._remaining(deadline))
        connection = pinned_connection(target, addresses, timeout, context, lambda: self._remaining(deadline))
        expired = threading.Event()
        watchdog: threading.Timer | None = None
        try:
            host = target.host if target.default_port else f"{target.host}:{target.port}"
            connection.putrequest("GET", target.path, skip_host=True, skip_accept_encoding=True)
            for name, value in (
                ("Host", host),
                ("User-Agent", _USER_AGENT),
                ("Accept-Encoding", "identity"),  # the bytes as stored: a compressed body would not be audio
                ("Connection", "close"),  # the body ends where the connection does (see _body)
            ):
                connection.putheader(name, value)
            connection.endheaders()
            # the socket, kept: the connection lets go of it once the answer says it closes after this
            sock = connection.sock
            assert sock is not None  # connected by endheaders
            sock.settimeout(min(self.connect_timeout_seconds, self._remaining(deadline)))
            # each read has its timeout, but headers sent a byte at a time would pass every one: at the deadline
            # the socket is shut, whatever is being read
            watchdog = threading.Timer(self._remaining(deadline), _shut, (sock, expired))
            watchdog.daemon = True
            watchdog.start()
            answer = self._answer(connection, sock, deadline, max_bytes, write)
        except Exception:
            if expired.is_set():
                raise _TooSlow from None
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()
            connection.close()
        if expired.is_set():  # the socket was shut under a read that then saw its end
            raise _TooSlow
        return answer

    def _answer(
        self,
        connection: http.client.HTTPConnection,
        sock: socket.socket,
        deadline: float,
        max_bytes: int,
        write: Callable[[bytes], object],
    ) -> int | str:
        response = connection.getresponse()
        if response.status in _REDIRECTS:
            location = response.getheader("Location")
            if not location:
                raise audio_url.unreachable(f"it answered HTTP {response.status} without a Location")
            return location
        if not 200 <= response.status < 300:
            raise audio_url.unreachable(f"it answered HTTP {response.status}")
        return self._body(sock, response, deadline, max_bytes, write)

    def _body(
        self,
        sock: socket.socket,
        response: http.client.HTTPResponse,
        deadline: float,
        max_bytes: int,
        write: Callable[[bytes], object],
    ) -> int:
        declared = response.length  # None when chunked or not sent
        if declared is not None and declared > max_bytes:
            raise audio_url.too_large(max_bytes)
        # read to the end of the connection (we asked it closed), not to the declared length: a server that sends
        # more than it declared is refused, not quietly cut short
        response.length = None
        received = 0
        while True:
            sock.settimeout(min(self.connect_timeout_seconds, self._remaining(deadline)))
            chunk = response.read1(_CHUNK_BYTES)
            if not chunk:
                break
            received += len(chunk)
            if received > max_bytes:
                raise audio_url.too_large(max_bytes)
            write(chunk)
        if declared is not None and received != declared:
            raise audio_url.unreachable(f"its body was {received:,} bytes where its Content-Length said {declared:,}")
        return received
