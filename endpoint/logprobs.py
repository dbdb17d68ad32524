"""Each text token's log probability, for a request that asks for them (OpenAI's ``include[]=logprobs``).

What a token is: one of Whisper's byte-level BPE text tokens, as the transcript's segments hold them (timestamps
and special tokens left out). Its log probability is the model's, given the window's audio and the text tokens
before it in the window: CTranslate2's ``align`` reads the final text once more through the decoder (teacher
forcing), as faster-whisper's word probabilities are computed, so it scores what the answer says, whichever decode
(the batch, a context pass, a fallback re-decode) wrote it. It conditions on the text without timestamp tokens or
the request's prompt, so it differs slightly from the decode's own scores; for a greedy decode without timestamps
the two agree to a few hundredths.

It costs one more encoder pass and one decoder pass per window: only computed when asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import ceil, log

import numpy as np
from decoding import DecodedSegment
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from windows import Window

# CTranslate2 reads at most 448 positions of Whisper's decoder: an alignment longer than this is split by segment
MAX_ALIGNED_TOKENS = 400
# a probability the model rounds to 0 still gets a finite log probability (JSON has no -inf)
_SMALLEST_PROBABILITY = 1e-30


def token_bytes(tokenizer: Tokenizer, token: int) -> bytes:
    """The exact bytes of a text token (a token may hold part of a character: its text alone cannot say)."""
    spelled = tokenizer.tokenizer.id_to_token(token) or ""
    return bytes(_BYTE_OF[character] for character in spelled)


def _gpt2_byte_decoder() -> dict[str, int]:
    bytes_ = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    code_points = list(bytes_)
    extra = 0
    for byte in range(256):
        if byte not in bytes_:
            bytes_.append(byte)
            code_points.append(256 + extra)
            extra += 1
    return {chr(code_point): byte for byte, code_point in zip(bytes_, code_points, strict=True)}


_BYTE_OF = _gpt2_byte_decoder()


def add_logprobs(
    model: WhisperModel, tokenizer: Tokenizer, audio: np.ndarray, window: Window, segments: Sequence[DecodedSegment]
) -> None:
    """Fills each segment's ``logprobs``: (token text, log probability, token bytes) for each of its text tokens."""
    texts = [[token for token in segment.tokens if token < tokenizer.eot] for segment in segments]
    if not any(texts):
        return
    features = pad_or_trim(model.feature_extractor(audio[window.start : window.end])[..., :-1])
    encoder_output = model.encode(np.stack([features]))
    frames = min(int(ceil(window.duration) * model.frames_per_second), 3000)
    for group in _groups(texts):
        tokens = [token for position in group for token in texts[position]]
        if not tokens:
            continue
        aligned = model.model.align(encoder_output, tokenizer.sot_sequence, [tokens], [frames])[0]
        probabilities = iter(aligned.text_token_probs)
        for position in group:
            segments[position].logprobs = [
                _item(tokenizer, token, float(next(probabilities))) for token in texts[position]
            ]


def _item(tokenizer: Tokenizer, token: int, probability: float) -> tuple[str, float, list[int]]:
    raw = token_bytes(tokenizer, token)
    return raw.decode("utf-8", errors="replace"), log(max(probability, _SMALLEST_PROBABILITY)), list(raw)


def _groups(texts: list[list[int]]) -> list[list[int]]:
    """Consecutive segments whose text tokens together fit one alignment."""
    groups: list[list[int]] = [[]]
    size = 0
    for position, tokens in enumerate(texts):
        if groups[-1] and size + len(tokens) > MAX_ALIGNED_TOKENS:
            groups.append([])
            size = 0
        groups[-1].append(position)
        size += len(tokens)
    return groups
