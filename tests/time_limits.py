"""Every time limit in the suite, what it guards took, and the check that keeps them apart.

A limit that sits close to the time its work takes makes CI a coin toss: the run passes or
fails by how busy the machine happened to be. So each guarded wait in the suite — a session
or module fixture's setup, a test's body, a ``forge`` CLI call, a ``wait_for`` poll, a
:func:`limited` block — records how long it took against its limit, and at the end of the
session a limit with less than :data:`HEADROOM` over its measured duration fails the run
(with a table naming each one), before the next slowdown breaks CI by chance. The whole
ledger is written to ``.pytest_cache/time-limits.json`` (or ``$FORGE_TEST_TIME_LEDGER``).

Fixtures that train get their own explicit budget here (:data:`FIXTURE_LIMITS`), armed as an
alarm around their setup only; pytest-timeout's per-test limit (``timeout_func_only``)
covers the tests' own bodies, so a hung fixture and a hung test are both still caught.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: the least ratio of limit to measured duration a run may show (the issue's 30 %)
HEADROOM = 1.3

#: fixture → seconds its setup may take. The comment beside each is its setup time measured on
#: two clean-clone runs of `CI=true make test` on the 2-core CI machine (2026-12-01); a machine
#: of the same kind was seen running the demo at twice that, so limits sit ≥ 4× above; the
#: check fails a session whose measured time leaves less than 30 % headroom.
FIXTURE_LIMITS: dict[str, int] = {
    "demo_runs": 2700,       # the whole demo pipeline through `forge run`: measured 498 s, 586 s, 559 s; 1112 s and 1081 s with the knowledge-infusion stages
    "ray_cluster": 420,      # `ray start --head` (limit 180 s) + the Jobs API up (120 s): measured 4.4 s in all
    "cluster": 420,          # test_chaos: a loopback head + 3 worker nodes: measured 15 s, 20 s
    "node_lost": 1500,       # test_chaos: 2-worker pretraining with a node killed: measured 42 s, 44 s
    "base": 900,             # test_train: tokenizer + corpus preparation: measured 22 s, 26 s
    "dense": 900,            # test_train: a tiny dense pretraining: measured 23 s, 24 s
    "sweep": 1500,           # test_sweep: a 4-trial ASHA sweep: measured 65 s, 70 s
    "served": 900,           # test_serve_import: `forge serve` of demo-sft (vLLM start): measured 24 s, 25 s
    "app_url": 300,          # test_ui: the Gradio app up: measured 3.0 s
    "tokenizer_run": 600,    # test_tokenizer_cli: measured 3.9 s
    "tokenizer_dir": 600,    # test_data_stage: measured 1.4 s
    "prepared": 900,         # test_data_stage: Ray Data preparation of the planted corpus: measured 17 s, 20 s
    "family_runs": 2400,     # test_families: 2 imports, 2 continued pre-trainings, 2 LoRA SFTs: measured 281 s beside another suite
}
#: any other fixture (tmp_path, a module's small file writer, …)
DEFAULT_FIXTURE_LIMIT = 300


@dataclass
class Entry:
    site: str        # file:line of the limit, or "fixture NAME", or a test's node id
    limit_s: float
    elapsed_s: float
    finished: bool   # False: it ran into its limit or raised (that failure is reported on its own)

    @property
    def ratio(self) -> float:
        return self.limit_s / max(self.elapsed_s, 1e-9)


LEDGER: list[Entry] = []


def caller_site(depth: int = 2) -> str:
    """``path:line`` of the code ``depth`` frames above the caller of this function."""
    frame = sys._getframe(depth)
    path = Path(frame.f_code.co_filename)
    with contextlib.suppress(ValueError):
        path = path.relative_to(REPO)
    return f"{path}:{frame.f_lineno}"


def record(site: str, limit_s: float, elapsed_s: float, finished: bool = True) -> None:
    LEDGER.append(Entry(site, float(limit_s), float(elapsed_s), finished))


@contextlib.contextmanager
def limited(limit_s: float, site: str | None = None):
    """Record how long the block took against ``limit_s`` (the block enforces the limit itself,
    e.g. ``subprocess.run(timeout=limit_s)``)."""
    site = site or caller_site(3)
    start = time.monotonic()
    finished = False
    try:
        yield limit_s
        finished = True
    finally:
        record(site, limit_s, time.monotonic() - start, finished)


class BudgetExceeded(Exception):
    """A fixture's setup ran past its budget (raised from the alarm, in the main thread)."""


@contextlib.contextmanager
def alarm(limit_s: float, what: str):
    """Raise :class:`BudgetExceeded` in the main thread once ``limit_s`` has passed. Nested
    alarms keep the outer one (the inner block is still recorded by its caller)."""
    if signal.getitimer(signal.ITIMER_REAL)[0] > 0 or os.name != "posix":
        yield
        return

    def fire(signum, frame):
        raise BudgetExceeded(f"{what} ran past its time limit of {limit_s:.0f} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def too_tight(entries: list[Entry] | None = None) -> list[Entry]:
    """Finished waits whose limit is less than :data:`HEADROOM` × their measured duration."""
    return [e for e in (LEDGER if entries is None else entries) if e.finished and e.ratio < HEADROOM]


def write_ledger(path: Path | None = None) -> Path:
    path = Path(os.environ.get("FORGE_TEST_TIME_LEDGER") or path or REPO / ".pytest_cache" / "time-limits.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(LEDGER, key=lambda e: e.ratio)
    path.write_text(json.dumps([asdict(e) | {"ratio": round(e.ratio, 2)} for e in rows], indent=1))
    return path


def table(entries: list[Entry]) -> list[str]:
    return [f"{e.elapsed_s:8.1f} s of {e.limit_s:6.0f} s  ({e.ratio:5.2f}×)  {e.site}"
            for e in sorted(entries, key=lambda e: e.ratio)]
