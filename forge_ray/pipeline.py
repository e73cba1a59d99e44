"""The ``pipeline`` stage: run stages in order, each as its own run with its own lineage.

Re-running a pipeline resumes it: stages that already succeeded with the same spec are
skipped, a failed or interrupted stage runs again, later stages follow.
"""

from __future__ import annotations

import logging

from forge_ray.runner import Context, StageResult, execute
from forge_ray.runs import RunDir
from forge_ray.spec.stages import PipelineStage

log = logging.getLogger("forge_ray.pipeline")


def run(spec: PipelineStage, run: RunDir, ctx: Context) -> StageResult:
    done: dict[str, str] = {}  # name → kind of the stages that succeeded, for the next ones' input checks
    states = [{"name": s.name, "kind": s.kind, "status": "queued"} for s in spec.stages]
    run.update(stages=states)
    failed = []
    for i, stage in enumerate(spec.stages):
        states[i]["status"] = "running"
        run.update(stages=states)
        log.info("pipeline %s: stage %d/%d %s (%s)", spec.name, i + 1, len(spec.stages), stage.name, stage.kind)
        try:
            manifest = execute(stage, ctx, produced_earlier=done)
        except Exception:
            states[i]["status"] = "failed"
            run.update(stages=states)
            failed.append(stage.name)
            if spec.stop_on_failure:
                raise
            continue
        states[i].update(status=manifest["status"], metrics=manifest.get("metrics", {}))
        run.update(stages=states)
        done[stage.name] = stage.kind
    if failed:
        raise RuntimeError(f"pipeline stages failed: {', '.join(failed)}")
    return StageResult(metrics={"stages_succeeded": len(done)}, outputs={})
