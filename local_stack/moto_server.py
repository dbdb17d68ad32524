"""moto's server, one request at a time.

moto's own server handles requests on parallel threads, and its DynamoDB backend takes no lock: two
TransactWriteItems conditioned on the same balance can both pass their check and both write (seen in
tests/integration: 11 charges accepted against a balance of 10). DynamoDB itself never does that, so
the local stack serialises moto's requests to keep DynamoDB's atomicity, which the credit code relies on.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server


class SerializedApp:
    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            # the body is read inside the lock, so the request is complete before the next one starts
            return list(self._app(environ, start_response))


def make_moto_server(host: str, port: int) -> BaseWSGIServer:
    return make_server(host, port, SerializedApp(DomainDispatcherApplication(create_backend_app)), threaded=True)


class BackgroundMotoServer:
    """For tests: moto on a daemon thread, like moto's ThreadedMotoServer but serialised."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = make_moto_server(host, port)
        self.url = f"http://{host}:{self._server.server_port}"

    def start(self) -> None:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    parser.add_argument("--verbose", action="store_true", help="log every request (werkzeug's request lines)")
    arguments = parser.parse_args()
    # the local stack's pollers call SQS several times a second: one line per call hides everything else
    logging.getLogger("werkzeug").setLevel(logging.INFO if arguments.verbose else logging.WARNING)
    server = make_moto_server(arguments.host, arguments.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()


if __name__ == "__main__":
    main()
