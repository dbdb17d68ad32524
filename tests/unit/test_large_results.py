"""A transcript larger than a function may answer (ten hours of verbose_json with words passes 6 MB) is never put in a
job's view or webhook, and its own GET is a link to download it; a smaller one is answered as before."""

from __future__ import annotations

import json

from infery.domain.inference import InferenceResult, Word
from infery.domain.jobs import JobStatus
from infery.domain.transcription import ResponseFormat
from infery.usecases.job_views import JobPresenter

from tests.support.builders import segment
from tests.support.job_world import World

TEN_WORDS = InferenceResult(
    text="one two three four five six seven eight nine ten",
    language="en",
    duration=5.0,
    segments=[segment(0, 0.0, 5.0, " one two three four five six seven eight nine ten")],
    words=[Word(word=f"w{index}", start=index * 0.5, end=index * 0.5 + 0.4) for index in range(10)],
)


def finished_world() -> World:
    world = World()
    world.jobs.jobs[world.job.job_id] = world.job.model_copy(
        update={
            "status": JobStatus.SUCCEEDED,
            "result_key": world.audio.put_result(world.job.key_id, world.job.job_id, TEN_WORDS),
            "credits_used": 1,
        }
    )
    return world


def test_a_small_transcript_is_in_the_view_and_answered_inline():
    world = finished_world()
    presenter = JobPresenter(world.audio)
    view = presenter.view(world.job_now, ResponseFormat.VERBOSE_JSON)
    assert view["result"]["text"] == TEN_WORDS.text and "result_url" not in view
    rendered = presenter.render_result(world.job_now, ResponseFormat.VERBOSE_JSON)
    assert presenter.large_result(world.job_now, rendered, ResponseFormat.VERBOSE_JSON) is None


def test_a_transcript_past_the_limit_is_left_out_of_the_view_and_stored_rendered_behind_a_link():
    world = finished_world()
    rendered_json = JobPresenter(world.audio).render_result(world.job_now, ResponseFormat.VERBOSE_JSON)
    size = len(json.dumps(rendered_json.body).encode())
    presenter = JobPresenter(world.audio, max_inline_bytes=size - 1)

    view = presenter.view(world.job_now, ResponseFormat.VERBOSE_JSON)
    assert view["result"] is None
    assert view["result_url"] == f"/v1/jobs/{world.job.job_id}/result?response_format=verbose_json"
    assert "seven eight" not in json.dumps(view)  # the view (and so the webhook) holds no transcript

    large = presenter.large_result(world.job_now, rendered_json, ResponseFormat.VERBOSE_JSON)
    assert large is not None and large.size == size and large.expires_in == 900
    stored = world.audio.objects[f"results/{world.job.key_id}/{world.job.job_id}.verbose_json"]
    assert json.loads(stored) == rendered_json.body  # the download is the answer, byte for byte what was rendered
    assert large.url.endswith(f"{world.job.job_id}.verbose_json?X-Amz-Expires=900")

    # the same job in a smaller format still fits: the limit is on what is answered, not on the job
    assert presenter.view(world.job_now, ResponseFormat.TEXT)["result"].strip() == TEN_WORDS.text
