"""How a job looks from outside (GET /v1/jobs/{id}, its result, its webhook): one presenter for API and worker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infery.domain.errors import Conflict
from infery.domain.formats import RenderedTranscript, render_for
from infery.domain.inference import InferenceResult
from infery.domain.jobs import Job, JobStatus
from infery.domain.transcription import ResponseFormat
from infery.usecases.ports import Results

# Progress a running job shows: claimed and submitted, then the model's share of windows decoded, then settling.
SUBMITTED_PROGRESS = 0.1
MODEL_SHARE_OF_PROGRESS = 0.85


@dataclass
class JobPresenter:
    results: Results
    # (key_id, inference_id) -> the model's progress through the audio (0..1), when it has reported one
    model_progress: Callable[[str, str], float | None] | None = None

    def view(
        self, job: Job, response_format: ResponseFormat | None = None, *, result: InferenceResult | None = None
    ) -> dict[str, Any]:
        """The job as the API shows it, with its result rendered in the job's (or the asked) format. ``result``: the
        finished job's result when the caller holds it (the worker that just stored it), else read from storage."""
        view = job.public_view()
        if job.status is JobStatus.RUNNING and job.inference_id and self.model_progress is not None:
            done = self._model_progress(job, self.model_progress)
            if done is not None:
                view["progress"] = round(max(job.progress, SUBMITTED_PROGRESS + MODEL_SHARE_OF_PROGRESS * done), 3)
        if job.status is JobStatus.SUCCEEDED and job.result_key:
            view["result"] = self.render_result(job, response_format, result=result).body
        return view

    @staticmethod
    def _model_progress(job: Job, model_progress: Callable[[str, str], float | None]) -> float | None:
        """How far the model is through the job's audio: its one invocation's report, or the mean over its parts
        (nearly equal stretches: a part that is in counts whole, one that has not reported yet counts nothing)."""
        if not job.parts:
            assert job.inference_id is not None
            return model_progress(job.key_id, job.inference_id)
        reports = [1.0 if part.done else model_progress(job.key_id, part.inference_id) or 0.0 for part in job.parts]
        return sum(reports) / len(reports)

    def render_result(
        self, job: Job, response_format: ResponseFormat | None = None, *, result: InferenceResult | None = None
    ) -> RenderedTranscript:
        if job.status is not JobStatus.SUCCEEDED or not job.result_key:
            raise Conflict(f"The job is {job.status.value}; it has no result yet.", code="job_not_finished")
        options = job.options.model_copy(update={"response_format": response_format or job.options.response_format})
        if result is None:
            result = self.results.load_result(job.result_key)
        return render_for(result, options, credits_used=job.credits_used or 0)
