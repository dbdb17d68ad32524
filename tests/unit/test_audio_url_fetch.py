"""Audio by URL is fetched as a webhook is sent: never from inside the network, and within its limits.

The fetcher (infery.adapters.audio_fetcher) resolves each name once with the resolver it is given (a stand-in here:
made-up names, never real DNS) and connects to an address it checked; it follows at most 3 redirects, checking
each hop again; it counts the body as it arrives (a missing or lying Content-Length changes nothing); and one
deadline bounds it all. Every server is a real one on 127.0.0.1 that the test starts (tests/support/audio_server.py).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from infery.adapters.audio_fetcher import HttpAudioFetcher
from infery.domain.addresses import is_allowed_address, is_metadata_address
from infery.domain.audio_url import check_audio_url
from infery.domain.errors import InvalidRequest

from tests.support.audio_server import DECLARED_BYTES, NOT_AUDIO, AudioServer, serving_audio
from tests.support.speech import silent_wav

PUBLIC_ADDRESS = "93.184.216.34"  # a global address: connections to it are routed to the test's server
AUDIO = silent_wav(16_000, 1.0)
CAP = 64 * 1024
AWS: dict[str, Any] = {"allow_private_addresses": False, "allow_http": False}
# the local stack's rules: its servers listen on loopback, over http
LOCAL: dict[str, Any] = {"allow_private_addresses": True, "allow_http": True}
# a deployment's: public addresses only (http allowed here, so the test's plain server can stand in for a public one)
PUBLIC_ONLY: dict[str, Any] = {"allow_private_addresses": False, "allow_http": True}
INTERNAL_ADDRESSES = [
    "10.0.0.5",
    "172.16.3.4",
    "192.168.1.1",
    "127.0.0.1",
    "169.254.169.254",
    "169.254.170.2",
    "fd00:ec2::254",
    "::1",
    "::ffff:169.254.169.254",
    "100.100.100.200",
]
METADATA_ADDRESSES = ["169.254.169.254", "169.254.170.2", "fd00:ec2::254", "::ffff:169.254.169.254", "fe80::1"]


# --- stand-ins: a resolver, a connection spy --------------------------------------------------------------------------


@dataclass
class FakeResolver:
    """socket.getaddrinfo for made-up names; every lookup is recorded."""

    answers: dict[str, list[str]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)

    def __call__(self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0) -> list[tuple]:  # noqa: A002
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.lookups.append(name)
        if _is_address(name):
            addresses = [name]  # a literal address is its own answer, as the system's resolver gives it
        elif name in self.answers:
            addresses = self.answers[name]
        else:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (
                socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (address, port),
            )
            for address in addresses
        ]


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


REAL_CREATE_CONNECTION = socket.create_connection


@dataclass
class Connections:
    """Every TCP connection opened; the public address is routed to the test's server, nothing else leaves."""

    opened: list[tuple[str, int]] = field(default_factory=list)
    route: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)

    def __call__(self, address: tuple, timeout: Any = None, *args: Any, **kwargs: Any) -> socket.socket:
        self.opened.append((address[0], address[1]))
        if (address[0], address[1]) in self.route:
            return REAL_CREATE_CONNECTION(self.route[(address[0], address[1])], timeout)
        if address[0] == "127.0.0.1":
            return REAL_CREATE_CONNECTION(address, timeout, *args, **kwargs)
        raise ConnectionRefusedError(111, "Connection refused")  # nothing here reaches another machine


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Connections:
    spy = Connections()
    monkeypatch.setattr(socket, "create_connection", spy)
    return spy


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


@pytest.fixture
def server() -> Iterator[AudioServer]:
    with serving_audio(AUDIO) as served:
        yield served


def fetcher(resolver: FakeResolver, rules: dict[str, Any] = LOCAL, **options: Any) -> HttpAudioFetcher:
    return HttpAudioFetcher(**rules, resolver=resolver, **{"timeout_seconds": 10.0, **options})


def refused(fetch: HttpAudioFetcher, url: str, max_bytes: int = CAP) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        fetch.fetch(url, max_bytes=max_bytes)
    assert caught.value.param == "url" and caught.value.status_code == 400
    return caught.value


# --- the audio arrives --------------------------------------------------------------------------------------------


def test_the_audio_is_fetched_byte_for_byte(resolver, connections, server):
    assert fetcher(resolver).fetch(server.url("/audio"), max_bytes=CAP) == AUDIO


def test_a_name_is_resolved_once_and_the_connection_goes_to_the_address_checked(resolver, connections, server):
    resolver.answers["audio.example"] = [PUBLIC_ADDRESS]
    connections.route[(PUBLIC_ADDRESS, 80)] = ("127.0.0.1", server.server.server_port)  # type: ignore[union-attr]

    assert fetcher(resolver, PUBLIC_ONLY).fetch("http://audio.example/audio", max_bytes=CAP) == AUDIO
    assert resolver.lookups == ["audio.example"]
    assert connections.opened == [(PUBLIC_ADDRESS, 80)]


@pytest.mark.parametrize("path", [f"/no-length/{len(AUDIO)}", f"/chunked/{len(AUDIO)}"])
def test_a_body_without_content_length_arrives_whole(resolver, connections, server, path):
    assert fetcher(resolver).fetch(server.url(path), max_bytes=CAP) == AUDIO


def test_a_body_of_exactly_the_limit_is_taken(resolver, connections, server):
    assert len(fetcher(resolver).fetch(server.url(f"/no-length/{CAP}"), max_bytes=CAP)) == CAP


def test_three_redirects_are_followed(resolver, connections, server):
    assert fetcher(resolver).fetch(server.url("/redirects/3"), max_bytes=CAP) == AUDIO
    assert server.paths == ["/redirects/3", "/redirects/2", "/redirects/1", "/audio"]


# --- refused: where it points ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", INTERNAL_ADDRESSES)
def test_a_name_that_resolves_inside_is_refused_before_any_connection(resolver, connections, address):
    resolver.answers["inside.example"] = [address]

    error = refused(fetcher(resolver, AWS), "https://inside.example/a.wav")

    assert error.code == "url_address_not_allowed"
    assert connections.opened == []


def test_one_internal_address_among_public_ones_refuses_the_name(resolver, connections):
    resolver.answers["mixed.example"] = [PUBLIC_ADDRESS, "10.1.2.3"]

    error = refused(fetcher(resolver, PUBLIC_ONLY), "http://mixed.example/a.wav")

    assert error.code == "url_address_not_allowed" and connections.opened == []


@pytest.mark.parametrize("address", METADATA_ADDRESSES)
def test_metadata_addresses_are_refused_even_where_private_ones_are_allowed(resolver, connections, address):
    resolver.answers["metadata.example"] = [address]

    error = refused(fetcher(resolver, LOCAL), "http://metadata.example/latest/meta-data/")

    assert error.code == "url_address_not_allowed" and connections.opened == []


def test_every_redirect_hop_is_checked_again(resolver, connections, server):
    resolver.answers["audio.example"] = [PUBLIC_ADDRESS]
    resolver.answers["inside.example"] = ["10.0.0.7"]
    connections.route[(PUBLIC_ADDRESS, 80)] = ("127.0.0.1", server.server.server_port)  # type: ignore[union-attr]

    error = refused(fetcher(resolver, PUBLIC_ONLY), "http://audio.example/redirect?to=http://inside.example/a.wav")

    assert error.code == "url_address_not_allowed"
    assert connections.opened == [(PUBLIC_ADDRESS, 80)]  # the first hop only


def test_a_redirect_to_a_metadata_address_is_refused_on_the_local_stack_too(resolver, connections, server):
    error = refused(fetcher(resolver), server.url("/redirect?to=http://169.254.169.254/latest/meta-data/"))

    assert error.code == "url_address_not_allowed"
    assert all(address == "127.0.0.1" for address, _ in connections.opened)


def test_a_redirect_to_plain_http_is_refused_where_only_https_is_fetched(resolver, connections, server):
    # the first hop is over http only because the test's server is; the rule under test is the redirect's
    https_only = fetcher(resolver, {"allow_private_addresses": True, "allow_http": False})
    error = refused(https_only, "https://127.0.0.1:1/", max_bytes=CAP)  # nothing listens there over TLS
    assert error.code == "url_unreachable"
    error = refused(fetcher(resolver, PUBLIC_ONLY | {"allow_http": False}), "http://audio.example/a.wav")
    assert error.code == "invalid_value" and "https" in error.message


def test_more_than_three_redirects_are_refused(resolver, connections, server):
    error = refused(fetcher(resolver), server.url("/redirects/4"))

    assert error.code == "url_too_many_redirects"
    assert "/audio" not in server.paths  # the fourth redirect is not followed


# --- refused: what it answers -------------------------------------------------------------------------------------


def test_a_body_longer_than_its_content_length_said_is_refused_at_the_limit(resolver, connections, server):
    error = refused(fetcher(resolver), server.url(f"/longer-than-said/{CAP * 4}"))

    assert error.code == "url_too_large"


def test_a_body_longer_than_its_content_length_said_but_under_the_limit_is_not_cut_short(resolver, connections, server):
    error = refused(fetcher(resolver), server.url(f"/longer-than-said/{DECLARED_BYTES * 2}"))

    assert error.code == "url_unreachable" and "Content-Length" in error.message


@pytest.mark.parametrize("path", [f"/no-length/{CAP + 1}", f"/chunked/{CAP * 4}", f"/no-length/{CAP * 50}"])
def test_a_body_without_content_length_is_refused_past_the_limit(resolver, connections, server, path):
    assert refused(fetcher(resolver), server.url(path)).code == "url_too_large"


def test_a_content_length_over_the_limit_is_refused(resolver, connections, server):
    assert refused(fetcher(resolver), server.url("/audio"), max_bytes=len(AUDIO) - 1).code == "url_too_large"


@pytest.mark.parametrize("status", [404, 403, 500, 400])
def test_an_error_status_is_unreachable(resolver, connections, server, status):
    error = refused(fetcher(resolver), server.url(f"/status/{status}"))
    assert error.code == "url_unreachable" and str(status) in error.message


def test_an_unknown_name_is_unreachable(resolver, connections):
    error = refused(fetcher(resolver), "http://nowhere.example/a.wav")

    assert error.code == "url_unreachable" and connections.opened == []


def test_a_refused_connection_is_unreachable_without_the_systems_words(resolver, connections):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now

    error = refused(fetcher(resolver), f"http://127.0.0.1:{port}/a.wav")

    assert error.code == "url_unreachable" and "Errno" not in error.message and "refused" not in error.message


def test_a_server_that_never_answers_is_too_slow(resolver, connections, server):
    error = refused(fetcher(resolver, timeout_seconds=0.5, connect_timeout_seconds=0.5), server.url("/never"))

    assert error.code == "url_timeout"


def test_a_body_that_never_ends_is_stopped_by_the_whole_fetchs_deadline(resolver, connections, server):
    """A byte at a time keeps every read inside its own timeout: only the deadline over the whole fetch ends it.
    The clock is a stand-in that moves a second each time the fetcher reads it."""
    ticks = iter(range(10**6))
    slow = fetcher(resolver, timeout_seconds=5.0, clock=lambda: float(next(ticks)))

    assert refused(slow, server.url("/drip"), max_bytes=10**9).code == "url_timeout"


def test_headers_that_never_end_are_stopped_by_the_whole_fetchs_deadline(resolver, connections, server):
    """Each header byte arrives well inside the read timeout: only the deadline, which shuts the socket, ends it."""
    slow = fetcher(resolver, timeout_seconds=0.5, connect_timeout_seconds=5.0)

    assert refused(slow, server.url("/drip-headers")).code == "url_timeout"


def test_a_stand_in_that_answers_not_audio_is_still_fetched(resolver, connections, server):
    """The fetcher brings bytes; telling audio from the rest is the use case's (as for any upload)."""
    assert fetcher(resolver).fetch(server.url("/not-audio"), max_bytes=CAP) == NOT_AUDIO


# --- the URL as sent ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "rules", "code"),
    [
        ("http://audio.example/a.wav", AWS, "invalid_value"),
        ("ftp://audio.example/a.wav", LOCAL, "invalid_value"),
        ("file:///etc/passwd", LOCAL, "invalid_value"),
        ("https://audio.example:8443/a.wav", AWS, "invalid_value"),
        ("https://user:secret@audio.example/a.wav", LOCAL, "invalid_value"),
        ("https://audio.example/a b.wav", LOCAL, "invalid_value"),
        ("not a url", LOCAL, "invalid_value"),
        ("https://" + "a" * 2050 + ".example/", LOCAL, "invalid_value"),
        ("https://10.0.0.1/a.wav", AWS, "url_address_not_allowed"),
        ("https://127.0.0.1/a.wav", AWS, "url_address_not_allowed"),
        ("https://[::ffff:a9fe:a9fe]/a.wav", AWS, "url_address_not_allowed"),
        ("http://169.254.169.254/latest/meta-data/", LOCAL, "url_address_not_allowed"),
        ("http://[fd00:ec2::254]/", LOCAL, "url_address_not_allowed"),
    ],
)
def test_a_url_infery_never_fetches_is_refused_when_the_request_arrives(url, rules, code):
    with pytest.raises(InvalidRequest) as caught:
        check_audio_url(url, **rules)

    assert (caught.value.code, caught.value.param) == (code, "url")


@pytest.mark.parametrize(
    ("url", "rules"),
    [
        ("https://audio.example/a.wav?X-Amz-Signature=abc", AWS),
        ("https://audio.example:443/a.wav", AWS),
        ("http://127.0.0.1:8000/a.wav", LOCAL),
        ("https://93.184.216.34/a.wav", AWS),
    ],
)
def test_a_url_infery_may_fetch_is_taken_as_sent(url, rules):
    assert check_audio_url(url, **rules) == url


@pytest.mark.parametrize("address", METADATA_ADDRESSES)
def test_metadata_addresses_are_metadata_however_written(address):
    assert is_metadata_address(address)
    assert not is_allowed_address(address, allow_private_addresses=True)
    assert not is_allowed_address(address, allow_private_addresses=False)


@pytest.mark.parametrize("address", ["10.0.0.1", "127.0.0.1", "192.168.0.1", "::1"])
def test_private_addresses_are_allowed_only_where_the_deployment_allows_them(address):
    assert is_allowed_address(address, allow_private_addresses=True)
    assert not is_allowed_address(address, allow_private_addresses=False)


def test_a_name_with_many_silent_addresses_is_cut_at_the_fetchs_one_deadline(resolver, monkeypatch):
    """Each address gets the connect timeout, but never more than is left of the whole fetch's: the clock is
    simulated, each silent address 'takes' the timeout it was given."""
    now = [0.0]
    given: list[float] = []

    def silent(address: tuple, timeout: Any = None, *args: Any, **kwargs: Any) -> socket.socket:
        given.append(timeout)
        now[0] += timeout
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", silent)
    resolver.answers["audio.example"] = [f"93.184.216.{last}" for last in range(1, 9)]
    fetch = fetcher(resolver, PUBLIC_ONLY, connect_timeout_seconds=5.0, timeout_seconds=12.0, clock=lambda: now[0])
    assert refused(fetch, "http://audio.example/a.wav").code == "url_timeout"
    assert given == [5.0, 5.0, 2.0]  # then the deadline: not 8 addresses x 5 s
