"""The window batcher: one thread that decodes windows in batches, across requests, with one model.

It gathers windows of compatible requests up to ``batch_size`` or ``max_wait_ms``, whichever comes first (up to
``max_gather_ms`` while fewer requests are waiting than were in flight at once lately), taking them round-robin
across requests so a short request is not queued behind a long file. A cancelled request's remaining windows are
dropped.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from decoding import DecodedSegment, DecodeOptions
from faster_whisper.tokenizer import Tokenizer
from windows import Window

logger = logging.getLogger("whisper_engine")


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
class Ticket:
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


@dataclass(frozen=True)
class BatchingConfig:
    """How windows are gathered into batches."""

    batch_size: int = 8  # windows decoded together, across requests
    max_wait_ms: float = 10.0  # how long a batch waits for more windows
    # how long a batch may wait while fewer requests are here than were in flight at once lately
    max_gather_ms: float = 200.0


class WindowBatcher:
    """A thread that decodes windows in batches, across requests, with one ``decode`` of a batch."""

    def __init__(
        self,
        decode: Callable[[list[tuple[Ticket, Window]]], list[list[DecodedSegment]]],
        config: BatchingConfig | None = None,
    ) -> None:
        config = config or BatchingConfig()
        self._decode = decode
        self.batch_size = config.batch_size
        self.max_wait = config.max_wait_ms / 1000
        self.max_gather = max(config.max_gather_ms / 1000, self.max_wait)
        self.load = RecentLoad()
        self._tickets: OrderedDict[int, Ticket] = OrderedDict()
        self._serving = 0  # requests whose windows were handed over and are not all final yet
        self._arrived = threading.Condition()
        self._ids = itertools.count()
        self._stopped = False
        self.batches_decoded = 0
        self.windows_decoded = 0
        self._thread = threading.Thread(target=self._run, name="window-batcher", daemon=True)
        self._thread.start()

    @contextmanager
    def serving(self, ticket: Ticket) -> Iterator[None]:
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

    def _next_batch(self) -> list[tuple[Ticket, Window]] | None:
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

    def _take_round_robin(self) -> list[tuple[Ticket, Window]]:
        """Up to batch_size windows sharing the oldest request's options, one per request per round."""
        self._drop_finished()
        head = next(iter(self._tickets.values()))
        compatible = [ticket for ticket in self._tickets.values() if ticket.options == head.options]
        batch: list[tuple[Ticket, Window]] = []
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
