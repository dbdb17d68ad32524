"""The batcher's order and its waits: round-robin across requests, how long a batch gathers, and the company it
expects."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
import pytest
from batcher import BatchingConfig, RecentLoad, Ticket, WindowBatcher, batch_is_ready
from decoding import DecodeOptions
from windows import Window


def _never_called(batch: list[tuple[Ticket, Window]]) -> list[list]:
    raise AssertionError("no batch is decoded here")


def _ticket(windows: int, options: DecodeOptions) -> Ticket:
    return Ticket(
        audio=np.zeros(1, dtype=np.float32),
        options=options,
        tokenizer=None,
        pending=deque(Window(index, 0, 1) for index in range(windows)),
        done=threading.Condition(),
    )


def test_a_batch_takes_windows_round_robin_across_requests_with_the_same_options() -> None:
    batcher = WindowBatcher(_never_called, BatchingConfig(batch_size=4))
    batcher.stop()  # its thread is not needed to see the order it would decode in
    english = DecodeOptions(language="en")
    long_file, short_request, other_options = (
        _ticket(10, english),
        _ticket(1, english),
        _ticket(2, DecodeOptions(language="en", word_timestamps=True)),
    )
    for ticket in (long_file, short_request, other_options):
        batcher._tickets[id(ticket)] = ticket
    first = batcher._take_round_robin()
    assert [(ticket is short_request, window.index) for ticket, window in first] == [
        (False, 0),
        (True, 0),
        (False, 1),
        (False, 2),
    ]
    # the long file was served first, so the next batch starts with the next request in line
    second = batcher._take_round_robin()
    assert {ticket.options for ticket, _ in second} == {other_options.options}
    assert len(second) == 2


def ready(windows: int, requests: int, waited_ms: float, expected: int) -> bool:
    return batch_is_ready(
        windows=windows,
        requests=requests,
        waited=waited_ms / 1000,
        batch_size=8,
        expected_requests=expected,
        max_wait=0.010,
        max_gather=0.200,
    )


def test_a_full_batch_goes_at_once() -> None:
    assert ready(windows=8, requests=1, waited_ms=0, expected=4)


def test_a_request_without_recent_company_waits_only_the_short_wait() -> None:
    assert not ready(windows=1, requests=1, waited_ms=5, expected=1)
    assert ready(windows=1, requests=1, waited_ms=10, expected=1)


def test_fewer_requests_than_were_served_together_lately_are_given_longer_to_gather() -> None:
    assert not ready(windows=2, requests=1, waited_ms=10, expected=4)
    assert not ready(windows=6, requests=3, waited_ms=150, expected=4)
    assert ready(windows=8 - 1, requests=4, waited_ms=10, expected=4)  # all the company is here
    assert ready(windows=2, requests=1, waited_ms=200, expected=4)  # but never longer than the gather limit


def test_a_request_is_in_flight_from_handing_its_windows_over_until_it_leaves_and_then_frees_the_batcher() -> None:
    batcher = WindowBatcher(_never_called)
    batcher.stop()
    first, second = _ticket(3, DecodeOptions(language="en")), _ticket(1, DecodeOptions(language="en"))
    with batcher.serving(first):
        with pytest.raises(ValueError, match="failed"), batcher.serving(second):
            assert batcher._serving == 2 and list(batcher._tickets.values()) == [first, second]
            raise ValueError("failed while waiting")
        assert batcher._serving == 1 and second.cancelled and not first.cancelled
    assert batcher._serving == 0 and first.cancelled  # its remaining windows are dropped, not decoded
    assert batcher.load.expected() == 2


def test_the_expected_company_is_the_most_in_flight_at_once_within_the_memory() -> None:
    now = [100.0]
    load = RecentLoad(memory_seconds=5.0, clock=lambda: now[0])
    assert load.expected() == 1  # nothing served yet: a request alone
    load.record(1)
    load.record(4)
    now[0] += 3
    load.record(2)
    assert load.expected() == 4
    now[0] += 2.5  # the batch of 4 is more than 5 s old, the batch of 2 is not
    assert load.expected() == 2
    now[0] += 10
    assert load.expected() == 1


def test_the_batcher_gathers_within_its_limits() -> None:
    batcher = WindowBatcher(_never_called, BatchingConfig(max_wait_ms=10, max_gather_ms=5))
    batcher.stop()
    assert (batcher.max_wait, batcher.max_gather) == (0.010, 0.010)  # a gather limit never shorter than the wait
