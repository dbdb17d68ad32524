"""The end-to-end tests' shared stack: the real local stack (tests/support/stack.py), started once for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.stack import RunningStack, running_stack


@pytest.fixture(scope="session")
def stack() -> Iterator[RunningStack]:
    with running_stack(credits=100_000) as running:
        yield running
