"""`infery transcribe` finds the running local stack through its state file and says which URL it uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from infery_cli.__main__ import main
from infery_cli.client import DEFAULT_BASE_URL, resolve_base_url


@pytest.fixture
def state_file(tmp_path, monkeypatch):
    path = tmp_path / "local-stack.json"
    monkeypatch.setenv("INFERY_STATE_FILE", str(path))
    monkeypatch.delenv("INFERY_BASE_URL", raising=False)
    return path


def write_state(path, base_url: str, pid: int) -> None:
    path.write_text(json.dumps({"base_url": base_url, "pid": pid, "environment": {}}))


def a_finished_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_running_stacks_url_is_used_when_none_is_given(state_file):
    write_state(state_file, "http://127.0.0.1:3941/v1", os.getpid())
    url, source = resolve_base_url(None)
    assert url == "http://127.0.0.1:3941/v1" and str(state_file) in source


def test_an_explicit_url_wins_over_the_environment_and_the_state_file(state_file, monkeypatch):
    write_state(state_file, "http://127.0.0.1:3941/v1", os.getpid())
    monkeypatch.setenv("INFERY_BASE_URL", "https://api.example.com/v1")
    assert resolve_base_url(None) == ("https://api.example.com/v1", "INFERY_BASE_URL")
    assert resolve_base_url("http://elsewhere/v1") == ("http://elsewhere/v1", "--base-url")


def test_a_state_file_left_by_a_stack_that_is_gone_is_ignored(state_file):
    write_state(state_file, "http://127.0.0.1:3941/v1", a_finished_pid())
    assert resolve_base_url(None)[0] == DEFAULT_BASE_URL
    state_file.write_text("{not json")
    assert resolve_base_url(None)[0] == DEFAULT_BASE_URL
    state_file.unlink()
    url, source = resolve_base_url(None)
    assert url == DEFAULT_BASE_URL and "no local stack" in source


class _FakeApi(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b"hello from the stack on another port"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.paths.append(self.path)  # type: ignore[attr-defined]

    def log_message(self, *_: object) -> None:
        pass


def test_transcribe_reaches_the_stack_on_its_own_port_and_says_so(state_file, tmp_path, capsys):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApi)
    server.paths = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base_url = f"http://127.0.0.1:{server.server_port}/v1"
        write_state(state_file, base_url, os.getpid())
        audio = tmp_path / "a.wav"
        audio.write_bytes(b"RIFF....WAVE")
        code = main(["transcribe", str(audio), "--api-key", "inf_x", "--no-progress"])
    finally:
        server.shutdown()
        server.server_close()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out == "hello from the stack on another port\n"
    assert f"using {base_url} (the local stack's state file" in captured.err
    assert server.paths == ["/v1/audio/transcriptions"]  # type: ignore[attr-defined]
