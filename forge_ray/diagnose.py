"""Why a run failed, as a kind a program can act on — ``config``, ``data``, ``disk_full``,
``nan_loss``, ``oom``, ``worker_lost``, ``stale_weights``, ``timeout``, ``dependency`` or ``runtime`` — with the message and
a hint of what to change. Failures cross Ray wrapped (a worker's exception inside Ray
Train's or Ray Data's), so every exception in the chain is examined, most specific first.

    >>> diagnose(FloatingPointError("loss is nan at step 7"))[0].kind
    'nan_loss'
    >>> diagnose(ModuleNotFoundError("No module named 'vllm'"))[0].kind
    'dependency'
"""

from __future__ import annotations

import errno

from forge_ray.runs import RunError

HINTS = {
    "data": "fix the named file and line, or let the data stage quarantine bad rows (on_error: skip)",
    "config": "fix the named keys (forge validate lists them all; forge schema shows every key)",
    "disk_full": "the storage ran out of space (or quota): free space, lower train.keep_checkpoints, or point "
                 "--storage at a larger volume, then re-run the same spec: it resumes from the newest complete "
                 "checkpoint (a half-written one is never resumed from)",
    "nan_loss": "lower optim.lr (÷10), raise optim.warmup_steps or lower optim.grad_clip; "
                "metrics.jsonl shows the steps before",
    "oom": "lower train.micro_batch_size or seq_len, raise train.zero_stage, turn on "
           "activation_checkpointing or optimizer offload, or give workers more memory",
    "worker_lost": "a worker process or node died; re-running the same spec resumes from the newest "
                   "checkpoint, and train.max_failures > 0 retries automatically",
    "stale_weights": "the rollout engines sampled with other weights than the policy's right after a weight "
                     "push: check the engines' weight sync (run.log), or raise stale_threshold if the mismatch "
                     "is numerics (metrics.jsonl: logprob_mismatch per step)",
    "timeout": "the work did not finish in time: raise the timeout or give it more resources",
    "dependency": "a package is missing or broken: run `make setup` (or install the named package)",
    "runtime": "see run.log in the run directory",
}
EXIT_INVALID, EXIT_FAILED = 2, 1


def chain(exc: BaseException) -> list[BaseException]:
    """Every exception reachable from ``exc``: causes, contexts, Ray's ``cause`` and the
    per-worker failures of a Ray Train error."""
    out, seen, stack = [], set(), [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen or not isinstance(e, BaseException):
            continue
        seen.add(id(e))
        out.append(e)
        stack += [getattr(e, "cause", None), e.__cause__, e.__context__]
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict):
            stack += list(failures.values())
    return out


def _names(e: BaseException) -> set[str]:
    return {c.__name__ for c in type(e).__mro__}


def _kind(e: BaseException) -> str | None:
    from forge_ray.allowed_paths import PathNotAllowed
    from forge_ray.data.sources import DataError
    from forge_ray.eval.tasks import TaskError
    from forge_ray.runner import InputError
    from forge_ray.runs import RunExistsError, RunNameError
    from forge_ray.spec.typed import SpecError

    names, text = _names(e), f"{type(e).__name__}: {e}"
    if isinstance(e, (DataError, TaskError, PathNotAllowed)):
        return "data"
    if isinstance(e, (SpecError, InputError, RunExistsError, RunNameError, FileNotFoundError)):
        return "config"
    if (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or any(
            s in text for s in ("No space left on device", "Disk quota exceeded")):
        return "disk_full"
    if isinstance(e, FloatingPointError) or "FloatingPointError" in text:
        return "nan_loss"
    if isinstance(e, MemoryError) or names & {"OutOfMemoryError"} or "out of memory" in text.lower():
        return "oom"
    if names & {"ActorDiedError", "RayActorError", "WorkerCrashedError", "NodeDiedError", "ActorUnavailableError",
                "WorkerGroupError"} or "died unexpectedly" in text or "SIGKILL" in text:
        return "worker_lost"
    if names & {"StaleWeights"}:
        return "stale_weights"
    if isinstance(e, TimeoutError) or names & {"GetTimeoutError"}:
        return "timeout"
    if isinstance(e, ImportError) or "ModuleNotFoundError" in text:
        return "dependency"
    return None


PRIORITY = ["data", "config", "disk_full", "nan_loss", "oom", "dependency", "stale_weights", "timeout", "worker_lost"]


def diagnose(exc: BaseException) -> tuple[RunError, int]:
    """``(RunError, CLI exit code)``: the most specific kind found anywhere in the chain."""
    found = {}
    for e in chain(exc):
        kind = _kind(e)
        if kind and kind not in found:
            found[kind] = e
    for kind in PRIORITY:
        if kind in found:
            e = found[kind]
            hint = getattr(e, "hint", "") or HINTS.get(kind, "")
            message = str(e) if kind in ("data", "config") else f"{type(e).__name__}: {e}"
            return RunError(kind, message, hint), EXIT_INVALID if kind in ("data", "config") else EXIT_FAILED
    return RunError("runtime", f"{type(exc).__name__}: {exc}", HINTS["runtime"]), EXIT_FAILED
