"""One fault-injection hook for the recovery tests: a run is told, through one environment
variable with one schema, to fail once at a chosen point, so a test can check that what
follows (a retry, a resume, an engine restart) really recovers.

    FORGE_FAULT_INJECT='{"at": "train_step", "step": 11, "rank": 1, "marker": "/tmp/m"}'

``at`` says where: ``train_step`` (that trainer rank SIGKILLs itself after the step, or with
``hold_s`` stops there that long instead: a test can then fail a node while training is
certainly under way, whatever the machine's speed),
``rl_step`` (the RL driver raises after the step), ``rollout_engine`` (rollout engine 0 is
killed before the step), ``weight_sync`` (the weight push to the rollout engines after the
step is skipped, so the next step samples with stale weights). The fault fires once: it writes ``marker`` first, and never fires
while the marker exists, so the retried or resumed run goes on. A JSON list plans several
faults in one run (an engine killed at step 2, then the driver crashed after step 3: one
run checks both recoveries).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

ENV = "FORGE_FAULT_INJECT"
Where = Literal["train_step", "rl_step", "rollout_engine", "weight_sync"]
WHERE: tuple[str, ...] = ("train_step", "rl_step", "rollout_engine", "weight_sync")


@dataclass(frozen=True)
class Fault:
    at: Where
    step: int
    marker: str
    rank: int = 0  # train_step only: which trainer rank fails
    hold_s: float = 0.0  # train_step only: wait this long after the step instead of dying

    def due(self, at: Where, step: int, rank: int = 0) -> bool:
        """True once, at the planned point (the marker is written before the caller fails)."""
        if (at, step, rank) != (self.at, self.step, self.rank if at == "train_step" else 0):
            return False
        if os.path.exists(self.marker):
            return False
        Path(self.marker).write_text(f"fault injected at {at} {step} (rank {rank})\n")
        return True


@dataclass(frozen=True)
class FaultPlan:
    """The faults one run was told to suffer; each fires once at its own point."""
    faults: tuple[Fault, ...]

    def due(self, at: Where, step: int, rank: int = 0) -> bool:
        return self.fired(at, step, rank) is not None

    def fired(self, at: Where, step: int, rank: int = 0) -> Fault | None:
        """The fault due here (its marker now written), or None."""
        due = [f for f in self.faults if f.due(at, step, rank)]  # a list: every due marker is written
        return due[0] if due else None


def planned() -> FaultPlan | None:
    """The faults ``$FORGE_FAULT_INJECT`` asks for (one object or a list), or None; a
    malformed value is an error that names the variable and the key, not a fault silently
    skipped."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{ENV} is not JSON: {exc}") from None
    items = value if isinstance(value, list) and value else [value]
    return FaultPlan(tuple(_fault(item) for item in items))


def _fault(value) -> Fault:
    known = {f.name for f in fields(Fault)}
    if not isinstance(value, dict) or set(value) - known or not {"at", "step", "marker"} <= set(value):
        raise ValueError(f"{ENV} must be an object (or a list of objects) with at, step, marker (and rank, hold_s): "
                         f"unknown {sorted(set(value) - known) if isinstance(value, dict) else value!r}")
    if value["at"] not in WHERE:
        raise ValueError(f"{ENV}: at must be one of {', '.join(WHERE)}, got {value['at']!r}")
    return Fault(at=value["at"], step=int(value["step"]), marker=str(value["marker"]), rank=int(value.get("rank", 0)),
                 hold_s=float(value.get("hold_s", 0.0)))
