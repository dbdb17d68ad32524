"""webhooks.deliver cannot be turned against our own network.

It resolves the host once, checks every address, and connects to the address it checked (the Host header and
TLS SNI carry the name); it follows no redirect; on AWS it sends over https to port 443 only; and a failure to
reach the receiver is recorded as "unreachable", never with the text or status code of whatever answered inside.

DNS is a stand-in (socket.getaddrinfo patched) so a name can change its answer between two lookups, as a DNS
rebinding attack makes it; receivers are real servers on 127.0.0.1.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from infery.adapters import webhook_sender as webhooks
from infery.domain import webhook_signature
from infery.domain.jobs import WebhookAttempt

PUBLIC_ADDRESS = "93.184.216.34"  # a global address; nothing here ever connects to it for real
SECRET = "whsec_test"
# the local stack allows both: its receivers listen on this machine, over http
LOCAL_STACK: dict[str, Any] = {"allow_private_addresses": True, "allow_http": True}
BODY = b'{"id": "job_0123", "status": "succeeded"}'


# --- stand-ins: DNS, receivers, connections --------------------------------------------------------------------------


@dataclass
class FakeDns:
    """Answers for names: each lookup of a name takes its next answer (the last one repeats)."""

    answers: dict[str, list[list[str]]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)

    def __call__(
        self,
        host: Any,
        port: Any,
        family: int = 0,
        type: int = 0,
        proto: int = 0,  # noqa: A002
        flags: int = 0,
    ) -> list[tuple]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in self.answers:
            return REAL_GETADDRINFO(host, port, family, type, proto, flags)
        self.lookups.append(name)
        queue = self.answers[name]
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        results = []
        for address in addresses:
            if ipaddress.ip_address(address).version == 6:
                results.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port or 0, 0, 0)))
            else:
                results.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0)))
        return results


REAL_GETADDRINFO = socket.getaddrinfo
REAL_CREATE_CONNECTION = socket.create_connection


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    fake = FakeDns()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


@dataclass
class Connections:
    """Every TCP connection opened, by the address asked for; ``route`` sends some of them elsewhere."""

    opened: list[tuple[str, int]] = field(default_factory=list)
    route: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)

    def __call__(self, address: tuple, timeout: Any = None, *args: Any, **kwargs: Any) -> socket.socket:
        host, port = address[0], address[1]
        self.opened.append((host, port))
        if (host, port) in self.route:
            return REAL_CREATE_CONNECTION(self.route[(host, port)], timeout)
        if host == "127.0.0.1":
            return REAL_CREATE_CONNECTION(address, timeout, *args, **kwargs)
        raise ConnectionRefusedError(111, "Connection refused")  # nothing here reaches the internet


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Connections:
    spy = Connections()
    monkeypatch.setattr(socket, "create_connection", spy)
    return spy


@dataclass
class Receiver:
    port: int
    requests: list[dict[str, Any]]
    server: ThreadingHTTPServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def start(status: int = 200, headers: dict[str, str] | None = None, tls: ssl.SSLContext | None = None) -> Receiver:
        requests: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": self.rfile.read(length),
                        "sni": getattr(self.connection, "sni", None),
                    }
                )
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_POST = do_GET = _answer  # noqa: N815 - http.server's names

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return Receiver(server.server_port, requests, server)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def deliver(url: str, *, allow_private_addresses: bool = False, **options: Any) -> tuple[bool, list[WebhookAttempt]]:
    attempts: list[WebhookAttempt] = []
    delivered = webhooks.deliver(
        url,
        BODY,
        SECRET,
        record=attempts.append,
        sleep=lambda _: None,
        timeout_seconds=options.pop("timeout_seconds", 2.0),
        allow_private_addresses=allow_private_addresses,
        **options,
    )
    return delivered, attempts


# --- the address checked is the address connected to -----------------------------------------------------------------


def test_a_name_that_rebinds_to_an_internal_address_after_the_check_is_never_connected_to_there(dns, connections):
    # Given a name whose first answer is public and every later one the instance metadata address
    dns.answers["hooks.attacker.example"] = [[PUBLIC_ADDRESS], ["169.254.169.254"]]
    # When the worker delivers to it (the public address refuses the connection here)
    delivered, attempts = deliver("https://hooks.attacker.example/hook")
    # Then every connection went to an address that was checked, never to the one DNS gave next
    assert not delivered
    assert connections.opened and all(address == (PUBLIC_ADDRESS, 443) for address in connections.opened), (
        connections.opened
    )
    # and each attempt resolved once and checked what it resolved before connecting: the retry, which got the
    # internal answer, was refused without a connection
    assert connections.opened == [(PUBLIC_ADDRESS, 443)]
    assert len(dns.lookups) == len(attempts) == 2
    assert (attempts[0].error, attempts[0].status_code) == ("unreachable", None)
    assert attempts[1].error.startswith("refused") and attempts[1].status_code is None


@pytest.mark.parametrize(
    "answer",
    [
        ["10.0.0.5"],
        ["169.254.169.254"],
        [PUBLIC_ADDRESS, "127.0.0.1"],
        ["::1"],
        ["fd00::7"],
        ["::ffff:169.254.169.254"],
        ["64:ff9b::a9fe:a9fe"],
        ["2002:a9fe:a9fe::1"],
        ["239.1.2.3"],
        ["0.0.0.0"],
    ],
)
def test_a_name_with_any_internal_address_is_refused_without_a_connection(dns, connections, answer):
    dns.answers["hooks.example.com"] = [answer]
    delivered, attempts = deliver("https://hooks.example.com/hook")
    assert not delivered and connections.opened == []
    [attempt] = attempts  # refused once, not retried
    assert attempt.status_code is None and attempt.error.startswith("refused")


def test_https_is_sent_to_the_checked_address_with_the_name_in_sni_and_host_and_its_certificate_checked(
    dns, connections, receiver, tmp_path
):
    # Given a TLS receiver for hooks.example.com, reached through the public address DNS gives for that name
    authority, server_tls = _tls_for("hooks.example.com", tmp_path)
    tls_receiver = receiver(200, tls=server_tls)
    dns.answers["hooks.example.com"] = [[PUBLIC_ADDRESS], ["127.0.0.2"]]
    connections.route[(PUBLIC_ADDRESS, 443)] = ("127.0.0.1", tls_receiver.port)
    # When the notification is delivered
    delivered, attempts = deliver("https://hooks.example.com/hooks/infery?tenant=7", tls_context=authority)
    # Then it reached the receiver over TLS, by the checked address, naming the host in SNI and Host
    assert delivered and [attempt.status_code for attempt in attempts] == [200]
    assert connections.opened == [(PUBLIC_ADDRESS, 443)]
    [request] = tls_receiver.requests
    assert request["sni"] == "hooks.example.com" and request["headers"]["Host"] == "hooks.example.com"
    assert request["path"] == "/hooks/infery?tenant=7" and request["body"] == BODY
    assert webhook_signature.verify(BODY, request["headers"][webhook_signature.SIGNATURE_HEADER], SECRET)


def test_a_certificate_for_another_name_is_unreachable(dns, connections, receiver, tmp_path):
    authority, server_tls = _tls_for("other.example.net", tmp_path)
    tls_receiver = receiver(200, tls=server_tls)
    dns.answers["hooks.example.com"] = [[PUBLIC_ADDRESS]]
    connections.route[(PUBLIC_ADDRESS, 443)] = ("127.0.0.1", tls_receiver.port)
    delivered, attempts = deliver("https://hooks.example.com/hook", tls_context=authority)
    assert not delivered and tls_receiver.requests == []
    assert {attempt.error for attempt in attempts} == {"unreachable"}


# --- https on 443 only, on AWS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/hook",
        "https://hooks.example.com:8443/hook",
        "https://hooks.example.com:80/hook",
        "ftp://hooks.example.com/hook",
        "https://hooks.example.com:99999/hook",
        "https:///hook",
    ],
)
def test_on_aws_only_https_on_port_443_is_sent(dns, connections, url):
    dns.answers["hooks.example.com"] = [[PUBLIC_ADDRESS]]
    delivered, attempts = deliver(url)
    assert not delivered and connections.opened == []
    [attempt] = attempts
    assert attempt.status_code is None and attempt.error.startswith("refused")


# --- private addresses and http are allowed apart ---------------------------------------------------------------------


def test_allowing_private_addresses_does_not_allow_http(dns, connections, receiver):
    local = receiver(204)
    dns.answers["receiver.test"] = [["127.0.0.1"]]
    delivered, attempts = deliver(f"http://receiver.test:{local.port}/hook", allow_private_addresses=True)
    assert not delivered and connections.opened == [] and local.requests == []
    [attempt] = attempts
    assert attempt.status_code is None and attempt.error == "refused: webhooks are sent over https only"


def test_allowing_http_does_not_allow_private_addresses_nor_another_port(dns, connections, receiver):
    local = receiver(204)
    dns.answers["receiver.test"] = [["127.0.0.1"]]
    for url in (local.url, f"http://receiver.test:{local.port}/hook", "http://receiver.test/hook"):
        delivered, attempts = deliver(url, allow_http=True)
        assert not delivered and [attempt.error.startswith("refused") for attempt in attempts] == [True]
    assert connections.opened == [] and local.requests == []
    # while http to port 80 of a public host is sent
    dns.answers["hooks.example.com"] = [[PUBLIC_ADDRESS]]
    connections.route[(PUBLIC_ADDRESS, 80)] = ("127.0.0.1", local.port)
    delivered, attempts = deliver("http://hooks.example.com/hook", allow_http=True)
    assert delivered and [attempt.status_code for attempt in attempts] == [204]
    assert connections.opened == [(PUBLIC_ADDRESS, 80)]


# --- no redirects ----------------------------------------------------------------------------------------------------


def test_a_redirect_is_not_followed(receiver):
    # Given a receiver that answers with a redirect to another (internal) service
    inside = receiver(200)
    redirecting = receiver(302, headers={"Location": f"http://127.0.0.1:{inside.port}/latest/meta-data/"})
    # When the notification is delivered (locally, where loopback receivers are allowed)
    delivered, attempts = deliver(redirecting.url, **LOCAL_STACK)
    # Then the redirect is recorded as the receiver's answer, and the service it points to is never called
    assert not delivered
    assert inside.requests == []
    assert {attempt.status_code for attempt in attempts} == {302}
    assert len(redirecting.requests) == 1 + len(webhooks.RETRY_DELAYS_SECONDS)


# --- what is recorded ------------------------------------------------------------------------------------------------


def test_a_receiver_that_cannot_be_reached_is_recorded_as_unreachable_without_the_systems_words(receiver):
    closed = receiver(200)
    url = closed.url
    closed.server.shutdown()
    closed.server.server_close()
    delivered, attempts = deliver(url, **LOCAL_STACK)
    assert not delivered and len(attempts) == 1 + len(webhooks.RETRY_DELAYS_SECONDS)
    assert all(attempt.error == "unreachable" and attempt.status_code is None for attempt in attempts), attempts


def test_a_receiver_that_never_answers_is_unreachable(monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections, never answers
    try:
        delivered, attempts = deliver(
            f"http://127.0.0.1:{listener.getsockname()[1]}/hook", **LOCAL_STACK, timeout_seconds=0.2
        )
    finally:
        listener.close()
    assert not delivered and {attempt.error for attempt in attempts} == {"unreachable"}


def test_an_unknown_name_is_unreachable(dns):
    def no_such_name(*args: Any, **kwargs: Any) -> list:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    dns.answers.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", no_such_name)
        delivered, attempts = deliver("https://no-such-host.invalid/hook")
    assert not delivered and attempts and {attempt.error for attempt in attempts} == {"unreachable"}


def test_locally_http_to_a_name_is_sent_to_the_address_resolved_once_with_the_name_as_host(dns, receiver):
    # the local stack (WEBHOOK_ALLOW_PRIVATE_ADDRESSES and WEBHOOK_ALLOW_HTTP): http to a receiver here keeps working
    local = receiver(204)
    dns.answers["receiver.test"] = [["127.0.0.1"], ["10.255.255.1"]]
    delivered, attempts = deliver(f"http://receiver.test:{local.port}/hook", **LOCAL_STACK, timeout_seconds=1.0)
    assert delivered and [attempt.status_code for attempt in attempts] == [204]
    assert dns.lookups == ["receiver.test"]
    [request] = local.requests
    assert request["headers"]["Host"] == f"receiver.test:{local.port}" and request["body"] == BODY
    assert request["headers"]["Content-Type"] == "application/json"


def test_a_failing_receiver_is_retried_and_its_own_status_recorded(receiver):
    failing = receiver(500)
    delivered, attempts = deliver(failing.url, **LOCAL_STACK)
    assert not delivered and [attempt.status_code for attempt in attempts] == [500] * 4


# --- a test certificate authority ------------------------------------------------------------------------------------


def _tls_for(hostname: str, folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(a client context that trusts only a fresh CA, a server context with a certificate for ``hostname``);
    the server context records the SNI name each connection asked for on the connection as ``sni``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "infery test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    client = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")

    def remember_sni(connection: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        connection.sni = name  # type: ignore[attr-defined]

    server.sni_callback = remember_sni
    return client, server
