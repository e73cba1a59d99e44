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
import subprocess
import sys
import threading

# Ray's C++ log lines, which the driver's core worker writes straight to descriptor 2 past Python's
# logging: the filter's own rule, named here for the code that asks what reached the terminal
from forge_ray.native_stderr_filter import NATIVE_LINE  # noqa: F401

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


_native_route: tuple[int, subprocess.Popen, threading.Thread] | None = None


def route_native_stderr() -> None:
    """File descriptor 2 through a filter process (:mod:`forge_ray.native_stderr_filter`): C++
    log lines (:data:`NATIVE_LINE`) into the run log, every other byte — tracebacks,
    progress-bar redraws — on to the terminal at once. Called after ``ray.init``, so Ray's own
    processes keep the real stderr (they log to files)."""
    global _native_route
    if _native_route or not _terminal or verbose():
        return
    from forge_ray import native_stderr_filter

    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    back_read, back_write = os.pipe()
    try:
        child = subprocess.Popen([sys.executable, "-I", "-S", native_stderr_filter.__file__, str(back_write)],
                                 stdin=read_end, stdout=terminal, stderr=subprocess.DEVNULL, pass_fds=(back_write,),
                                 close_fds=True)
    except OSError:  # no filter: the terminal keeps every line
        for fd in (read_end, write_end, back_read, back_write, terminal):
            os.close(fd)
        return
    for fd in (read_end, back_write):
        os.close(fd)
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=_log_native_lines, args=(back_read,), daemon=True, name="forge-native-log")
    thread.start()
    _native_route = (terminal, child, thread)
    atexit.register(restore_native_stderr)


def restore_native_stderr() -> None:
    """The terminal back on descriptor 2, after the filter has passed on what it still holds."""
    global _native_route
    if not _native_route:
        return
    terminal, child, thread = _native_route
    _native_route = None
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os.dup2(terminal, 2)  # our last write end of the pipe: the filter drains it and ends
    os.close(terminal)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=2)  # (a subprocess still holding the pipe keeps it going, passing its output on)
    thread.join(timeout=1)


def _log_native_lines(back_read: int) -> None:
    with os.fdopen(back_read, "rb") as lines:
        for line in lines:
            with contextlib.suppress(Exception):  # logging must never break a run
                vendor.warning("[native] %s", line.decode(errors="replace").rstrip())