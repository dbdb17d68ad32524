"""A made-up DNS for a local stack that end-to-end tests start (never imported by tests, never used in a deployment).

Python imports ``sitecustomize`` at start-up from the first folder of its path that has one; a test puts this folder
on the stack's PYTHONPATH, and the stack's API and worker processes (forked from it) inherit what it patches here:

- a name in ``INFERY_TEST_FAKE_DNS`` (JSON, name -> addresses) resolves to those addresses, without asking any DNS;
- a connection to one of those addresses is never made: it is refused here, and recorded as a line in the file
  ``INFERY_TEST_FAKE_DNS_LOG``, so a test can check that nothing tried to reach, say, 169.254.169.254.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from typing import Any

_ANSWERS: dict[str, list[str]] = json.loads(os.environ.get("INFERY_TEST_FAKE_DNS") or "{}")
_LOG = os.environ.get("INFERY_TEST_FAKE_DNS_LOG")

if _ANSWERS:
    _real_getaddrinfo = socket.getaddrinfo
    _real_create_connection = socket.create_connection
    _fake_addresses = {address for addresses in _ANSWERS.values() for address in addresses}

    def _getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in _ANSWERS:
            return _real_getaddrinfo(host, port, *args, **kwargs)
        return [
            (
                socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (address, port),
            )
            for address in _ANSWERS[name]
        ]

    def _create_connection(address: tuple[Any, ...], *args: Any, **kwargs: Any) -> socket.socket:
        if address[0] in _fake_addresses:
            if _LOG:
                with open(_LOG, "a", encoding="utf-8") as log:
                    log.write(f"{address[0]} {address[1]}\n")
            raise ConnectionRefusedError(111, "Connection refused (a made-up address: never connected to)")
        return _real_create_connection(address, *args, **kwargs)

    socket.getaddrinfo = _getaddrinfo
    socket.create_connection = _create_connection
