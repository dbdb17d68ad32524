"""The batched engine: requests that were in flight together are decoded together. The model itself is exercised
by the integration and end-to-end suites."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import engine
import numpy as np
import pytest
from batcher import BatchingConfig, Ticket, WindowBatcher
from decoding import DecodeOptions
from engine import BatchedEngine
from windows import SAMPLE_RATE, Window


class _CountingDecode:
    """Decodes every window to nothing, slowly enough that requests overlap, and notes each batch's size."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, batch: list[tuple[Ticket, Window]]) -> list[list]:
        self.sizes.append(len(batch))
        time.sleep(0.3)
        return [[] for _ in batch]


def test_requests_sent_together_that_reach_the_model_apart_share_one_batch_once_seen_in_flight_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by benchmarks.stack_vs_model: 4 requests sent at once reach the model tens of milliseconds apart, and
    the batcher, taught by the batches they ended up in, kept splitting them (2 + 2, 3 + 1)."""
    monkeypatch.setattr(engine, "Tokenizer", lambda *args, **kwargs: None)
    model = SimpleNamespace(hf_tokenizer=None, model=SimpleNamespace(is_multilingual=False))
    whisper = BatchedEngine(model)
    whisper.batcher.stop()
    decode = _CountingDecode()
    # a gather limit far above the 60 ms the requests are spread over: a busy machine does not split them
    whisper.batcher = WindowBatcher(decode, BatchingConfig(max_gather_ms=1000))
    half_a_second = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)  # one window, too short for a tail re-decode

    def send_four_20_ms_apart() -> list[int]:
        decoded_before = len(decode.sizes)
        threads = [
            threading.Thread(target=lambda: list(whisper.stream(half_a_second, DecodeOptions(language="en"))))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
            time.sleep(0.02)  # more than the batcher's 10 ms wait: each could go alone
        for thread in threads:
            thread.join(timeout=10)
        return decode.sizes[decoded_before:]

    try:
        first = send_four_20_ms_apart()
        assert sum(first) == 4
        assert send_four_20_ms_apart() == [4]  # the 4 were in flight at once: the batcher now waits for all of them
    finally:
        whisper.close(timeout=5)
