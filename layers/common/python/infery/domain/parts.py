"""A long job in parts: where its audio is cut, what each part may cost, and how the parts' results become one.

One asynchronous invocation may run an hour at most, on one instance. A job longer than the part length is cut
into parts of nearly equal length that run as separate invocations, in parallel across the endpoint's instances.
The model places each cut in a pause near its nominal time, the same instant for both parts that share it
(``AudioPart``), so the results meet end to start on the file's timeline and are joined in order. The job is
reserved once, under its attempt's id, and settled once, when its last part is in.
"""

from __future__ import annotations

import itertools
import math

from pydantic import BaseModel, Field

from infery.domain.inference import AudioPart, InferenceResult, Segment, TokenLogprob, Word

# a part that failed for a reason of ours is submitted again alone, at most this many times in all
MAX_PART_SUBMISSIONS = 2
# what a part pays for beyond its nominal stretch: its cuts may each move by the search, and a header's duration is
# not exact
_PART_MARGIN_RATIO = 1.02
_PART_MARGIN_SECONDS = 1.0


class JobPart(BaseModel):
    """One part of a running job's attempt, as the job's row keeps it."""

    index: int = Field(ge=0)
    start: float | None = None  # the nominal edges (AudioPart's); the model cuts near them
    end: float | None = None
    inference_id: str
    submissions: int = Field(default=1, ge=1)
    # once its invocation succeeded: where the endpoint wrote its result, and how much audio it held
    output_location: str | None = None
    audio_seconds: float | None = None

    @property
    def done(self) -> bool:
        return self.output_location is not None


def plan_parts(covered_seconds: float, part_seconds: float, search_seconds: float) -> list[AudioPart]:
    """The parts of a job whose audio lasts at most ``covered_seconds``: none (one invocation) when that fits one
    part, else nearly equal parts of at most ``part_seconds``. A plan from an over-estimate only makes its last
    parts empty (a cut past the file's end is the file's end)."""
    if covered_seconds <= part_seconds:
        return []
    count = math.ceil(covered_seconds / part_seconds)
    edges = [round(covered_seconds * index / count, 3) for index in range(1, count)]
    starts: list[float | None] = [None, *edges]
    ends: list[float | None] = [*edges, None]
    return [
        AudioPart(start=start, end=end, search_seconds=search_seconds) for start, end in zip(starts, ends, strict=True)
    ]


def part_budget_seconds(part: AudioPart, covered_seconds: float) -> float:
    """The most audio a part may decode: its nominal stretch, each cut moved by its search, and a margin. The model
    refuses more (a header that understated the file), so no part costs more than the reservation can pay."""
    first = max(0.0, (part.start or 0.0) - part.search_seconds)
    last = (part.end if part.end is not None else covered_seconds) + part.search_seconds
    return round((last - first) * _PART_MARGIN_RATIO + _PART_MARGIN_SECONDS, 3)


def stitch(results: list[InferenceResult]) -> InferenceResult:
    """The parts' results, in order, as one: segments renumbered, tokens pointed at their renumbered segments, the
    language the longest part was in. Each part's timestamps are already on the file's timeline."""
    segments: list[Segment] = []
    words: list[Word] = []
    logprobs: list[TokenLogprob] = []
    any_words = any(result.words is not None for result in results)
    any_logprobs = any(result.logprobs is not None for result in results)
    for result in results:
        first_id = len(segments)
        segments.extend(segment.model_copy(update={"id": first_id + segment.id}) for segment in result.segments)
        words.extend(result.words or [])
        logprobs.extend(
            token.model_copy(update={"segment": first_id + token.segment}) for token in result.logprobs or []
        )
    spoken = [result for result in results if result.segments] or results
    language = max(spoken, key=lambda result: result.duration).language if spoken else "en"
    return InferenceResult(
        text="".join(segment.text for segment in segments).strip(),
        language=language,
        duration=round(sum(result.duration for result in results), 3),
        audio_start=results[0].audio_start if results else 0.0,
        segments=segments,
        words=words if any_words else None,
        logprobs=logprobs if any_logprobs else None,
    )


def gaps_between(results: list[InferenceResult]) -> list[float]:
    """Seconds between where each part ended and where the next began (0 when they meet at one cut): what a
    disagreement about a cut would show, logged, never silently joined."""
    return [
        round(following.audio_start - (previous.audio_start + previous.duration), 3)
        for previous, following in itertools.pairwise(results)
        if following.segments or following.duration
    ]
