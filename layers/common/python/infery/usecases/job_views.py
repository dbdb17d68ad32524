"""How a job looks from outside (GET /v1/jobs/{id}, its result, its webhook): one presenter for API and worker."""

from __future__ import annotations

import json
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
# A Lambda function answers at most 6 MB: a transcript larger than this (ten hours of verbose_json with words) is
# not put in a job's view or webhook, and its own GET answers with a link to download it
MAX_INLINE_RESULT_BYTES = 5_000_000


@dataclass(frozen=True)
class LargeResult:
    """A transcript too large to be an API answer: where to download it (a presigned URL, for a while)."""

    url: str
    size: int
    expires_in: int


# how long a download link of a large transcript works
LINK_SECONDS = 900


def rendered_size(rendered: RenderedTranscript) -> int:
    body = rendered.body if isinstance(rendered.body, str) else json.dumps(rendered.body)
    return len(body.encode())


@dataclass
class JobPresenter:
    results: Results
    # (key_id, inference_id) -> the model's progress through the audio (0..1), when it has reported one
    model_progress: Callable[[str, str], float | None] | None = None
    max_inline_bytes: int = MAX_INLINE_RESULT_BYTES

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
            rendered = self.render_result(job, response_format, result=result)
            if rendered_size(rendered) > self.max_inline_bytes:
                shown = (response_format or job.options.response_format).value
                view["result"] = None
                view["result_url"] = f"/v1/jobs/{job.job_id}/result?response_format={shown}"
            else:
                view["result"] = rendered.body
        return view

    def large_result(
        self, job: Job, rendered: RenderedTranscript, response_format: ResponseFormat
    ) -> LargeResult | None:
        """Where to download a transcript too large for an answer (stored next to the job's result, rendered); None
        when it fits."""
        size = rendered_size(rendered)
        if size <= self.max_inline_bytes:
            return None
        body = rendered.body if isinstance(rendered.body, str) else json.dumps(rendered.body)
        url = self.results.put_rendered(
            job.key_id, job.job_id, response_format.value, body.encode(), rendered.content_type, LINK_SECONDS
        )
        return LargeResult(url, size, LINK_SECONDS)

    @staticmethod
    def _model_progress(job: Job, model_progress: Callable[[str, str], float | None]) -> float | None:
        """How far the model is through the job's audio: its one invocation's report, or, for a job in parts (nearly
        equal stretches), the parts that are in, and the first part still running's own report: one read of storage
        per view whatever the parts (a listing shows up to 100 jobs), which moves as the parts end."""
        if not job.parts:
            assert job.inference_id is not None
            return model_progress(job.key_id, job.inference_id)
        running = next((part for part in job.parts if not part.done), None)
        first = (model_progress(job.key_id, running.inference_id) or 0.0) if running is not None else 0.0
        return (sum(part.done for part in job.parts) + first) / len(job.parts)

    def render_result(
        self, job: Job, response_format: ResponseFormat | None = None, *, result: InferenceResult | None = None
    ) -> RenderedTranscript:
        if job.status is not JobStatus.SUCCEEDED or not job.result_key:
            raise Conflict(f"The job is {job.status.value}; it has no result yet.", code="job_not_finished")
        options = job.options.model_copy(update={"response_format": response_format or job.options.response_format})
        if result is None:
            result = self.results.load_result(job.result_key)
        return render_for(result, options, credits_used=job.credits_used or 0)
