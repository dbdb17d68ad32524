"""Lambda SnapStart's runtime hooks on the transcribe handler: registered at import where Lambda's runtime offers
``snapshot_restore_py``, and what a restored copy then does, against moto: the before-snapshot hook builds what the
first requests use without calling AWS, and requests after the two hooks work on what it built."""

from __future__ import annotations

import types
import uuid

import pytest
from infery import snapstart

from tests.support.api import assert_ok
from tests.support.model_replies import model_answer


@pytest.fixture
def lambda_runtime_hooks(monkeypatch):
    """``snapshot_restore_py`` as Lambda's Python runtime provides it, recording what the handler registers."""
    registered: dict[str, list] = {"before_snapshot": [], "after_restore": []}
    module = types.ModuleType("snapshot_restore_py")
    module.register_before_snapshot = registered["before_snapshot"].append  # type: ignore[attr-defined]
    module.register_after_restore = registered["after_restore"].append  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "snapshot_restore_py", module)
    return registered


def test_the_handler_registers_its_hooks_with_lambdas_runtime(lambda_runtime_hooks, load_api, closed_port_url):
    api = load_api(closed_port_url)
    assert lambda_runtime_hooks == {
        "before_snapshot": [api.module._before_snapshot],
        "after_restore": [snapstart.restored],
    }


def test_before_the_snapshot_every_collaborator_is_built_without_calling_aws(
    lambda_runtime_hooks, load_api, closed_port_url, monkeypatch
):
    # every AWS endpoint refuses connections: a call made before the snapshot would fail the hook
    for service in ("DYNAMODB", "S3", "SQS", "SNS"):
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service}", closed_port_url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    api = load_api(closed_port_url)
    built_at_import = set(vars(api.module.wiring))
    assert not built_at_import & set(snapstart.API_COLLABORATORS)  # a cold start without SnapStart builds them later
    [before_snapshot] = lambda_runtime_hooks["before_snapshot"]
    before_snapshot()
    assert set(snapstart.API_COLLABORATORS) <= set(vars(api.module.wiring))


def test_requests_after_the_snapshot_and_the_restore_work(lambda_runtime_hooks, fake_runtime, load_api, accounts, wav):
    url, fake = fake_runtime(200, model_answer(4.2))
    api = load_api(url)
    [before_snapshot], [after_restore] = lambda_runtime_hooks["before_snapshot"], lambda_runtime_hooks["after_restore"]
    before_snapshot()
    built = {name: getattr(api.module.wiring, name) for name in snapstart.API_COLLABORATORS}
    after_restore()

    api_key, item = accounts.new_key(10)
    transcription = api.transcribe(api_key, wav)
    assert_ok(transcription)
    assert transcription.json()["text"] == "Hello there." and fake.calls == 1
    assert accounts.balance(item) == 9  # 4.2 s: one credit, charged once
    # an Idempotency-Key request (powertools' store built before the snapshot): the retry is a replay
    headers = [("Idempotency-Key", f"order-{uuid.uuid4()}")]
    first, retry = api.transcribe(api_key, wav, headers=headers), api.transcribe(api_key, wav, headers=headers)
    assert_ok(first)
    assert_ok(retry)
    assert retry.header("idempotent-replayed") == "true" and fake.calls == 2
    assert accounts.balance(item) == 8
    upload = api.call(
        "POST", "/v1/uploads", body=b'{"filename": "a.wav"}', content_type="application/json", api_key=api_key
    )
    assert upload.status == 201, upload.text
    job = api.call("GET", f"/v1/jobs/{upload.json()['job_id']}", api_key=api_key, resource="/v1/jobs/{job_id}")
    assert_ok(job)
    # the requests used what the snapshot held, not collaborators built again
    assert all(getattr(api.module.wiring, name) is collaborator for name, collaborator in built.items())
