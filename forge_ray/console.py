"""What a person sees in the terminal: progress bars, one line per finished stage, warnings
to act on and errors. Everything the vendors print — Ray's worker output (DeepSpeed, vLLM,
Ray Train), Ray's own driver messages, Python warnings from libraries — goes to the run's
``run.log`` instead, beside forge's own records. ``forge run --verbose`` (or
``FORGE_VERBOSE=1``) leaves the vendors' output on the terminal as well.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import select
import sys
import threading

VERBOSE_ENV = "FORGE_VERBOSE"
#: the logger vendor output is recorded under (a child of ``forge_ray``: the run's log handler sees it)
vendor = logging.getLogger("forge_ray.vendor")


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").lower() in ("1", "true", "yes")


def _worker_output(batch: dict) -> None:
    if batch.get("pid") == "autoscaler" and not verbose():
        return  # Ray's cluster status, every few seconds, on a cluster from `ray start`: in Ray's monitor.log
    who = batch.get("actor_name") or batch.get("task_name") or "worker"
    level = logging.WARNING if batch.get("is_err") else logging.INFO
    for line in batch.get("lines", []):
        if line.strip():
            vendor.log(level, "(%s pid=%s) %s", who, batch.get("pid"), line.rstrip())


class _Forward(logging.Handler):
    """Re-emits a vendor logger's records under :data:`vendor` (into the run's log)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            vendor.log(record.levelno, "[%s] %s", record.name, record.getMessage())
        except Exception:  # logging must never break a run
            pass


class _ConsoleFilter(logging.Filter):
    """forge's own warnings and errors, and the records marked ``extra={"console": True}``
    (stage summaries); never the vendors'."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(vendor.name):
            return False
        marked = getattr(record, "console", None)
        return marked if marked is not None else record.levelno >= logging.WARNING


_terminal = False  # set by setup_terminal: this process is a command a person reads


def terminal_handler(stream) -> logging.Handler:
    """forge's records a person should see, one line each, on ``stream``."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(_ConsoleFilter())
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def setup_terminal() -> None:
    """For a command a person reads (``forge run``), once per process:
    forge's stage summaries and warnings on stderr; libraries' warnings into the run log
    (unless verbose). Library use (``api.run`` from Python) keeps Python's defaults."""
    global _terminal
    if _terminal:
        return
    _terminal = True
    forge = logging.getLogger("forge_ray")
    forge.addHandler(terminal_handler(sys.stderr))
    forge.setLevel(logging.INFO)
    if not verbose():
        logging.captureWarnings(True)  # warnings.warn from libraries → the "py.warnings" logger
        _forward("py.warnings")


def _forward(name: str) -> None:
    lib = logging.getLogger(name)
    lib.handlers = [_Forward()]
    lib.propagate = False


#: Ray's driver-side loggers that print on their own (Ray configures them when it is imported)
RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve")


def quiet_ray_driver() -> None:
    """Before ``ray.init`` (after ``import ray``), in a command a person reads: Ray's own driver
    messages (token auth, Ray Data notes) into the run log instead of the terminal."""
    if _terminal and not verbose():
        for name in RAY_LOGGERS:
            _forward(name)


def quiet_ray_workers() -> None:
    """After ``ray.init``, in a command a person reads: Ray workers' output into the run log
    (and Ray's driver loggers again: ``ray.init`` gives them a terminal handler of their own)."""
    if not _terminal or verbose():
        return
    from forge_ray.compat.ray_logs import route_worker_output

    route_worker_output(_worker_output)
    quiet_ray_driver()
    route_native_stderr()


#: a line of Ray's C++ core (glog style: ``[2026-12-02 20:00:00,123 E 4242 4243] core_worker.cc:…``),
#: which the driver's own core worker writes straight to file descriptor 2, past Python's logging
NATIVE_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [DIWEF] \d+ \d+\] ")
_native_route: tuple[int, threading.Thread] | None = None


def route_native_stderr() -> None:
    """File descriptor 2 through a pipe: C++ log lines (:data:`NATIVE_LINE`) into the run log,
    every other byte — tracebacks, progress-bar redraws — on to the terminal at once. Called
    after ``ray.init``, so Ray's own processes keep the real stderr (they log to files)."""
    global _native_route
    if _native_route or not _terminal or verbose():
        return
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=_sort_native_lines, args=(read_end, terminal), daemon=True,
                              name="forge-native-stderr")
    thread.start()
    _native_route = (terminal, thread)
    atexit.register(restore_native_stderr)


def restore_native_stderr() -> None:
    """The terminal back on descriptor 2, after what the pipe still holds is sorted."""
    global _native_route
    if not _native_route:
        return
    terminal, thread = _native_route
    _native_route = None
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os.dup2(terminal, 2)  # closes the pipe's write end: the reader sees the end and drains
    thread.join(timeout=2)


def _sort_native_lines(read_end: int, terminal: int) -> None:
    pending = b""
    while True:
        ready, _, _ = select.select([read_end], [], [], 0.1)
        chunk = os.read(read_end, 65536) if ready else None
        if chunk == b"":  # every writer closed: drain and stop
            break
        pending += chunk or b""
        *lines, pending = pending.split(b"\n")
        for line in lines:
            _emit(line + b"\n", terminal)
        # a partial line goes on at once (a progress bar's ``\r`` redraw) unless it may be a
        # C++ line still being written, and even then within 0.1 s
        if pending and (chunk is None or not pending.startswith(b"[")):
            _emit(pending, terminal)
            pending = b""
    if pending:
        _emit(pending, terminal)
    os.close(read_end)


def _emit(data: bytes, terminal: int) -> None:
    if NATIVE_LINE.match(data):
        vendor.warning("[native] %s", data.decode(errors="replace").rstrip())
        return
    try:
        os.write(terminal, data)
    except OSError:
        pass
