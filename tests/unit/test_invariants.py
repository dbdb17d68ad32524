"""Rules that tie template.yaml, the settings and the CLI together, checked here instead of kept in comments.

Each reads the deployed values as template.yaml gives them (resolved as the local stack resolves them) and the
settings the functions build from that environment; a change to one side that breaks a rule fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from infery.domain.transcription import ResponseFormat
from infery.settings import ApiSettings, EnvironmentSettings, ReconcilerSettings, WorkerSettings
from infery_cli import client

from local_stack.template import LocalTemplate, load_template

# API Gateway's REST integration timeout: the gateway answers 504 itself after this long
API_GATEWAY_TIMEOUT_SECONDS = 29


@pytest.fixture(scope="module")
def local() -> LocalTemplate:
    return LocalTemplate(load_template())


SETTINGS: dict[str, type[EnvironmentSettings]] = {
    "TranscribeFunction": ApiSettings,
    "WorkerFunction": WorkerSettings,
    "ReconcilerFunction": ReconcilerSettings,
}


@pytest.fixture
def settings_of(local: LocalTemplate, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Any]:
    """The settings a function reads (its own model) from the environment template.yaml gives it."""

    def read(function: str) -> Any:
        with monkeypatch.context() as environment:
            for name, value in local.function_environment(function).items():
                environment.setenv(name, value)
            return SETTINGS[function].from_environment()

    return read


def properties(local: LocalTemplate, logical_id: str) -> dict[str, Any]:
    properties: dict[str, Any] = local.resources[logical_id]["Properties"]
    return properties


def function_timeout(local: LocalTemplate, function: str) -> int:
    own = properties(local, function).get("Timeout")
    return int(own if own is not None else local.template["Globals"]["Function"]["Timeout"])


def test_the_worker_fails_a_job_on_the_last_delivery_the_jobs_queue_makes(local, settings_of):
    # on its last delivery (WORKER_MAX_RECEIVES) a failing job is failed and refunded, not retried: that must be the
    # delivery after which SQS moves the message to the dead-letter queue
    max_receive_count = int(properties(local, "JobsQueue")["RedrivePolicy"]["maxReceiveCount"])
    assert settings_of("WorkerFunction").worker_max_receives == max_receive_count
    assert WorkerSettings.model_fields["worker_max_receives"].default == max_receive_count


def test_a_workers_lease_outlasts_the_worker(local, settings_of):
    # another worker may take a job whose lease ran out: never while the worker that holds it can still be running
    assert settings_of("WorkerFunction").worker_lease_seconds > function_timeout(local, "WorkerFunction")


def test_a_job_message_is_not_redelivered_while_a_worker_still_runs_it(local):
    assert int(properties(local, "JobsQueue")["VisibilityTimeout"]) >= 6 * function_timeout(local, "WorkerFunction")


def test_the_api_gives_up_on_the_model_before_its_deadline_and_that_before_api_gateway(local, settings_of):
    # the model call times out first (a 504 that says nothing was charged), then the deadline after which nothing is
    # settled, and both before API Gateway's own 504
    settings = settings_of("TranscribeFunction")
    assert settings.endpoint_timeout_seconds < settings.api_deadline_seconds < API_GATEWAY_TIMEOUT_SECONDS
    assert function_timeout(local, "TranscribeFunction") >= API_GATEWAY_TIMEOUT_SECONDS


def test_the_cli_sends_the_sync_path_what_it_takes_and_asks_for_the_formats_there_are(local, settings_of):
    deployed = int(local.resolve({"Ref": "MaxSyncAudioBytes"}))
    assert client.SYNC_LIMIT_BYTES == deployed == settings_of("TranscribeFunction").max_sync_audio_bytes
    assert set(client.FORMATS) == {response_format.value for response_format in ResponseFormat}
