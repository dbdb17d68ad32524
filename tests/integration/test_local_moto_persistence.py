"""local_stack.moto_server --data-dir: moto's state saved to a folder and restored by the next server.

Each test runs the server as the local stack does, in a process of its own, and stops it as the stack or a user
would (SIGTERM, Ctrl-C, or killed outright after it saved).
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from local_stack.persistence import SNAPSHOT_FOLDER
from local_stack.processes import free_port
from tests.support.api import ROOT

CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
TABLE = "persisted"
BUCKET = "persisted-bucket"


class Server:
    def __init__(self, data_dir: Path, *flags: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local_stack.moto_server", "-p", self.url.rsplit(":", 1)[1]]
            + ["--data-dir", str(data_dir), *flags],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
            # as a terminal starts it: Ctrl-C's default, whatever this process ignores (a process started while
            # SIGINT is ignored ignores it too, and the server would never see the SIGINT this test sends)
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 - no threads use it
        )

    def wait_ready(self) -> Server:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.communicate()[1]
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2):  # noqa: S310 - loopback
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the moto server did not start")

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.url, **CREDENTIALS)

    def stop(self, how: signal.Signals = signal.SIGTERM) -> int:
        self.process.send_signal(how)
        return self.process.wait(timeout=30)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []

    def start(data_dir: Path, *flags: str) -> Server:
        server = Server(data_dir, *flags)
        started.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def _fill(server: Server) -> str:
    """A table with an item, an object, a queue with a message and a topic; the queue's URL."""
    dynamodb = server.client("dynamodb")
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName=TABLE, Item={"k": {"S": "key"}, "balance": {"N": "42"}})
    s3 = server.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=BUCKET, Key="audio/clip.wav", Body=b"the first version")
    s3.put_object(Bucket=BUCKET, Key="audio/clip.wav", Body=b"RIFF" + bytes(range(256)) * 100)
    sqs = server.client("sqs")
    queue_url = sqs.create_queue(QueueName="persisted-queue")["QueueUrl"]
    sqs.send_message(QueueUrl=queue_url, MessageBody="a job")
    server.client("sns").create_topic(Name="persisted-topic")
    return queue_url


def _assert_filled(server: Server) -> None:
    item = server.client("dynamodb").get_item(TableName=TABLE, Key={"k": {"S": "key"}}, ConsistentRead=True)
    assert item["Item"]["balance"] == {"N": "42"}
    s3 = server.client("s3")
    s3.create_bucket(Bucket=BUCKET)  # what the local stack does on every start: the bucket is kept as it was
    body = s3.get_object(Bucket=BUCKET, Key="audio/clip.wav")["Body"].read()
    assert body == b"RIFF" + bytes(range(256)) * 100
    versions = s3.list_object_versions(Bucket=BUCKET)["Versions"]
    assert len(versions) == 2 and sum(version["IsLatest"] for version in versions) == 1, versions
    sqs = server.client("sqs")
    messages = sqs.receive_message(QueueUrl=sqs.get_queue_url(QueueName="persisted-queue")["QueueUrl"])["Messages"]
    assert [message["Body"] for message in messages] == ["a job"]
    topics = server.client("sns").list_topics()["Topics"]
    assert [topic["TopicArn"].rsplit(":", 1)[1] for topic in topics] == ["persisted-topic"]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_the_next_server_has_what_the_last_one_held(servers, tmp_path, how):
    first = servers(tmp_path).wait_ready()
    _fill(first)
    assert first.stop(how) == 0
    _assert_filled(servers(tmp_path).wait_ready())


def test_changes_are_saved_while_running_and_survive_a_kill(servers, tmp_path):
    first = servers(tmp_path).wait_ready()
    _fill(first)
    expected = {"dynamodb": b"42", "s3": b"RIFF", "sqs": b"a job", "sns": b"persisted-topic"}
    deadline = time.monotonic() + 30  # a debounced save: a second or so after the changes
    while not all(_saved(tmp_path, service, marker) for service, marker in expected.items()):
        assert time.monotonic() < deadline, "not everything was saved while the server ran"
        time.sleep(0.2)
    first.process.kill()  # no chance to save on the way out
    first.process.wait()
    _assert_filled(servers(tmp_path).wait_ready())


def _saved(data_dir: Path, service: str, marker: bytes) -> bool:
    snapshot = data_dir / SNAPSHOT_FOLDER / f"{service}.pickle"
    return snapshot.exists() and marker in snapshot.read_bytes()


def test_fresh_deletes_what_was_kept(servers, tmp_path):
    first = servers(tmp_path).wait_ready()
    _fill(first)
    assert first.stop() == 0
    (tmp_path / "notes.txt").write_text("someone else's")
    second = servers(tmp_path, "--fresh").wait_ready()
    assert (tmp_path / "notes.txt").read_text() == "someone else's"  # only what the server saved is deleted
    assert second.client("dynamodb").list_tables()["TableNames"] == []
    assert second.client("s3").list_buckets()["Buckets"] == []
    assert second.stop() == 0
    assert servers(tmp_path).wait_ready().client("dynamodb").list_tables()["TableNames"] == []


def test_two_servers_cannot_share_a_folder(servers, tmp_path):
    servers(tmp_path).wait_ready()
    second = servers(tmp_path)
    assert second.process.wait(timeout=30) == 1
    assert "another local stack is using" in second.process.communicate()[1]


def test_a_snapshot_another_moto_wrote_is_refused_not_dropped(servers, tmp_path):
    folder = tmp_path / SNAPSHOT_FOLDER
    folder.mkdir()
    (folder / "dynamodb.pickle").write_bytes(pickle.dumps({"moto": "0.0.1", "service": "dynamodb", "backends": {}}))
    server = servers(tmp_path)
    assert server.process.wait(timeout=30) == 1
    message = server.process.communicate()[1]
    assert "saved by moto 0.0.1" in message and "--fresh" in message
    assert (folder / "dynamodb.pickle").exists()  # kept: what to do with it is the user's call


def test_under_a_local_stack_it_outlives_ctrl_c_and_not_its_parent(tmp_path):
    # Ctrl-C reaches the whole process group: moto stays up for what the stack's other parts write while they stop
    # (the stack stops it last, with SIGTERM); and a stack killed outright leaves no moto behind
    port = free_port()
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "moto = subprocess.Popen([sys.executable, '-m', 'local_stack.moto_server', '-p', sys.argv[1],"
            " '--data-dir', sys.argv[2], '--stopped-by-parent'])\n"
            "print(moto.pid, flush=True)\n"
            "time.sleep(600)\n",
            str(port),
            str(tmp_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    moto_pid = int(parent.stdout.readline())
    server = Server.__new__(Server)
    server.url, server.process = f"http://127.0.0.1:{port}", parent
    try:
        server.wait_ready()
        server.client("sqs").create_queue(QueueName="kept-by-the-last-save")
        os.kill(moto_pid, signal.SIGINT)
        assert server.client("sqs").list_queues()["QueueUrls"]  # still serving
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 30
        while _alive(moto_pid):
            assert time.monotonic() < deadline, "moto outlived the stack that started it"
            time.sleep(0.2)
        assert _saved(tmp_path, "sqs", b"kept-by-the-last-save")
    finally:
        parent.kill()
        if _alive(moto_pid):
            os.kill(moto_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # an exited child of a dead parent is reaped by init; until then it is a zombie, which has stopped all the same
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
