"""A finished job's transcript larger than a function may answer: GET /v1/jobs/{id} leaves it out and links to it,
and GET /v1/jobs/{id}/result answers 303 with a presigned link to the transcript as rendered, which downloads from
the bucket (moto) byte for byte; a transcript that fits is answered inline. Through the real handler."""

from __future__ import annotations

import uuid

import requests
from infery.domain.inference import InferenceResult, Task, Word
from infery.domain.jobs import JobStatus, new_job
from infery.domain.transcription import TranscriptionOptions

from tests.support.api import assert_ok
from tests.support.builders import segment
from tests.support.model_replies import model_answer

# about an hour of words: a verbose_json of some 600 KB
WORDS = 9_000
RESULT = InferenceResult(
    text=" ".join(f"word{index}" for index in range(WORDS)),
    language="en",
    duration=3600.0,
    segments=[segment(0, 0.0, 3600.0, " " + " ".join(f"word{index}" for index in range(WORDS)))],
    words=[Word(word=f"word{index}", start=index * 0.4, end=index * 0.4 + 0.3) for index in range(WORDS)],
)


def finished_job(api, key) -> str:
    wiring = api.module.wiring
    job = new_job(
        job_id="job_" + uuid.uuid4().hex,
        key_id=key.key_id,
        key_hash=key.key_hash,
        options=TranscriptionOptions(
            task=Task.TRANSCRIBE, model="whisper-1", response_format="verbose_json", timestamp_granularities=["word"]
        ),
        status=JobStatus.QUEUED,
    )
    wiring.job_store.create(job)
    result_key = wiring.audio_store.put_result(key.key_id, job.job_id, RESULT)
    wiring.job_store.succeed(job.job_id, result_key=result_key, credits_used=720, audio_seconds=3600.0)
    return job.job_id


def test_a_transcript_past_the_answer_limit_is_a_link_that_downloads_it(fake_runtime, load_api, accounts):
    api = load_api(fake_runtime(200, model_answer(12.0))[0])
    api_key, key = accounts.new_key(10)
    job_id = finished_job(api, key)
    api.module.wiring.job_presenter.max_inline_bytes = 100_000  # 6 MB would be slow to build here: the rule is one

    view = api.call("GET", f"/v1/jobs/{job_id}", api_key=api_key)
    assert_ok(view)
    assert view.json()["result"] is None
    assert view.json()["result_url"] == f"/v1/jobs/{job_id}/result?response_format=verbose_json"

    linked = api.call("GET", f"/v1/jobs/{job_id}/result", api_key=api_key)
    assert linked.status == 303, linked.text
    answer = linked.json()
    assert linked.header("location") == answer["url"] and answer["expires_in"] == 900
    downloaded = requests.get(answer["url"], timeout=30)
    assert downloaded.status_code == 200 and downloaded.headers["content-type"] == "application/json"
    assert len(downloaded.content) == answer["bytes"] > 100_000
    assert downloaded.json()["words"][-1]["word"] == f"word{WORDS - 1}"
    assert linked.header("x-infery-credits-used") == "720"

    # in a format that fits, the same job answers inline
    text = api.call("GET", f"/v1/jobs/{job_id}/result?response_format=text", api_key=api_key)
    assert_ok(text)
    assert text.text.strip().endswith(f"word{WORDS - 1}")


def test_a_link_is_only_for_the_jobs_own_key(fake_runtime, load_api, accounts):
    api = load_api(fake_runtime(200, model_answer(12.0))[0])
    api_key, key = accounts.new_key(10)
    other_key, _ = accounts.new_key(10)
    job_id = finished_job(api, key)
    api.module.wiring.job_presenter.max_inline_bytes = 100_000
    assert api.call("GET", f"/v1/jobs/{job_id}/result", api_key=other_key).status == 404
