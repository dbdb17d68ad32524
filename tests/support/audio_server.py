"""An HTTP server on a thread of the test process that serves audio by URL, well and badly: the audio itself,
redirect chains, bodies longer than their Content-Length said or without one, chunked bodies, something that is not
audio, error statuses, and a server that never answers. The unit, integration and end-to-end tests of ``url`` fetch
from it; it records each path asked for."""

from __future__ import annotations

import contextlib
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

from tests.support.model_server import QuietHandler, serve_in_thread

NOT_AUDIO = b"<!doctype html><html><body>Not audio, a web page.</body></html>"
# what a server that lies about its length declares
DECLARED_BYTES = 1000


@dataclass
class AudioServer:
    """Paths (``/{n}`` is a number of bytes or hops):

    - ``/audio``: the audio, with its Content-Length;
    - ``/redirects/{n}``: n redirects (302, relative Locations), then the audio;
    - ``/redirect?to=URL``: one redirect to URL;
    - ``/longer-than-said/{n}``: Content-Length: 1000, then n bytes (the audio, then zeros);
    - ``/no-length/{n}``: n bytes, no Content-Length, the connection closed after them;
    - ``/chunked/{n}``: n bytes in chunks;
    - ``/not-audio``: a web page; ``/status/{code}``: that status;
    - ``/never``: the request is read and never answered (until the server stops);
    - ``/drip``: headers, then a byte at a time, never ending (until the server stops);
    - ``/drip-headers``: the status line, then one header a byte at a time, never ending.
    """

    audio: bytes
    server: ThreadingHTTPServer | None = None
    paths: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def _body(self, size: int) -> bytes:
        return (self.audio + bytes(max(0, size - len(self.audio))))[:size]


def _handler(served: AudioServer) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            served.paths.append(self.path)
            path = urllib.parse.urlsplit(self.path)
            parts = path.path.strip("/").split("/")
            number = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            route = parts[0]
            if route == "audio":
                self._answer(200, served.audio)
            elif route == "redirects":
                self._redirect("/audio" if number <= 1 else f"/redirects/{number - 1}")
            elif route == "redirect":
                self._redirect(urllib.parse.parse_qs(path.query)["to"][0])
            elif route == "longer-than-said":
                self._answer(200, served._body(number), length=DECLARED_BYTES)
            elif route == "no-length":
                self._answer(200, served._body(number), length=None)
            elif route == "chunked":
                self._chunked(served._body(number))
            elif route == "not-audio":
                self._answer(200, NOT_AUDIO, content_type="text/html")
            elif route == "status":
                self._answer(number, b"no")
            elif route == "never":
                served.stopping.wait(60)
                self.close_connection = True
            elif route == "drip":
                self._drip()
            elif route == "drip-headers":
                self._drip_headers()
            else:
                self._answer(404, b"no such path")

        def _answer(
            self, status: int, body: bytes, *, length: int | None = -1, content_type: str = "audio/wav"
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if length is not None:
                self.send_header("Content-Length", str(len(body) if length == -1 else length))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def _redirect(self, location: str) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _chunked(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(body), 8192):
                chunk = body[start : start + 8192]
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")

        def _drip(self) -> None:
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            with contextlib.suppress(OSError):
                while not served.stopping.wait(0.05):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
            self.close_connection = True

        def _drip_headers(self) -> None:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            with contextlib.suppress(OSError):
                while not served.stopping.wait(0.05):
                    self.wfile.write(b"X")
                    self.wfile.flush()
            self.close_connection = True

    return Handler


@contextlib.contextmanager
def serving_audio(audio: bytes) -> Iterator[AudioServer]:
    """The server on 127.0.0.1 (a free port), stopped on the way out."""
    served = AudioServer(audio)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    server.daemon_threads = True
    # a client that hangs up on a bad answer (the point of most of them) is no error of the server's
    server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    served.server = server
    serve_in_thread(server)
    try:
        yield served
    finally:
        served.stopping.set()
        server.shutdown()
        server.server_close()
