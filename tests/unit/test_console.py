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
