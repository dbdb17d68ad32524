"""Decoding a batch of windows with one model: one encoding, a first pass, and an optional context pass.

Every token the model wrote is kept: where a window ends inside an unfinished segment, faster-whisper's batched path
drops that tail (its sequential path re-decodes it); here it becomes the last segment.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import ceil
from typing import Any, Protocol

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens
from windows import Window

# The context pass: a window after the first is decoded again with the end of the previous window's text as its
# prompt, as sequential Whisper conditions on previous text. This many tokens of it at most (Whisper: 223).
CONTEXT_TOKENS = 64
# A context-pass decode that drops this many words in a row of what the first pass heard is not used: a prompt can
# make Whisper skip a sentence that repeats one in the prompt.
MAX_DROPPED_RUN = 3
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


@dataclass(frozen=True)
class DecodeOptions:
    """What must be equal for two windows to share a batch."""

    language: str
    task: str = "transcribe"
    initial_prompt: str | None = None
    temperature: float | None = None  # None: 0, with Whisper's fallback to hotter temperatures
    word_timestamps: bool = False


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
    # (text, log probability, bytes) of each text token, when the request asked for them (logprobs.py)
    logprobs: list[tuple[str, float, list[int]]] = field(default_factory=list)


@dataclass
class WindowResult:
    window: Window
    segments: list[DecodedSegment]
    windows_total: int


@dataclass(frozen=True)
class DecodingConfig:
    """How windows are decoded: the beam of a decode, and whether later windows get a context pass."""

    beam_size: int = 5
    # the first pass's beam for a batch of later windows only, which the context pass decodes again
    first_pass_beam_size: int = 1
    context_pass: bool = False


class WindowSource(Protocol):
    """A request whose windows are decoded: its audio, how it is decoded, and the first pass's text of its windows."""

    audio: np.ndarray
    options: DecodeOptions
    tokenizer: Tokenizer
    # the first pass's text tokens of the window before the one decoded next: the context pass's prompt
    context: dict[int, list[int]]


class BatchDecoder:
    """Decodes a batch of windows, of one or many requests sharing their options, with one model."""

    def __init__(self, model: WhisperModel, config: DecodingConfig | None = None) -> None:
        self.model = model
        self.config = config or DecodingConfig()
        self.windows_with_context = 0

    def decode(self, batch: Sequence[tuple[WindowSource, Window]]) -> list[list[DecodedSegment]]:
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
        if self.config.context_pass and temperature == 0:  # a temperature the caller chose is decoded as asked, once
            self._context_pass(batch, encoder_output, initial, tokenizer, decoded)
        for owner in {id(owner): owner for owner, _ in batch}.values():
            newest = max(owner.context)
            for index in [index for index in owner.context if index < newest]:
                del owner.context[index]  # only the newest window's text is needed, by the request's next window
        if options.word_timestamps:
            _add_words(model, tokenizer, encoder_output, batch, decoded)
        return decoded

    def _first_beam(self, batch: Sequence[tuple[WindowSource, Window]]) -> int:
        """The full beam when the batch holds a request's first window: that window gets no context pass (a
        one-window request is decoded once, as sequential Whisper decodes it). One call has one beam size, and
        two calls would put two chains of decoding steps in a row, so its batch shares that beam. Batches of later
        windows are decoded greedily first: that decode is the context pass's prompt and its check."""
        if not self.config.context_pass or any(window.index == 0 for _, window in batch):
            return self.config.beam_size
        return self.config.first_pass_beam_size

    def _context_pass(
        self,
        batch: Sequence[tuple[WindowSource, Window]],
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
            results = self._generate(rows, [prompts[p] for p in positions], tokenizer, self.config.beam_size, 0.0)
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
    batch: Sequence[tuple[WindowSource, Window]],
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
