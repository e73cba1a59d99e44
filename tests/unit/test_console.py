"""The terminal shows forge's stage summaries, warnings and errors; vendor output (Ray's
worker lines, library warnings) goes to the run's log instead."""

from __future__ import annotations

import io
import logging

from forge_ray import console
from forge_ray.runner import _RunLogHandler
from forge_ray.runs import Storage


def test_worker_output_reaches_the_run_log_and_not_the_terminal(tmp_path):
    run = Storage(str(tmp_path)).run("r")
    run.create_or_resume("pretrain", "kind: pretrain\n", [])
    terminal = io.StringIO()
    forge = logging.getLogger("forge_ray")
    handlers = [_RunLogHandler(run), console.terminal_handler(terminal)]
    level = forge.level
    forge.setLevel(logging.INFO)
    for h in handlers:
        forge.addHandler(h)
    try:
        console._worker_output({"lines": ["[WARNING] [real_accelerator.py:213] Setting accelerator to CPU", ""],
                                "pid": 41, "actor_name": "RayTrainWorker", "is_err": True})
        console._worker_output({"lines": ["======== Autoscaler status: 2026-12-02 01:08:30 ========"],
                                "pid": "autoscaler", "is_err": False})  # every 5 s: Ray's monitor.log has it
        logging.getLogger("forge_ray.train").info("rank 0 resumed at step 3")  # forge's own detail: the log only
        logging.getLogger("forge_ray").info("✓ r (pretrain) in 12s: loss=1.2", extra={"console": True})
        logging.getLogger("forge_ray.train").warning("checkpoint list cut short; moved aside")
        logging.getLogger("forge_ray").error("run r failed: boom\nTraceback …", extra={"console": False})
    finally:
        for h in handlers:
            forge.removeHandler(h)
        forge.setLevel(level)
    shown = terminal.getvalue().splitlines()
    assert shown == ["✓ r (pretrain) in 12s: loss=1.2", "checkpoint list cut short; moved aside"]
    log = run.read_text("run.log")
    assert "(RayTrainWorker pid=41) [WARNING] [real_accelerator.py:213] Setting accelerator to CPU" in log
    assert "rank 0 resumed at step 3" in log and "run r failed: boom" in log
    assert log.count("RayTrainWorker") == 1  # the empty line is dropped
    assert "Autoscaler status" not in log


def test_library_records_are_forwarded_under_the_vendor_logger():
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record)

    keep = Keep()
    console.vendor.addHandler(keep)
    try:
        console._Forward().emit(logging.LogRecord("ray.data", logging.WARNING, __file__, 1, "Use 'expr' instead", None, None))
    finally:
        console.vendor.removeHandler(keep)
    assert [(r.name, r.levelno, r.getMessage()) for r in seen] == [
        ("forge_ray.vendor", logging.WARNING, "[ray.data] Use 'expr' instead")]


def test_the_brief_report_ranks_every_model_in_80_columns():
    from forge_ray.cli import brief_scores

    def cell(score):
        return {"score": score, "ci": [score - 0.05, score + 0.05], "n": 190}

    tasks = {"held-out-facts": {"a-long-model-name + rag": cell(0.30), "sft": cell(0.48), "random:base": cell(0.0)},
             "held-out-two-hop": {"sft": cell(0.08), "random:base": cell(0.0), "a-long-model-name + rag": cell(0.0)},
             "lm-eval/demo_facts_mc": {"sft": cell(0.77), "random:base": cell(0.16)}}
    ranking = [{"model": m} for m in ("sft", "a-long-model-name + rag", "random:base")]
    lines = brief_scores({"tasks": tasks, "ranking": ranking}).splitlines()
    assert max(map(len, lines)) <= 80
    assert [line.split()[0] for line in lines[1:]] == ["sft", "a-long-model-name", "random:base"]
    assert "0.48 [0.43, 0.53]" in lines[1] and lines[1].rstrip().endswith("0.77")
    assert lines[2].rstrip().endswith("—")  # a model a task did not score
    assert "…two-hop" in lines[0] or "held-out-two-hop" in lines[0]


def test_native_log_lines_on_descriptor_2_go_to_the_log_and_the_rest_to_the_terminal(tmp_path):
    """Ray's C++ core writes its "E" lines straight to descriptor 2 of the driver; in a command
    a person reads they reach the log, while a traceback line and a progress bar's ``\\r``
    redraw (no newline) still reach the terminal, in order, before the process ends."""
    import os
    import subprocess
    import sys

    script = tmp_path / "driver.py"
    script.write_text(
        "import logging, os, sys\n"
        "from forge_ray import console\n"
        "console.setup_terminal()\n"
        f"logging.getLogger('forge_ray').addHandler(logging.FileHandler({str(tmp_path / 'run.log')!r}))\n"
        "console.route_native_stderr()\n"
        "os.write(2, b'[2026-12-02 20:00:00,123 E 4242 4243] core_worker.cc:2465: Actor has constructor "
        "arguments in the object store and max_restarts > 0.\\n')\n"
        "os.write(2, b'Traceback (most recent call last):\\n')\n"
        "sys.stderr.write('\\rstep 3/10')\n"
        "sys.stderr.flush()\n")
    env = {k: v for k, v in os.environ.items() if k != console.VERBOSE_ENV}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr.endswith(b"Traceback (most recent call last):\n\rstep 3/10"), out.stderr
    assert b"core_worker.cc" not in out.stderr
    assert "[native] [2026-12-02 20:00:00,123 E 4242 4243] core_worker.cc:2465" in (tmp_path / "run.log").read_text()


def test_descriptor_2_never_blocks_while_the_run_log_is_slow(tmp_path):
    """The filter runs in its own process: with the run log's handler stuck (here: 2 s per
    record), 400 KiB of C++ lines — six times what a pipe holds — are written at once and a
    traceback line after them still reaches the terminal; the lines reach the log later."""
    import os
    import subprocess
    import sys

    script = tmp_path / "driver.py"
    script.write_text(
        "import logging, os, sys, time\n"
        "from forge_ray import console\n"
        "class Slow(logging.FileHandler):\n"
        "    def emit(self, record):\n"
        "        time.sleep(2)\n"
        "        super().emit(record)\n"
        "console.setup_terminal()\n"
        f"logging.getLogger('forge_ray').addHandler(Slow({str(tmp_path / 'run.log')!r}))\n"
        "console.route_native_stderr()\n"
        "line = b'[2026-12-02 20:00:00,123 E 4242 4243] core_worker.cc:1: ' + b'x' * 200 + b'\\n'\n"
        "start = time.monotonic()\n"
        "for _ in range(2000):\n"
        "    os.write(2, line)\n"
        "os.write(2, b'Traceback (most recent call last):\\n')\n"
        "print(f'{time.monotonic() - start:.2f}', flush=True)\n"
        "os._exit(0)\n")  # no atexit: what the terminal got was passed on while the driver ran
    env = {k: v for k, v in os.environ.items() if k != console.VERBOSE_ENV}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 1.0  # 2000 writes of 256 bytes returned at once
    assert out.stderr == b"Traceback (most recent call last):\n"
