"""Whisper's sequential decode with temperature fallback, for a window (or its tail) the batched decode got wrong.

A window whose batched decode failed Whisper's own checks (a repetition loop, very low confidence) is decoded again
on its own; so is the speech after a window's last segment when the model stopped before it.
"""

from __future__ import annotations

import numpy as np
from decoding import DecodedSegment, DecodeOptions, repeats_in_a_row
from faster_whisper import WhisperModel
from windows import SAMPLE_RATE, LazySpeech, Window

# Whisper's own fallback rules (openai/whisper transcribe.py): a decode this repetitive or this unsure is redone.
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# Speech after a window's last segment, longer than this, was not transcribed: Whisper stopped early (it often
# does before a sentence that ends near a window's edge). Sequential decoding would seek back and decode it again;
# the engine re-decodes that tail.
UNTRANSCRIBED_TAIL_SECONDS = 1.0


class Redecoder:
    """Decodes a window again, sequentially, with one model; safe to call from many threads."""

    def __init__(self, model: WhisperModel, beam_size: int = 5) -> None:
        self.model = model
        self.beam_size = beam_size

    @staticmethod
    def needed(segments: list[DecodedSegment], options: DecodeOptions) -> bool:
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

    def untranscribed_tail(
        self,
        audio: np.ndarray,
        window: Window,
        segments: list[DecodedSegment],
        options: DecodeOptions,
        speech: LazySpeech,
    ) -> list[DecodedSegment]:
        """The speech after the window's last segment, decoded on its own when the model stopped before it."""
        last_end = max((segment.end for segment in segments), default=window.offset)
        tail_start = int(max(window.offset, last_end) * SAMPLE_RATE)
        if (window.end - tail_start) / SAMPLE_RATE < UNTRANSCRIBED_TAIL_SECONDS:
            return []
        if not speech.has_speech(tail_start, window.end, UNTRANSCRIBED_TAIL_SECONDS / 2):
            return []  # silence after the last words: nothing was missed
        tail = Window(window.index, tail_start, window.end)
        return self.redecode(audio, tail, options)

    def redecode(
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
