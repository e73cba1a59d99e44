"""Error kinds from exception chains as Ray delivers them (a worker's error wrapped in the
driver's), most specific first, with the exit code the CLI returns."""

from __future__ import annotations

import pytest

from forge_ray.data.sources import DataError
from forge_ray.diagnose import diagnose


def wrapped(inner: BaseException, outer: type = RuntimeError) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer("Training failed due to worker errors") from exc
    except BaseException as exc:
        return exc


class ActorDiedError(Exception):  # the name Ray's own class has; matched by name, not import
    pass


from forge_ray.rl.controller import StaleWeights  # noqa: E402


class WorkerGroupError(Exception):
    def __init__(self, failures):
        super().__init__("Training failed due to worker errors")
        self.worker_failures = failures


@pytest.mark.parametrize("exc, kind, code", [
    (wrapped(FloatingPointError("loss is nan at step 5")), "nan_loss", 1),
    (wrapped(MemoryError("cannot allocate")), "oom", 1),
    (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "oom", 1),
    (wrapped(ActorDiedError("the actor died unexpectedly")), "worker_lost", 1),
    (WorkerGroupError({0: FloatingPointError("loss is inf")}), "nan_loss", 1),
    (wrapped(TimeoutError("no answer in 600 s")), "timeout", 1),
    (wrapped(ModuleNotFoundError("No module named 'vllm'")), "dependency", 1),
    (wrapped(DataError("a.jsonl", 7, "truncated JSON")), "data", 2),
    (wrapped(OSError(28, "No space left on device", "/runs/pre/train/ckpt")), "disk_full", 1),
    (WorkerGroupError({1: RuntimeError("[Errno 122] Disk quota exceeded")}), "disk_full", 1),
    (wrapped(StaleWeights("step 3: the rollout engines' log-probs differ")), "stale_weights", 1),
    (ValueError("something else"), "runtime", 1),
])
def test_kinds_and_exit_codes(exc, kind, code):
    error, exit_code = diagnose(exc)
    assert (error.kind, exit_code) == (kind, code) and error.hint


def test_the_most_specific_kind_wins_and_data_names_the_line():
    exc = wrapped(DataError("a.jsonl", 7, "truncated JSON"), outer=TimeoutError)
    error, _ = diagnose(exc)
    assert error.kind == "data" and error.message.startswith("a.jsonl:7")
