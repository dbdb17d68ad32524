"""The batched Whisper engine: decode once, cut at pauses, decode windows in batches, stitch, stream.

Whisper reads 30-second windows. Sequential decoding (faster-whisper's ``WhisperModel.transcribe``)
decodes them one after another; batching the windows, those of one long file and those of concurrent
requests, is where throughput comes from. This engine:

1. plans windows of at most 30 s that cover the whole audio, end to end: Silero VAD (shipped with
   faster-whisper) only chooses *where* to cut (in the middle of the longest pause near a window's
   end), never what to keep, so quiet speech the VAD misjudges is still decoded;
2. hands each window to one shared :class:`WindowBatcher`, a thread that gathers windows of compatible
   requests up to ``batch_size`` or ``max_wait_ms``, whichever comes first (up to ``max_gather_ms`` while
   fewer requests are waiting than were in flight at once lately), taking them round-robin across requests so
   a short request is not queued behind a long file;
3. keeps every token the model wrote: where a window ends inside an unfinished segment, faster-whisper's
   batched path drops that tail (its sequential path re-decodes it); here it becomes the last segment;
4. re-decodes a window sequentially with Whisper's temperature fallback when its batched decode failed
   Whisper's own checks (repetition loops, very low confidence);
5. yields each window's segments, on the original timeline, as soon as they and all before them are
   final, so progress and a later streaming API need no redesign; a cancelled request's remaining
   windows are dropped from the batcher.
"""

from __future__ import annotations

import difflib
import itertools
import logging
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from math import ceil
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens
from faster_whisper.vad import get_vad_model

logger = logging.getLogger("whisper_engine")

SAMPLE_RATE = 16_000
WINDOW_SECONDS = 30.0
# A cut is placed in the last third of a window: windows stay long (fewer of them), and a pause is found.
SEARCH_FROM_SECONDS = 20.0
VAD_FRAME = 512  # samples per Silero VAD probability (32 ms)
SILENCE_PROBABILITY = 0.3
# Whisper's own fallback rules (openai/whisper transcribe.py): a decode this repetitive or this unsure is redone.
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# Speech after a window's last segment, longer than this, was not transcribed: Whisper stopped early (it often
# does before a sentence that ends near a window's edge). Sequential decoding would seek back and decode it again;
# the engine re-decodes that tail.
UNTRANSCRIBED_TAIL_SECONDS = 1.0
SPEECH_PROBABILITY = 0.5
# The context pass: a window after the first is decoded again with the end of the previous window's text as its
# prompt, as sequential Whisper conditions on previous text. This many tokens of it at most (Whisper: 223).
CONTEXT_TOKENS = 64
# A context-pass decode that drops this many words in a row of what the first pass heard is not used: a prompt can
# make Whisper skip a sentence that repeats one in the prompt.
MAX_DROPPED_RUN = 3
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


class Cancelled(Exception):
    """The caller went away (or its deadline passed): the request's remaining windows were dropped."""


@dataclass(frozen=True)
class DecodeOptions:
    """What must be equal for two windows to share a batch."""

    language: str
    task: str = "transcribe"
    initial_prompt: str | None = None
    temperature: float | None = None  # None: 0, with Whisper's fallback to hotter temperatures
    word_timestamps: bool = False


@dataclass
class Window:
    index: int
    start: int  # sample offsets into the request's audio
    end: int

    @property
    def offset(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def duration(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


@dataclass
class DecodedSegment:
    start: float
    end: float
    text: str
    tokens: list[int]
    seek: int
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    temperature: float
    words: list[dict] = field(default_factory=list)


@dataclass
class WindowResult:
    window: Window
    segments: list[DecodedSegment]
    windows_total: int


def plan_windows(
    audio: np.ndarray, speech_probabilities: Callable[[np.ndarray], np.ndarray] | None = None
) -> list[Window]:
    """Windows of at most 30 s that together cover every sample, each cut in the middle of a pause."""
    total = len(audio)
    window_samples = int(WINDOW_SECONDS * SAMPLE_RATE)
    if total <= window_samples:
        return [Window(0, 0, total)]
    probabilities = (speech_probabilities or silero_speech_probabilities)(audio)
    windows: list[Window] = []
    start = 0
    while total - start > window_samples:
        end = _cut_point(probabilities, start, start + window_samples)
        windows.append(Window(len(windows), start, end))
        start = end
    windows.append(Window(len(windows), start, total))
    return windows


def silero_speech_probabilities(audio: np.ndarray) -> np.ndarray:
    """One speech probability per 32 ms frame."""
    padded = np.pad(audio, (0, -len(audio) % VAD_FRAME))
    return np.asarray(get_vad_model()(padded)).reshape(-1)


def _cut_point(probabilities: np.ndarray, start: int, limit: int) -> int:
    """The middle of the longest pause in [start + 20 s, limit); the quietest frame when none is silent."""
    first = -(-(start + int(SEARCH_FROM_SECONDS * SAMPLE_RATE)) // VAD_FRAME)
    last = limit // VAD_FRAME  # a frame must end before the limit
    region = probabilities[first:last]
    if len(region) == 0:
        return limit
    # smoothed over ~100 ms, so a single quiet frame inside a word is not taken for a pause
    smoothed = np.convolve(region, np.ones(3) / 3, mode="same")
    silent = smoothed < SILENCE_PROBABILITY
    best_start, best_length, run_start = -1, 0, None
    for position, is_silent in enumerate(itertools.chain(silent, [False])):
        if is_silent and run_start is None:
            run_start = position
        elif not is_silent and run_start is not None:
            if position - run_start >= best_length:  # ties go to the later pause: longer windows
                best_start, best_length = run_start, position - run_start
            run_start = None
    # no pause at all: the quietest frame, the latest of equals
    frame = best_start + best_length // 2 if best_length else len(smoothed) - 1 - int(np.argmin(smoothed[::-1]))
    return min(limit, (first + frame) * VAD_FRAME)


def batch_is_ready(
    *,
    windows: int,
    requests: int,
    waited: float,
    batch_size: int,
    expected_requests: int,
    max_wait: float,
    max_gather: float,
) -> bool:
    """Whether the batcher stops waiting for more windows and decodes what it has.

    A full batch goes at once. Otherwise it waits ``max_wait`` for windows of other requests, and longer, up to
    ``max_gather``, while fewer requests have windows here than were in flight at once lately: requests sent
    together reach the model spread out (each first passes its own authentication and credit checks, on a CPU the
    model keeps busy), and one that misses a batch waits for that whole batch to be decoded. A request alone, with
    no recent company, waits only ``max_wait``.
    """
    if windows >= batch_size or waited >= max_gather:
        return True
    return waited >= max_wait and requests >= expected_requests


class RecentLoad:
    """The most requests in flight at once in the last ``memory_seconds``: the company the batcher expects.

    In flight (windows handed to the batcher, not all final yet), not served in one batch: requests sent together
    that reached the model too far apart to share a batch would otherwise teach the batcher to expect the smaller
    batches they ended up in, and keep it there. Counted from the hand-over, not from arrival: a 4-hour file
    planning its windows for seconds is not company worth waiting for.
    """

    def __init__(self, memory_seconds: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.memory_seconds = memory_seconds
        self._clock = clock
        self._served: deque[tuple[float, int]] = deque()

    def record(self, requests: int) -> None:
        self._served.append((self._clock(), requests))

    def expected(self) -> int:
        oldest = self._clock() - self.memory_seconds
        while self._served and self._served[0][0] < oldest:
            self._served.popleft()
        return max((requests for _, requests in self._served), default=1)


@dataclass
class _Ticket:
    """One request's windows in the batcher, and what came back for them."""

    audio: np.ndarray
    options: DecodeOptions
    tokenizer: Tokenizer
    pending: deque[Window]
    results: dict[int, list[DecodedSegment] | BaseException] = field(default_factory=dict)
    # the first pass's text tokens of the window before the one the batcher decodes next: the context pass's prompt
    context: dict[int, list[int]] = field(default_factory=dict)
    cancelled: bool = False
    # asked by the batcher too: the request's thread may be busy (re-decoding a window) when its caller hangs up
    caller_gone: Callable[[], bool] = lambda: False
    done: threading.Condition = field(default_factory=threading.Condition)


class WindowBatcher:
    """A thread that decodes windows in batches, across requests, with one model."""

    def __init__(
        self,
        model: WhisperModel,
        *,
        batch_size: int = 8,
        max_wait_ms: float = 10.0,
        max_gather_ms: float = 200.0,
        beam_size: int = 5,
        first_pass_beam_size: int = 1,
        context_pass: bool = False,
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_gather = max(max_gather_ms / 1000, self.max_wait)
        self.load = RecentLoad()
        self.beam_size = beam_size
        self.first_pass_beam_size = first_pass_beam_size
        self.context_pass = context_pass
        self.windows_with_context = 0
        self._tickets: OrderedDict[int, _Ticket] = OrderedDict()
        self._serving = 0  # requests whose windows were handed over and are not all final yet
        self._arrived = threading.Condition()
        self._ids = itertools.count()
        self._stopped = False
        self.batches_decoded = 0
        self.windows_decoded = 0
        self._thread = threading.Thread(target=self._run, name="window-batcher", daemon=True)
        self._thread.start()

    @contextmanager
    def serving(self, ticket: _Ticket) -> Iterator[None]:
        """Hands a request's windows over for as long as it is served; how many are served at once is the company
        a batch waits for. On leaving, the request's windows not yet decoded are dropped."""
        with self._arrived:
            self._tickets[next(self._ids)] = ticket
            self._serving += 1
            self.load.record(self._serving)
            self._arrived.notify()
        try:
            yield
        finally:
            ticket.cancelled = True  # a consumer that stops early (or failed) frees the batcher of the rest
            with self._arrived:
                self._serving -= 1

    def stop(self) -> None:
        with self._arrived:
            self._stopped = True
            self._arrived.notify()
        self._thread.join(timeout=120)  # the batch being decoded finishes first: a model freed under it aborts

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            decoded: list[list[DecodedSegment] | BaseException]
            try:
                decoded = list(self._decode(batch))
            except Exception as exc:  # one bad batch fails its windows, not the server
                logger.exception("batch decode failed")
                decoded = [exc] * len(batch)
            self.batches_decoded += 1
            self.windows_decoded += len(batch)
            for (ticket, window), result in zip(batch, decoded, strict=True):
                with ticket.done:
                    ticket.results[window.index] = result
                    ticket.done.notify_all()

    def _next_batch(self) -> list[tuple[_Ticket, Window]] | None:
        with self._arrived:
            while not self._stopped and not self._has_work():
                self._arrived.wait()
            if self._stopped:
                return None
            # wait a few milliseconds for windows of other requests, longer while fewer requests are here than
            # were served at once lately, unless a full batch is already here
            started, expected = time.monotonic(), self.load.expected()
            while True:
                waited = time.monotonic() - started
                requests = self._waiting_requests()
                if batch_is_ready(
                    windows=self._waiting_windows(),
                    requests=requests,
                    waited=waited,
                    batch_size=self.batch_size,
                    expected_requests=expected,
                    max_wait=self.max_wait,
                    max_gather=self.max_gather,
                ):
                    break
                self._arrived.wait(max(0.0, (self.max_wait if waited < self.max_wait else self.max_gather) - waited))
            return self._take_round_robin()

    def _has_work(self) -> bool:
        self._drop_finished()
        return bool(self._tickets)

    def _waiting_windows(self) -> int:
        return sum(len(ticket.pending) for ticket in self._tickets.values() if not ticket.cancelled)

    def _waiting_requests(self) -> int:
        return sum(1 for ticket in self._tickets.values() if ticket.pending and not ticket.cancelled)

    def _drop_finished(self) -> None:
        for ticket_id, ticket in list(self._tickets.items()):
            if not ticket.cancelled and ticket.pending and ticket.caller_gone():
                ticket.cancelled = True
            if ticket.cancelled or not ticket.pending:
                del self._tickets[ticket_id]

    def _take_round_robin(self) -> list[tuple[_Ticket, Window]]:
        """Up to batch_size windows sharing the oldest request's options, one per request per round."""
        self._drop_finished()
        head = next(iter(self._tickets.values()))
        compatible = [ticket for ticket in self._tickets.values() if ticket.options == head.options]
        batch: list[tuple[_Ticket, Window]] = []
        while len(batch) < self.batch_size and any(ticket.pending for ticket in compatible):
            for ticket in compatible:
                if ticket.pending and len(batch) < self.batch_size:
                    batch.append((ticket, ticket.pending.popleft()))
        # the request served first goes to the back, so the next batch starts with another one
        for ticket_id, ticket in list(self._tickets.items()):
            if ticket is head:
                self._tickets.move_to_end(ticket_id)
                break
        return batch

    def _decode(self, batch: list[tuple[_Ticket, Window]]) -> list[list[DecodedSegment]]:
        """Two passes over one encoding: every window at once without context, then every window after a request's
        first again, with the end of the previous window's first-pass text as its prompt (the context pass)."""
        ticket = batch[0][0]
        options, tokenizer = ticket.options, ticket.tokenizer
        model = self.model
        features = np.stack(
            [
                pad_or_trim(model.feature_extractor(owner.audio[window.start : window.end])[..., :-1])
                for owner, window in batch
            ]
        )
        encoder_output = model.encode(features)
        initial = tokenizer.encode(" " + options.initial_prompt.strip()) if options.initial_prompt else []
        temperature = options.temperature or 0.0
        results = self._generate(
            encoder_output, [initial] * len(batch), tokenizer, self._first_beam(batch), temperature
        )
        decoded = [
            self._split(tokenizer, window, result, temperature)
            for (_, window), result in zip(batch, results, strict=True)
        ]
        for (owner, window), result in zip(batch, results, strict=True):
            owner.context[window.index] = [token for token in result.sequences_ids[0] if token < tokenizer.eot]
        if self.context_pass and temperature == 0:  # a temperature the caller chose is decoded as asked, once
            self._context_pass(batch, encoder_output, initial, tokenizer, decoded)
        for owner in {id(owner): owner for owner, _ in batch}.values():
            newest = max(owner.context)
            for index in [index for index in owner.context if index < newest]:
                del owner.context[index]  # only the newest window's text is needed, by the request's next window
        if options.word_timestamps:
            _add_words(model, tokenizer, encoder_output, batch, decoded)
        return decoded

    def _first_beam(self, batch: list[tuple[_Ticket, Window]]) -> int:
        """The full beam when the batch holds a request's first window: that window gets no context pass (a
        one-window request is decoded once, as sequential Whisper decodes it). One call has one beam size, and
        two calls would put two chains of decoding steps in a row, so its batch shares that beam. Batches of later
        windows are decoded greedily first: that decode is the context pass's prompt and its check."""
        if not self.context_pass or any(window.index == 0 for _, window in batch):
            return self.beam_size
        return self.first_pass_beam_size

    def _context_pass(
        self,
        batch: list[tuple[_Ticket, Window]],
        encoder_output: ctranslate2.StorageView,
        initial: list[int],
        tokenizer: Tokenizer,
        decoded: list[list[DecodedSegment]],
    ) -> None:
        """Re-decodes, with ``beam_size``, each window whose request has a window before it, prompted with the end
        of that window's first-pass text; keeps the new decode unless it dropped words the first pass heard."""
        prompts: dict[int, list[int]] = {}
        for position, (owner, window) in enumerate(batch):
            previous = owner.context.get(window.index - 1)
            if window.index > 0 and previous and decoded[position]:
                prompts[position] = initial + previous[-CONTEXT_TOKENS:]
        # CTranslate2 needs <|startoftranscript|> at one position across a batch: one call per prompt length
        by_length: dict[int, list[int]] = {}
        for position, prompt in prompts.items():
            by_length.setdefault(len(prompt), []).append(position)
        for positions in by_length.values():
            rows = _rows(encoder_output, positions, len(batch))
            results = self._generate(rows, [prompts[p] for p in positions], tokenizer, self.beam_size, 0.0)
            for position, result in zip(positions, results, strict=True):
                again = self._split(tokenizer, batch[position][1], result, 0.0)
                if not drops_words(_text(decoded[position]), _text(again)):
                    decoded[position] = again
                    self.windows_with_context += 1

    def _generate(
        self,
        encoder_output: ctranslate2.StorageView,
        previous: list[list[int]],
        tokenizer: Tokenizer,
        beam_size: int,
        temperature: float,
    ) -> list[Any]:
        model = self.model
        sampling = temperature > 0  # CTranslate2 samples with one hypothesis only
        return model.model.generate(
            encoder_output,
            [list(model.get_prompt(tokenizer, previous_tokens=p, without_timestamps=False)) for p in previous],
            beam_size=1 if sampling else beam_size,
            patience=1,
            length_penalty=1,
            max_length=model.max_length,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            return_scores=True,
            return_no_speech_prob=True,
            sampling_temperature=temperature if sampling else 1.0,
            sampling_topk=0 if sampling else 1,
        )

    def _split(self, tokenizer: Tokenizer, window: Window, result: Any, temperature: float) -> list[DecodedSegment]:
        tokens = result.sequences_ids[0]
        return split_window(
            self.model,
            tokenizer,
            tokens,
            window,
            avg_logprob=result.scores[0] * len(tokens) / (len(tokens) + 1),  # as faster-whisper computes it
            no_speech_prob=result.no_speech_prob,
            temperature=temperature,
        )


def _text(segments: list[DecodedSegment]) -> str:
    return " ".join(segment.text for segment in segments)


def _rows(encoder_output: ctranslate2.StorageView, positions: list[int], size: int) -> ctranslate2.StorageView:
    """Some windows' encoder output (host memory; CTranslate2 moves it to the model's device)."""
    if len(positions) == size:
        return encoder_output
    host = encoder_output
    if encoder_output.device != "cpu":
        host = encoder_output.to_device(ctranslate2.Device.cpu)
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.array(host)[positions]))


def drops_words(before: str, after: str, run: int = MAX_DROPPED_RUN) -> bool:
    """True when ``after`` lacks ``run`` or more words in a row of ``before`` (a changed word is not a dropped one),
    or loops where ``before`` did not."""
    first, second = re.findall(r"[\w']+", before.lower()), re.findall(r"[\w']+", after.lower())
    matcher = difflib.SequenceMatcher(None, first, second, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("delete", "replace") and (i2 - i1) - (j2 - j1) >= run:
            return True
    return repeats_in_a_row(after) and not repeats_in_a_row(before)


def split_window(
    model: WhisperModel,
    tokenizer: Tokenizer,
    tokens: list[int],
    window: Window,
    *,
    avg_logprob: float,
    no_speech_prob: float,
    temperature: float,
) -> list[DecodedSegment]:
    """A window's tokens as timed segments on the original timeline, the unfinished last one included."""
    begin = tokenizer.timestamp_begin
    offset, seek = window.offset, int(window.offset * model.frames_per_second)

    def segment(piece: list[int], start: float, end: float) -> DecodedSegment | None:
        text_tokens = [token for token in piece if token < tokenizer.eot]
        text = tokenizer.decode(text_tokens)
        if not text.strip():
            return None
        return DecodedSegment(
            start=round(offset + start, 3),
            end=round(offset + min(end, window.duration), 3),
            text=text,
            tokens=piece,
            seek=seek,
            avg_logprob=float(avg_logprob),
            compression_ratio=get_compression_ratio(text),
            no_speech_prob=float(no_speech_prob),
            temperature=temperature,
        )

    segments: list[DecodedSegment | None] = []
    last_time = 0.0
    piece: list[int] = []
    piece_start = 0.0
    for token in tokens:
        if token >= begin:
            time_at = (token - begin) * model.time_precision
            if any(t < begin for t in piece):
                # a timestamp after text closes the segment; the next one opens the next segment
                segments.append(segment(piece + [token], piece_start, time_at))
                piece = [token]
            else:
                piece = [token]  # the latest timestamp before any text is where the segment starts
            piece_start = time_at
            last_time = time_at
        else:
            piece.append(token)
    if any(t < begin for t in piece):
        # the model stopped inside a segment (the window ended mid-sentence): keep it, up to the window's end
        segments.append(segment(piece, piece_start, max(window.duration, last_time)))
    return [s for s in segments if s is not None]


def _add_words(
    model: WhisperModel,
    tokenizer: Tokenizer,
    encoder_output: ctranslate2.StorageView,
    batch: list[tuple[_Ticket, Window]],
    decoded: list[list[DecodedSegment]],
) -> None:
    """Word timings by cross-attention alignment, as faster-whisper's batched path does, skipping empty windows."""
    with_text = [position for position, segments in enumerate(decoded) if segments]
    if not with_text:
        return
    encoder_output = _rows(encoder_output, with_text, len(decoded))
    segments_as_dicts: list[list[dict[str, Any]]] = [
        [
            {"seek": segment.seek, "start": segment.start, "end": segment.end, "tokens": segment.tokens}
            for segment in decoded[position]
        ]
        for position in with_text
    ]
    sizes = [int(ceil(batch[position][1].duration) * model.frames_per_second) for position in with_text]
    model.add_word_timestamps(
        segments_as_dicts, tokenizer, encoder_output, sizes, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS, 0.0
    )
    for position, dicts in zip(with_text, segments_as_dicts, strict=True):
        for segment, as_dict in zip(decoded[position], dicts, strict=True):
            segment.words = [
                {
                    "word": word["word"],
                    "start": float(word["start"]),
                    "end": float(word["end"]),
                    "probability": float(word["probability"]),
                }
                for word in as_dict.get("words", [])
            ]
            if segment.words:
                segment.start, segment.end = float(as_dict["start"]), float(as_dict["end"])


def repeats_in_a_row(
    text: str, *, min_word_repeats: int = 5, min_phrase_repeats: int = 3, longest_phrase: int = 8
) -> bool:
    """True when a word comes min_word_repeats times in a row, or a phrase of 2 to ``longest_phrase`` words
    min_phrase_repeats times in a row: how a decoding loop looks ("Phi Phi Phi Phi Phi", a sentence over and over)."""
    words = re.findall(r"[\w']+", text.lower())
    for length in range(1, longest_phrase + 1):
        needed = min_word_repeats if length == 1 else min_phrase_repeats
        for start in range(len(words) - length * needed + 1):
            phrase = words[start : start + length]
            if all(words[start + k * length : start + (k + 1) * length] == phrase for k in range(1, needed)):
                return True
    return False


class _LazySpeech:
    """Speech probabilities of one request's audio, computed once and only when something needs them."""

    def __init__(self, audio: np.ndarray) -> None:
        self._audio = audio
        self._probabilities: np.ndarray | None = None

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        if self._probabilities is None:
            self._probabilities = silero_speech_probabilities(self._audio)
        return self._probabilities

    def has_speech(self, start: int, end: int, min_seconds: float) -> bool:
        frames = self.probabilities(self._audio)[start // VAD_FRAME : -(-end // VAD_FRAME)]
        return float(np.sum(frames >= SPEECH_PROBABILITY)) * VAD_FRAME / SAMPLE_RATE >= min_seconds


class BatchedEngine:
    """Transcribes requests through one :class:`WindowBatcher`; safe to call from many threads."""

    def __init__(
        self,
        model: WhisperModel,
        *,
        batch_size: int = 8,
        max_wait_ms: float = 10.0,
        max_gather_ms: float = 200.0,
        beam_size: int = 5,
        first_pass_beam_size: int = 1,
        context_pass: bool = False,
    ) -> None:
        self.model = model
        self.beam_size = beam_size
        self.batcher = WindowBatcher(
            model,
            batch_size=batch_size,
            max_wait_ms=max_wait_ms,
            max_gather_ms=max_gather_ms,
            beam_size=beam_size,
            first_pass_beam_size=first_pass_beam_size,
            context_pass=context_pass,
        )
        self._closed = False
        self._streams = 0
        self._streams_done = threading.Condition()

    def close(self, timeout: float = 120) -> None:
        """Stop taking work and wait for the requests in flight to stop: the model must outlive every call into it
        (CTranslate2 aborts the process when a model is freed under a running decode)."""
        self._closed = True
        with self._streams_done:
            self._streams_done.wait_for(lambda: self._streams == 0, timeout)
        self.batcher.stop()

    def stream(
        self,
        audio: np.ndarray,
        options: DecodeOptions,
        *,
        cancelled: Callable[[], bool] = lambda: False,
        poll_seconds: float = 0.25,
    ) -> Iterator[WindowResult]:
        """Each window's segments, in order, as soon as they and every window before them are final."""
        if self._closed:
            raise Cancelled("the engine is shutting down")
        with self._streams_done:
            self._streams += 1
        try:
            yield from self._stream(
                audio, options, cancelled=lambda: self._closed or cancelled(), poll_seconds=poll_seconds
            )
        finally:
            with self._streams_done:
                self._streams -= 1
                self._streams_done.notify_all()

    def _stream(
        self, audio: np.ndarray, options: DecodeOptions, *, cancelled: Callable[[], bool], poll_seconds: float
    ) -> Iterator[WindowResult]:
        speech = _LazySpeech(audio)
        windows = plan_windows(audio, speech.probabilities)
        tokenizer = Tokenizer(
            self.model.hf_tokenizer, self.model.model.is_multilingual, task=options.task, language=options.language
        )
        ticket = _Ticket(
            audio=audio, options=options, tokenizer=tokenizer, pending=deque(windows), caller_gone=cancelled
        )
        with self.batcher.serving(ticket):
            for window in windows:
                result = self._wait_for(ticket, window, cancelled, poll_seconds)
                if isinstance(result, BaseException):
                    raise result
                if cancelled():
                    raise Cancelled("the caller is no longer waiting")
                if self._needs_fallback(result, options):
                    result = self._redecode(audio, window, options, keep_if_empty=result)
                result = result + self._untranscribed_tail(audio, window, result, options, speech)
                yield WindowResult(window, result, len(windows))

    @staticmethod
    def _wait_for(
        ticket: _Ticket, window: Window, cancelled: Callable[[], bool], poll_seconds: float
    ) -> list[DecodedSegment] | BaseException:
        with ticket.done:
            while window.index not in ticket.results:
                if cancelled():
                    ticket.cancelled = True
                    raise Cancelled("the caller is no longer waiting")
                ticket.done.wait(poll_seconds)
            return ticket.results.pop(window.index)

    @staticmethod
    def _needs_fallback(segments: list[DecodedSegment], options: DecodeOptions) -> bool:
        """A failed decode by Whisper's standards: a repetition loop, or very low confidence outside silence.

        Whisper's own loop test, a gzip compression ratio over 2.4, misfires here: a 30-second window of similar
        sentences merged into one segment compresses that well without any loop, and the sampled re-decode then
        loses words. So a loop is looked for directly: a phrase said again and again in a row."""
        if options.temperature is not None or not segments:
            return False
        if repeats_in_a_row(" ".join(segment.text for segment in segments)):
            return True
        first = segments[0]
        silence = first.no_speech_prob > NO_SPEECH_THRESHOLD
        return first.avg_logprob < LOG_PROB_THRESHOLD and not silence

    def _untranscribed_tail(
        self,
        audio: np.ndarray,
        window: Window,
        segments: list[DecodedSegment],
        options: DecodeOptions,
        speech: _LazySpeech,
    ) -> list[DecodedSegment]:
        """The speech after the window's last segment, decoded on its own when the model stopped before it."""
        last_end = max((segment.end for segment in segments), default=window.offset)
        tail_start = int(max(window.offset, last_end) * SAMPLE_RATE)
        if (window.end - tail_start) / SAMPLE_RATE < UNTRANSCRIBED_TAIL_SECONDS:
            return []
        if not speech.has_speech(tail_start, window.end, UNTRANSCRIBED_TAIL_SECONDS / 2):
            return []  # silence after the last words: nothing was missed
        tail = Window(window.index, tail_start, window.end)
        return self._redecode(audio, tail, options)

    def _redecode(
        self,
        audio: np.ndarray,
        window: Window,
        options: DecodeOptions,
        keep_if_empty: list[DecodedSegment] | None = None,
    ) -> list[DecodedSegment]:
        """Whisper's sequential decode with temperature fallback, for a window (or its tail) the batch got wrong.
        Its no-speech rule is off: a window is only re-decoded because it holds words."""
        segments, _ = self.model.transcribe(
            audio[window.start : window.end],
            language=options.language,
            task=options.task,
            initial_prompt=options.initial_prompt,
            temperature=list(FALLBACK_TEMPERATURES),
            beam_size=max(self.beam_size, 5),
            best_of=5,
            word_timestamps=options.word_timestamps,
            vad_filter=False,
            condition_on_previous_text=False,
            no_speech_threshold=None,
        )
        decoded = self._on_timeline(list(segments), window)
        if keep_if_empty is None:
            return decoded
        # a re-decode that is no better (nothing, or a loop again) does not replace what the batch heard
        if not decoded or repeats_in_a_row(" ".join(segment.text for segment in decoded)):
            return keep_if_empty
        return decoded

    def _on_timeline(self, segments: list, window: Window) -> list[DecodedSegment]:
        seek = int(window.offset * self.model.frames_per_second)
        return [
            DecodedSegment(
                start=round(window.offset + float(segment.start), 3),
                end=round(window.offset + float(segment.end), 3),
                text=segment.text,
                tokens=list(segment.tokens),
                seek=seek,
                avg_logprob=segment.avg_logprob,
                compression_ratio=segment.compression_ratio,
                no_speech_prob=segment.no_speech_prob,
                temperature=float(segment.temperature or 0.0),
                words=[
                    {
                        "word": word.word,
                        "start": window.offset + float(word.start),
                        "end": window.offset + float(word.end),
                        "probability": float(word.probability),
                    }
                    for word in segment.words or []
                ],
            )
            for segment in segments
        ]
