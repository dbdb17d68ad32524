"""The model server stops decoding a request whose caller has gone (a timeout, a disconnect): the windows nobody
waits for are dropped from the batcher, and the server goes on serving others."""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest
from whisper_server import WhisperTranscriber

from tests.support.model_server import running_model_server
from tests.support.speech import distinct_sentences, synthesize_wav, timed_speech


@pytest.fixture(scope="module")
def one_window_at_a_time() -> Iterator[tuple[str, WhisperTranscriber]]:
    """A model server of its own that decodes one window per batch, so a request's progress can be seen."""
    with running_model_server(batch_size=1, max_wait_ms=0) as served:
        yield served


def _invocation(audio: bytes) -> bytes:
    return json.dumps({"audio": base64.b64encode(audio).decode()}).encode()


def test_a_caller_that_hangs_up_stops_the_decoding_of_its_remaining_windows(one_window_at_a_time):
    url, transcriber = one_window_at_a_time
    long_audio, timeline = timed_speech(distinct_sentences(60))  # about 3.5 minutes: 8 windows
    assert timeline[-1].end > 200
    batcher = transcriber.engine.batcher
    before = batcher.windows_decoded
    body = _invocation(long_audio)
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as caller:
        caller.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        deadline = time.monotonic() + 120
        while batcher.windows_decoded == before:  # the model has started on it
            assert time.monotonic() < deadline
            time.sleep(0.05)
    # the caller is gone: at most the windows already in flight are finished, never the rest
    time.sleep(3)
    decoded = batcher.windows_decoded - before
    time.sleep(3)
    assert batcher.windows_decoded - before == decoded, "windows were still decoded for a caller that had gone"
    assert decoded <= 3, f"{decoded} of 8 windows decoded after the caller hung up"

    short = synthesize_wav("The quick brown fox jumps over the lazy dog.")
    request = urllib.request.Request(
        f"{url}/invocations", data=_invocation(short), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - loopback
        assert "fox" in json.loads(answer.read())["text"].lower()
