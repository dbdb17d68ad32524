"""infery.snapstart without Lambda's runtime: registering is a no-op, and a restore reseeds ``random``."""

from __future__ import annotations

import random
import sys
import types

from infery import snapstart


def test_without_lambdas_runtime_nothing_is_registered(monkeypatch):
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # importing it raises ImportError, as off Lambda
    assert snapstart.register(lambda: None, lambda: None) is False


def test_with_lambdas_runtime_both_hooks_are_registered(monkeypatch):
    before: list = []
    after: list = []
    runtime = types.ModuleType("snapshot_restore_py")
    runtime.register_before_snapshot = before.append  # type: ignore[attr-defined]
    runtime.register_after_restore = after.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", runtime)

    def prepare() -> None:
        pass

    assert snapstart.register(prepare, snapstart.restored) is True
    assert before == [prepare] and after == [snapstart.restored]


def test_copies_restored_from_one_snapshot_draw_different_numbers():
    """Every copy starts from the snapshot's generator state; after the hook, each draws its own numbers (the jitter
    of copies retrying against each other)."""
    snapshot = random.getstate()
    try:
        draws = []
        for _ in range(2):  # two copies restored from the same snapshot
            random.setstate(snapshot)
            snapstart.restored()
            draws.append([random.random() for _ in range(4)])
        assert draws[0] != draws[1]
    finally:
        random.seed()
