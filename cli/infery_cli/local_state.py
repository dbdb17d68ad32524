"""The running local stack's state file: `make serve` (python -m local_stack) writes it, the `infery` command reads it.

It holds the stack's base URL, its process id and the environment (endpoints, table names) the operator's
commands need. INFERY_STATE_FILE moves it, so several stacks do not share one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def local_state_file() -> Path:
    return Path(
        os.environ.get("INFERY_STATE_FILE") or Path(__file__).resolve().parents[2] / ".infery" / "local-stack.json"
    )


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def running_local_stack() -> dict[str, Any] | None:
    """The state of the local stack that is running now, or None (no state file, or one its stack left behind)."""
    try:
        state = json.loads(local_state_file().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not state.get("base_url") or not _alive(state.get("pid")):
        return None
    return state
