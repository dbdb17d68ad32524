"""The batched Whisper engine: decode once, cut at pauses, decode windows in batches, stitch, stream.

Whisper reads 30-second windows. Sequential decoding (faster-whisper's ``WhisperModel.transcribe``)
decodes them one after another; batching the windows, those of one long file and those of concurrent
requests, is where throughput comes from. This engine ties four parts together:

1. windows.py plans windows of at most 30 s that cover the whole audio, end to end: Silero VAD (shipped with
   faster-whisper) only chooses *where* to cut (in the middle of the longest pause near a window's
   end), never what to keep, so quiet speech the VAD misjudges is still decoded;
2. batcher.py: each window goes to one shared :class:`WindowBatcher`, a thread that gathers windows of compatible
   requests up to ``batch_size`` or ``max_wait_ms``, whichever comes first (up to ``max_gather_ms`` while
   fewer requests are waiting than were in flight at once lately), taking them round-robin across requests so
   a short request is not queued behind a long file;
3. decoding.py decodes a batch and keeps every token the model wrote: where a window ends inside an unfinished
   segment, faster-whisper's batched path drops that tail (its sequential path re-decodes it); here it becomes
   the last segment;
4. redecoding.py re-decodes a window sequentially with Whisper's temperature fallback when its batched decode
   failed Whisper's own checks (repetition loops, very low confidence).

The engine yields each window's segments, on the original timeline, as soon as they and all before them are
final, so progress and a later streaming API need no redesign; a cancelled request's remaining windows are
dropped from the batcher.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from batcher import BatchingConfig, Ticket, WindowBatcher
from decoding import BatchDecoder, DecodedSegment, DecodeOptions, DecodingConfig, WindowResult
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from logprobs import add_logprobs
from redecoding import Redecoder
from windows import CutRules, LazySpeech, Window, plan_windows


class Cancelled(Exception):
    """The caller went away (or its deadline passed): the request's remaining windows were dropped."""


@dataclass(frozen=True)
class EngineConfig:
    """How the engine batches windows and decodes them."""

    batching: BatchingConfig = field(default_factory=BatchingConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)


class BatchedEngine:
    """Transcribes requests through one :class:`WindowBatcher`; safe to call from many threads."""

    def __init__(self, model: WhisperModel, config: EngineConfig | None = None) -> None:
        config = config or EngineConfig()
        self.model = model
        self.decoder = BatchDecoder(model, config.decoding)
        self.redecoder = Redecoder(model, config.decoding.beam_size)
        self.batcher = WindowBatcher(self.decoder.decode, config.batching)
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
        cuts: CutRules | None = None,
        logprobs: bool = False,
    ) -> Iterator[WindowResult]:
        """Each window's segments, in order, as soon as they and every window before them are final. ``cuts``: where
        the windows are cut (the defaults when None); ``logprobs``: each final segment's tokens scored too (neither
        changes what is decoded, so neither is part of the options a batch shares)."""
        if self._closed:
            raise Cancelled("the engine is shutting down")
        with self._streams_done:
            self._streams += 1
        try:
            yield from self._stream(
                audio,
                options,
                cancelled=lambda: self._closed or cancelled(),
                poll_seconds=poll_seconds,
                cuts=cuts,
                logprobs=logprobs,
            )
        finally:
            with self._streams_done:
                self._streams -= 1
                self._streams_done.notify_all()

    def _stream(
        self,
        audio: np.ndarray,
        options: DecodeOptions,
        *,
        cancelled: Callable[[], bool],
        poll_seconds: float,
        cuts: CutRules | None,
        logprobs: bool,
    ) -> Iterator[WindowResult]:
        speech = LazySpeech(audio)
        windows = plan_windows(audio, speech.probabilities, cuts)
        tokenizer = Tokenizer(
            self.model.hf_tokenizer, self.model.model.is_multilingual, task=options.task, language=options.language
        )
        ticket = Ticket(
            audio=audio, options=options, tokenizer=tokenizer, pending=deque(windows), caller_gone=cancelled
        )
        with self.batcher.serving(ticket):
            for window in windows:
                result = self._wait_for(ticket, window, cancelled, poll_seconds)
                if isinstance(result, BaseException):
                    raise result
                if cancelled():
                    raise Cancelled("the caller is no longer waiting")
                if self.redecoder.needed(result, options):
                    result = self.redecoder.redecode(audio, window, options, keep_if_empty=result)
                result = result + self.redecoder.untranscribed_tail(audio, window, result, options, speech)
                if logprobs:  # scored once final, whichever decode wrote it
                    add_logprobs(self.model, tokenizer, audio, window, result)
                yield WindowResult(window, result, len(windows))

    @staticmethod
    def _wait_for(
        ticket: Ticket, window: Window, cancelled: Callable[[], bool], poll_seconds: float
    ) -> list[DecodedSegment] | BaseException:
        with ticket.done:
            while window.index not in ticket.results:
                if cancelled():
                    ticket.cancelled = True
                    raise Cancelled("the caller is no longer waiting")
                ticket.done.wait(poll_seconds)
            return ticket.results.pop(window.index)
