"""Review: defects in long jobs in parts."""

from __future__ import annotations

from infery.domain.errors import ModelFailed
from infery.domain.jobs import JobStatus
from infery.domain.transcription import ResponseFormat
from infery.usecases.charging import TranscriptionTerms

from tests.support.job_world import KEY, World, wav
from tests.unit.test_job_parts import JOB_ID, parted_world, run_parts


def test_a_stale_part_failure_does_not_release_the_next_attempt():
    """Two parts of attempt 1 fail for the second time, their notifications handled concurrently: H1 requeues the
    job and a worker starts attempt 2; H2, which read the job while attempt 1 ran, then releases attempt 2."""
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
    from infery.domain.errors import InvalidRequest

    world.runner._part_failed(stale_job, stale_job.parts[1], InvalidRequest("refused", code="undecodable_audio"))
    now = world.job_now
    held = world.credits.open.get(f"{JOB_ID}.2")
    assert now.status is JobStatus.RUNNING, (now.status, "attempt 2 still holds", held and held.credits)


def test_a_diarized_job_longer_than_one_invocation_is_refused_before_it_is_reserved():
    """README: a diarized job is not cut, so it is limited to MaxAudioSeconds. A 6-hour diarized job (MaxAudioSeconds
    4 h, MaxJobAudioSeconds 10 h) is reserved and submitted as one invocation the model must refuse."""
    world = World(balance=100_000, audio=wav(6 * 3600.0))
    world.runner.terms = TranscriptionTerms(
        catalog=world.runner.terms.catalog,
        pricing=world.runner.terms.pricing,
        max_audio_seconds=4 * 3600.0,
        max_sync_audio_seconds=300.0,
        min_audio_sample_rate=8_000,
        max_job_audio_seconds=10 * 3600.0,
    )
    world.jobs.jobs[JOB_ID] = world.job.model_copy(
        update={"options": world.job.options.model_copy(update={"response_format": ResponseFormat.DIARIZED_JSON})}
    )
    world.runner.run(JOB_ID, final_attempt=True)
    submitted = [(inference_id, request.max_audio_seconds) for inference_id, request in world.endpoint.submitted]
    assert submitted == [], (submitted, world.kinds(), world.balance(), world.job_now.status)


def test_a_refused_drop_whose_fail_write_failed_is_never_run_with_the_default_options():
    """job_for_object creates the refused drop's job QUEUED, then fails it. If that second write fails (DynamoDB
    throttled), the S3 event is delivered again, create finds the job, skips the fail, and it stays QUEUED with the
    default options: the reconciler re-drives it and the worker runs and charges it."""
    from tests.unit.test_inbox_options import drop

    world = World()
    real_fail = world.jobs.fail
    calls = []

    def flaky_fail(job_id, error):
        calls.append(job_id)
        if len(calls) == 1:
            raise RuntimeError("ProvisionedThroughputExceededException")
        return real_fail(job_id, error)

    world.jobs.fail = flaky_fail
    metadata = {"infery-colour": "blue"}
    try:
        drop(world, metadata)
    except RuntimeError:
        pass  # the event is delivered again
    assert drop(world, metadata) is None
    [job] = [job for job in world.jobs.jobs.values() if job.job_id != world.job.job_id]
    assert job.status is JobStatus.FAILED, (job.status, job.options.response_format)


def test_listing_running_parted_jobs_reads_one_progress_object_per_part():
    from infery.usecases.job_views import JobPresenter

    world = World(balance=100_000, audio=wav(10 * 3600.0))
    world.runner.terms = TranscriptionTerms(
        catalog=world.runner.terms.catalog,
        pricing=world.runner.terms.pricing,
        max_audio_seconds=4 * 3600.0,
        max_sync_audio_seconds=300.0,
        min_audio_sample_rate=8_000,
        max_job_audio_seconds=11 * 3600.0,
    )
    job = world.runner.run(JOB_ID, final_attempt=False)
    reads = []
    presenter = JobPresenter(world.audio, model_progress=lambda key_id, inference_id: reads.append(inference_id))
    presenter.view(job)
    assert len(reads) <= 1, f"{len(job.parts)} parts: {len(reads)} S3 GETs for one job's view; x100 in GET /v1/jobs"


def test_one_transient_read_of_a_finished_parts_output_does_not_throw_away_every_part():
    """Every part is in; reading part 0's output again at the stitch fails once (S3 throttled). The attempt is
    given up, refunded and queued again: all parts (10 hours of model time for a 10-hour job) run again."""
    from tests.unit.test_job_parts import part_result

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
