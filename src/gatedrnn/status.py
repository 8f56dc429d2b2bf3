"""Every status a run can have, in one place.

A training run (train.py) is `running` until it ends `completed` (the epoch cap), `early_stopped`
(patience ran out) or `diverged` (a non-finite loss, gradient or NLL), or is `paused` after a given epoch
(successive halving). The study's store adds `pending` (not started), `halted` (paused at a halving
rung, checkpointed) and `failed` (an exception; retried by the next invocation).

A `StrEnum`: members compare equal to their strings, so JSON files and the SQLite store hold plain text.
"""
from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"
    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    DIVERGED = "diverged"
    FAILED = "failed"


# A run that ended one of these ways is never run again (its result.json is final).
FINISHED = (RunStatus.COMPLETED, RunStatus.EARLY_STOPPED, RunStatus.DIVERGED)

__all__ = ["RunStatus", "FINISHED"]
