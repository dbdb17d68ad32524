"""A long job in parts: planned from its reservation, submitted as one invocation per part, stitched on the file's
timeline when its last part is in, charged once; a part that fails for a reason of ours is submitted again alone.
Through in-memory fakes (infery.domain.parts and JobService); the model side is tested in tests/unit and
tests/integration against the real model server."""

from __future__ import annotations

import pytest
from infery.domain.errors import InvalidRequest, ModelFailed
from infery.domain.ids import job_id_of_attempt, parse_part_inference_id, part_inference_id
from infery.domain.inference import AudioPart, InferenceResult, TokenLogprob, Word
from infery.domain.jobs import JobStatus
from infery.domain.parts import gaps_between, part_budget_seconds, plan_parts, stitch
from infery.domain.transcription import ResponseFormat
from infery.usecases.charging import TranscriptionTerms
from infery.usecases.job_views import JobPresenter
from pydantic import ValidationError

from tests.support.builders import segment
from tests.support.job_world import HOLD_SECONDS, KEY, World, wav

JOB_ID = "job_0123456789abcdef0123456789abcdef"


def part_result(start: float, end: float, text: str, *, language: str = "en") -> InferenceResult:
    """What the model answers for a part: one segment and its words, on the file's timeline."""
    words = [
        Word(word=word, start=round(start + index * 0.5, 3), end=round(start + index * 0.5 + 0.4, 3))
        for index, word in enumerate(text.split())
    ]
    return InferenceResult(
        text=text,
        language=language,
        duration=round(end - start, 3),
        audio_start=start,
        segments=[segment(0, start + 0.2, end - 0.2, " " + text)],
        words=words,
    )


# --- the plan ---------------------------------------------------------------------------------------------------


def test_a_job_that_fits_one_part_is_not_cut():
    assert plan_parts(1800.0, 1800.0, 30.0) == []
    assert plan_parts(12.0, 1800.0, 30.0) == []


def test_ten_hours_are_twenty_equal_parts_that_meet_end_to_start_and_cover_the_file():
    parts = plan_parts(36_000.0, 1800.0, 30.0)
    assert len(parts) == 20
    assert parts[0].start is None and parts[-1].end is None  # from the file's start, to its real end
    assert all(previous.end == following.start for previous, following in zip(parts, parts[1:], strict=False))
    assert {round((part.end or 36_000.0) - (part.start or 0.0), 3) for part in parts} == {1800.0}


def test_a_little_over_one_part_is_two_nearly_equal_parts_never_a_sliver():
    parts = plan_parts(1801.0, 1800.0, 30.0)
    assert [(part.start, part.end) for part in parts] == [(None, 900.5), (900.5, None)]


def test_a_part_pays_for_its_stretch_and_both_searches_with_a_margin_and_no_more():
    middle = AudioPart(start=1800.0, end=3600.0, search_seconds=30.0)
    assert part_budget_seconds(middle, 36_000.0) == pytest.approx((3630.0 - 1770.0) * 1.02 + 1.0)
    assert part_budget_seconds(AudioPart(end=1800.0, search_seconds=30.0), 36_000.0) == pytest.approx(
        1830.0 * 1.02 + 1.0
    )
    last = AudioPart(start=34_200.0, search_seconds=30.0)
    assert part_budget_seconds(last, 36_000.0) == pytest.approx(1860.0 * 1.02 + 1.0)


def test_a_part_no_longer_than_its_two_searches_is_refused_by_the_contract():
    with pytest.raises(ValidationError):
        AudioPart(start=100.0, end=150.0, search_seconds=30.0)


def test_a_parts_invocation_names_its_attempt_and_its_index_and_its_job():
    assert part_inference_id(JOB_ID, 3) == f"{JOB_ID}~p3"
    assert part_inference_id(f"{JOB_ID}.2", 11, 2) == f"{JOB_ID}.2~p11r2"
    assert parse_part_inference_id(f"{JOB_ID}.2~p11r2") == (f"{JOB_ID}.2", 11)
    assert parse_part_inference_id(f"{JOB_ID}.2") is None and parse_part_inference_id(JOB_ID) is None
    assert job_id_of_attempt(f"{JOB_ID}.2~p11r2") == job_id_of_attempt(f"{JOB_ID}~p0") == JOB_ID


# --- the stitch ---------------------------------------------------------------------------------------------------


def test_parts_are_joined_in_order_with_segments_renumbered_and_tokens_pointing_at_them():
    first = part_result(0.0, 10.0, "one two three")
    second = part_result(10.0, 18.5, "four five")
    second.logprobs = [TokenLogprob(token=" four", logprob=-0.1, bytes=[32], segment=0)]
    joined = stitch([first, second])
    assert joined.text == "one two three four five"
    assert [segment.id for segment in joined.segments] == [0, 1]
    assert [word.word for word in joined.words or []] == ["one", "two", "three", "four", "five"]
    assert joined.logprobs is not None and joined.logprobs[0].segment == 1
    assert joined.duration == 18.5 and joined.audio_start == 0.0
    assert gaps_between([first, second]) == [0.0]


def test_the_language_is_the_one_the_longest_spoken_part_was_in():
    joined = stitch([part_result(0.0, 5.0, "hola", language="es"), part_result(5.0, 30.0, "hello", language="en")])
    assert joined.language == "en"


def test_parts_that_do_not_meet_show_the_gap_or_the_overlap():
    assert gaps_between([part_result(0.0, 10.0, "a"), part_result(10.4, 20.0, "b")]) == [0.4]
    assert gaps_between([part_result(0.0, 10.0, "a"), part_result(9.5, 20.0, "b")]) == [-0.5]


# --- the job ------------------------------------------------------------------------------------------------------


def parted_world(seconds: float = 25.0, balance: int = 100) -> World:
    """A queued job of ``seconds`` of audio, run in parts of 10 s searched 1 s around their edges."""
    world = World(balance=balance, audio=wav(seconds))
    world.runner.part_seconds = 10.0
    world.runner.part_search_seconds = 1.0
    return world


def run_parts(world: World) -> list[tuple[str, AudioPart]]:
    world.runner.run(world.job.job_id, final_attempt=False)
    submitted = [(inference_id, request.part) for inference_id, request in world.endpoint.submitted]
    assert all(part is not None for _, part in submitted)
    return [(inference_id, part) for inference_id, part in submitted if part is not None]


def test_a_long_job_is_reserved_once_and_submitted_as_parts_each_paying_for_its_stretch():
    world = parted_world()
    submitted = run_parts(world)
    covered = 25.0 * 1.02 + 0.5
    assert [inference_id for inference_id, _ in submitted] == [f"{JOB_ID}~p{index}" for index in range(3)]
    assert [(part.start, part.end) for _, part in submitted] == [
        (None, round(covered / 3, 3)),
        (round(covered / 3, 3), round(2 * covered / 3, 3)),
        (round(2 * covered / 3, 3), None),
    ]
    requests = [request for _, request in world.endpoint.submitted]
    assert [request.max_audio_seconds for request in requests] == [
        part_budget_seconds(part, covered) for _, part in submitted
    ]
    assert all(request.audio_s3_etag == "etag-1" for request in requests)  # each reads the version priced
    assert len({request.progress_s3_uri for request in requests}) == 3  # each reports its own progress
    assert world.kinds() == [(JOB_ID, "reserve")]  # one reservation for the whole job
    assert world.job_now.inference_id == JOB_ID and len(world.job_now.parts) == 3
    # held through one round of parts submitted again
    reservation = world.credits.open[JOB_ID]
    assert reservation.hold_until_epoch == reservation.created_epoch + 2 * HOLD_SECONDS


def test_the_job_is_settled_once_on_the_file_timeline_when_its_last_part_is_in_whatever_the_order():
    world = parted_world()
    ids = [inference_id for inference_id, _ in run_parts(world)]
    results = [part_result(0.0, 8.4, "one two"), part_result(8.4, 17.1, "three"), part_result(17.1, 25.0, "four")]
    for inference_id, result in zip(ids, results, strict=True):
        world.endpoint.outcomes[inference_id] = result
    for inference_id in (ids[2], ids[0]):
        still_running = world.runner.complete(world.endpoint.notification(inference_id))
        assert still_running is not None and still_running.status is JobStatus.RUNNING
        assert world.kinds() == [(JOB_ID, "reserve")]
    finished = world.runner.complete(world.endpoint.notification(ids[1]))
    assert finished is not None and finished.status is JobStatus.SUCCEEDED
    assert finished.audio_seconds == 25.0 and finished.credits_used == 5  # 25 s at 5 s per credit
    assert world.kinds() == [(JOB_ID, "reserve"), (JOB_ID, "settle")]
    stored = world.audio.results[finished.result_key or ""]
    assert stored.text == "one two three four"
    assert [segment.start for segment in stored.segments] == [0.2, 8.6, 17.3]

    for inference_id in ids:  # every notification delivered again: nothing changes, nothing is charged twice
        assert world.runner.complete(world.endpoint.notification(inference_id)) is None
    assert world.credits.charged(KEY.key_id) == 5 and len(world.credits.entries) == 2


def test_a_part_that_fails_for_a_reason_of_ours_is_submitted_again_alone_and_the_job_charged_once():
    world = parted_world()
    ids = [inference_id for inference_id, _ in run_parts(world)]
    world.endpoint.outcomes[ids[1]] = ModelFailed("The model failed while transcribing this job.")
    again = world.runner.complete(world.endpoint.notification(ids[1], succeeded=False))
    assert again is not None and again.status is JobStatus.RUNNING
    resubmitted = [inference_id for inference_id, _ in world.endpoint.submitted[3:]]
    assert resubmitted == [f"{JOB_ID}~p1r2"]  # the other parts are not run again
    assert world.endpoint.submitted[3][1].part == world.endpoint.submitted[1][1].part
    assert world.kinds() == [(JOB_ID, "reserve")]  # the reservation stays

    # the failed invocation's notification again, or late: it names no running part
    assert world.runner.complete(world.endpoint.notification(ids[1], succeeded=False)) is None
    results = [part_result(0.0, 8.0, "a"), part_result(8.0, 17.0, "b"), part_result(17.0, 25.0, "c")]
    for inference_id, result in zip([ids[0], resubmitted[0], ids[2]], results, strict=True):
        world.endpoint.outcomes[inference_id] = result
        world.runner.complete(world.endpoint.notification(inference_id))
    assert world.job_now.status is JobStatus.SUCCEEDED and world.credits.charged(KEY.key_id) == 5


def test_a_part_that_fails_twice_ends_the_attempt_refunded_and_the_job_goes_back_to_the_queue():
    world = parted_world()
    ids = [inference_id for inference_id, _ in run_parts(world)]
    world.endpoint.outcomes[ids[0]] = ModelFailed("boom")
    world.runner.complete(world.endpoint.notification(ids[0], succeeded=False))
    world.endpoint.outcomes[f"{JOB_ID}~p0r2"] = ModelFailed("boom again")
    requeued = world.runner.complete(world.endpoint.notification(f"{JOB_ID}~p0r2", succeeded=False))
    assert requeued is not None and requeued.status is JobStatus.QUEUED
    assert world.queue.sent == [JOB_ID] and world.balance() == 100
    assert world.kinds() == [(JOB_ID, "reserve"), (JOB_ID, "refund")]

    # the attempt's other parts finish late: they name no running attempt, and charge nothing
    world.endpoint.outcomes[ids[2]] = part_result(17.0, 25.0, "late")
    assert world.runner.complete(world.endpoint.notification(ids[2])) is None
    assert world.balance() == 100

    retried = world.runner.run(JOB_ID, final_attempt=False)
    assert retried is not None and [part.inference_id for part in retried.parts] == [
        f"{JOB_ID}.2~p{index}" for index in range(3)
    ]


def test_a_part_the_model_refuses_fails_the_job_at_once_refunded():
    world = parted_world()
    ids = [inference_id for inference_id, _ in run_parts(world)]
    world.endpoint.outcomes[ids[2]] = InvalidRequest(
        "The audio is longer than its header declares.", code="audio_longer_than_declared"
    )
    failed = world.runner.complete(world.endpoint.notification(ids[2], succeeded=False))
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error is not None and failed.error.code == "audio_longer_than_declared"
    assert world.balance() == 100 and len(world.endpoint.submitted) == 3  # nothing submitted again


def test_a_diarized_job_is_never_cut_its_speakers_are_labelled_over_the_whole_file():
    world = parted_world()
    world.jobs.jobs[JOB_ID] = world.job.model_copy(
        update={"options": world.job.options.model_copy(update={"response_format": ResponseFormat.DIARIZED_JSON})}
    )
    world.runner.run(JOB_ID, final_attempt=False)
    [(inference_id, request)] = world.endpoint.submitted
    assert inference_id == JOB_ID and request.part is None and world.job_now.parts == []
    reservation = world.credits.open[JOB_ID]
    assert reservation.hold_until_epoch == reservation.created_epoch + HOLD_SECONDS  # one invocation's hold


def test_a_running_parted_jobs_progress_is_the_mean_of_its_parts():
    world = parted_world()
    ids = [inference_id for inference_id, _ in run_parts(world)]
    world.endpoint.outcomes[ids[0]] = part_result(0.0, 8.0, "a")
    world.runner.complete(world.endpoint.notification(ids[0]))
    reported = {ids[1]: 0.5}  # the third has not reported yet
    presenter = JobPresenter(world.audio, model_progress=lambda _key, inference_id: reported.get(inference_id))
    assert presenter.view(world.job_now)["progress"] == pytest.approx(0.1 + 0.85 * (1.0 + 0.5 + 0.0) / 3, abs=1e-3)
    assert "parts" not in presenter.view(world.job_now)


# --- found in review: late and concurrent notifications, limits, reads -------------------------------------------


def four_hour_invocations(world: World, *, max_job_hours: float) -> TranscriptionTerms:
    """The world's terms with the deployment's invocation limit (4 h) and a job limit of ``max_job_hours``."""
    return TranscriptionTerms(
        catalog=world.runner.terms.catalog,
        pricing=world.runner.terms.pricing,
        max_audio_seconds=4 * 3600.0,
        max_sync_audio_seconds=300.0,
        min_audio_sample_rate=8_000,
        max_job_audio_seconds=max_job_hours * 3600.0,
    )


def test_a_stale_part_failure_does_not_release_the_next_attempt():
    """Two parts of attempt 1 fail for the second time, their notifications handled concurrently: H1 requeues the
    job and a worker starts attempt 2; H2, which read the job while attempt 1 ran, must not release attempt 2."""
    world = parted_world()
    ids = [inference_id for inference_id, _ in run_parts(world)]
    for index in (0, 1):
        world.endpoint.outcomes[ids[index]] = ModelFailed("boom")
        world.runner.complete(world.endpoint.notification(ids[index], succeeded=False))
    stale_job = world.job_now  # H2 reads the job (attempt 1 running, part 1 at its 2nd submission)
    stale_part = stale_job.parts[1]
    # H1: part 0's second failure ends attempt 1, the job is queued again, and a worker starts attempt 2
    world.endpoint.outcomes[f"{JOB_ID}~p0r2"] = ModelFailed("boom again")
    world.runner.complete(world.endpoint.notification(f"{JOB_ID}~p0r2", succeeded=False))
    attempt2 = world.runner.run(JOB_ID, final_attempt=False)
    assert attempt2 is not None and attempt2.status is JobStatus.RUNNING and attempt2.inference_id == f"{JOB_ID}.2"
    # H2 goes on with what it read: part 1's second failure
    world.runner._part_failed(stale_job, stale_part, ModelFailed("boom again"))
    now = world.job_now
    # attempt 2 is still the running attempt, its parts on the endpoint
    assert now.status is JobStatus.RUNNING and now.inference_id == f"{JOB_ID}.2", (now.status, now.inference_id)


def test_a_stale_part_failure_on_the_last_attempt_does_not_fail_the_running_attempt():
    world = parted_world()
    world.runner.max_attempts = 2
    ids = [inference_id for inference_id, _ in run_parts(world)]
    for index in (0, 1):
        world.endpoint.outcomes[ids[index]] = ModelFailed("boom")
        world.runner.complete(world.endpoint.notification(ids[index], succeeded=False))
    stale_job = world.job_now
    world.endpoint.outcomes[f"{JOB_ID}~p0r2"] = ModelFailed("boom again")
    world.runner.complete(world.endpoint.notification(f"{JOB_ID}~p0r2", succeeded=False))
    world.runner.run(JOB_ID, final_attempt=False)  # attempt 2 (the last) reserves and submits its parts
    world.runner._part_failed(stale_job, stale_job.parts[1], InvalidRequest("refused", code="undecodable_audio"))
    now = world.job_now
    held = world.credits.open.get(f"{JOB_ID}.2")
    assert now.status is JobStatus.RUNNING, (now.status, "attempt 2 still holds", held and held.credits)


def test_a_diarized_job_longer_than_one_invocation_is_refused_before_it_is_reserved():
    """A diarized job is not cut, so it is limited to what one invocation takes (MaxAudioSeconds): a 6-hour one
    (MaxAudioSeconds 4 h, MaxJobAudioSeconds 10 h) fails before anything is reserved or submitted."""
    world = World(balance=100_000, audio=wav(6 * 3600.0))
    world.runner.terms = four_hour_invocations(world, max_job_hours=10)
    world.jobs.jobs[JOB_ID] = world.job.model_copy(
        update={"options": world.job.options.model_copy(update={"response_format": ResponseFormat.DIARIZED_JSON})}
    )
    world.runner.run(JOB_ID, final_attempt=True)
    submitted = [(inference_id, request.max_audio_seconds) for inference_id, request in world.endpoint.submitted]
    assert submitted == [], (submitted, world.kinds(), world.balance(), world.job_now.status)
    failed = world.job_now
    assert failed.status is JobStatus.FAILED and failed.error is not None and failed.error.code == "audio_too_long"
    assert "speakers" in failed.error.message and world.kinds() == []  # nothing reserved


def test_a_running_parted_jobs_view_reads_one_progress_report_whatever_its_parts():
    world = World(balance=100_000, audio=wav(10 * 3600.0))
    world.runner.terms = four_hour_invocations(world, max_job_hours=11)
    job = world.runner.run(JOB_ID, final_attempt=False)
    reads = []
    presenter = JobPresenter(world.audio, model_progress=lambda key_id, inference_id: reads.append(inference_id))
    presenter.view(job)
    assert len(reads) <= 1, f"{len(job.parts)} parts: {len(reads)} S3 GETs for one job's view; x100 in GET /v1/jobs"


def test_one_transient_read_of_a_finished_parts_output_does_not_throw_away_every_part():
    """Every part is in; reading part 0's output again at the stitch fails once (S3 throttled): raised, so the
    notification comes back, and the attempt is not given up (its parts, 10 hours of model time for a 10-hour job,
    are not run again)."""
    world = parted_world()
    ids = [inference_id for inference_id, _ in run_parts(world)]
    results = [part_result(0.0, 8.4, "one two"), part_result(8.4, 17.1, "three"), part_result(17.1, 25.0, "four")]
    for inference_id, result in zip(ids, results, strict=True):
        world.endpoint.outcomes[inference_id] = result
    world.runner.complete(world.endpoint.notification(ids[0]))
    world.runner.complete(world.endpoint.notification(ids[1]))
    real_output = world.endpoint.output
    failures = []

    def flaky_output(location):
        if location.endswith(f"{ids[0]}.out") and not failures:
            failures.append(location)
            raise RuntimeError("SlowDown")
        return real_output(location)

    world.endpoint.output = flaky_output
    try:
        world.runner.complete(world.endpoint.notification(ids[2]))
    except Exception:
        pass  # raised: the notification is delivered again
    now = world.job_now
    assert now.status is JobStatus.RUNNING and now.inference_id == JOB_ID, (now.status, world.queue.sent, world.kinds())
