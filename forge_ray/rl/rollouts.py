"""The rollout engines as one pool: prompts spread over every engine at once, a dead engine
replaced and brought to the current weights, new weights pushed to all (a blob through Ray
or an NCCL broadcast), each push numbered so every sample says which weights drew it.

Calls to one engine actor run in the order they were made, so a generation submitted before
a weight push is drawn with the old weights, one submitted after with the new: this is what
lets the controller keep a batch in flight while the policy trains (asynchronous rollouts)
and still know each sample's staleness exactly.

    pool = EnginePool(roles, spec, end_ids)
    pending = pool.submit(prompt_ids, n=8, temperature=1.0, seed=17)   # returns at once
    samples = pool.collect(pending)                                      # [prompt][sample] Samples
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray

from forge_ray.rl.rollout import Sample, stop_length

if TYPE_CHECKING:
    from forge_ray.rl.controller import Roles

log = logging.getLogger("forge_ray.rl")


@dataclass
class Group:
    """One prompt's samples, scored: ``rewards`` from the reward functions, ``penalties`` from
    the overlong shaping (zeros when it is off); the advantages see their sum."""

    row: dict
    prompt: list[int]
    samples: list[Sample]
    rewards: list[float]
    penalties: list[float]

    @property
    def scores(self) -> list[float]:
        return [r + p for r, p in zip(self.rewards, self.penalties)]


@dataclass
class Pending:
    """A generation sent to the engines and not yet collected."""

    prompts: list[list[int]]
    n: int
    temperature: float
    seed: int | None
    refs: list[Any]  # per engine: an ObjectRef, or None for an engine given no prompts


class EnginePool:
    def __init__(self, roles: Roles, spec, end_ids: list[int], decode):
        self.roles, self.spec, self.end_ids, self.decode = roles, spec, end_ids, decode
        self.version = 0  # the weights the engines were last sent: they start with the initial policy (0)
        self.restarts = 0
        self.weight_group_open, self.weight_metas = False, None
        self.unconfirmed: list = []  # weight pushes sent without waiting (asynchronous rollouts)

    @property
    def engines(self) -> list:
        return self.roles.engines

    def _chunks(self, prompts: list[list[int]]) -> list[list[list[int]]]:
        k = len(self.engines)
        return [prompts[i::k] for i in range(k)]

    def _seed(self, seed: int | None, index: int) -> int | None:
        return None if seed is None else seed + index * 100_003

    def _submit_one(self, index: int, prompts: list[list[int]], n: int, temperature: float, seed: int | None):
        r = self.spec.rollout
        return self.engines[index].sample.remote(prompts, max_tokens=r.max_new_tokens, temperature=temperature,
                                                 top_p=r.top_p, n=n, stop_token_ids=self.end_ids,
                                                 stop=r.stop or None, seed=self._seed(seed, index))

    def submit(self, prompts: list[list[int]], n: int, temperature: float, seed: int | None = None) -> Pending:
        """Send ``prompts`` to the engines (all generating at once) and return at once.
        ``seed`` fixes every sample (each engine gets its own), so a rerun of the same spec
        draws the same rollouts however the engines batch them."""
        refs = [self._submit_one(i, c, n, temperature, seed) if c else None
                for i, c in enumerate(self._chunks(prompts))]
        return Pending(prompts, n, temperature, seed, refs)

    def collect(self, pending: Pending, retries: int = 2) -> list[list[Sample]]:
        """``n`` samples per prompt, in prompt order, each cut at the first stop string; an
        engine that died is replaced, brought to the current weights, and asked again."""
        self.confirm()
        chunks = self._chunks(pending.prompts)
        parts = [self._collect_one(i, ref, chunks[i], pending, retries) if ref is not None else []
                 for i, ref in enumerate(pending.refs)]
        out: list = [None] * len(pending.prompts)
        k = len(self.engines)
        for index, part in enumerate(parts):
            for j, samples in enumerate(part):
                out[index + j * k] = samples
        stop = self.spec.rollout.stop
        if stop:
            out = [[s.cut(stop_length(s.tokens, stop, self.decode)) for s in samples] for samples in out]
        return out

    def _collect_one(self, index: int, ref, prompts: list[list[int]], pending: Pending, retries: int):
        for attempt in range(retries + 1):
            try:
                return ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError) as exc:
                if attempt == retries or self.roles.engine_factory is None:
                    raise
                log.warning("rollout engine %d died (%s); replacing it", index, type(exc).__name__)
                self.roles.engines[index] = self.roles.engine_factory(index)
                self.weight_group_open = False  # a new member: every engine rejoins a fresh group
                self.push(self.version)
                self.restarts += 1
                ref = self._submit_one(index, prompts, pending.n, pending.temperature, pending.seed)
        raise AssertionError("unreachable")

    def confirm(self) -> None:
        """Wait for weight pushes sent without waiting (an engine that died meanwhile is
        replaced when its generation is collected)."""
        refs, self.unconfirmed = self.unconfirmed, []
        for ref in refs:
            try:
                ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError):
                pass

    def generate(self, prompts: list[list[int]], n: int, temperature: float,
                 seed: int | None = None) -> list[list[Sample]]:
        return self.collect(self.submit(prompts, n, temperature, seed))

    def push(self, version: int, wait: bool = True) -> None:
        """Push the policy's weights to every engine as weight version ``version`` (the
        updates the policy has had): one safetensors blob through Ray, or (``nccl``) a broadcast from
        policy rank 0 that the engines receive concurrently. Generations already submitted
        finish with the weights they started with. ``wait=False`` (blob only) returns
        without waiting for engines still busy with such a generation; the push is
        confirmed before the next collect."""
        self.version = version
        engines, policy = self.engines, self.roles.policy
        if self.roles.sync != "nccl":
            blob = policy.run_all("weights")[0]
            refs = [e.update_weights.remote(blob, self.version) for e in engines]
            if wait:
                ray.get(refs)
            else:
                self.unconfirmed += refs
            return
        from forge_ray.rl.rollout.nccl_sync import engine_ranks

        if not self.weight_group_open:
            host, port = ray.get(policy.actors[0].address.remote())
            firsts, world = engine_ranks(len(engines), self.spec.rollout.tensor_parallel)
            joins = [e.init_weight_group.remote(host, port, first, world) for e, first in zip(engines, firsts)]
            policy.run_all("open_weight_group", host, port, world)
            ray.get(joins)
            self.weight_metas = ray.get(policy.actors[0].weight_metas.remote())
            self.weight_group_open = True
        receives = [e.receive_weights.remote(self.weight_metas, self.version) for e in engines]
        policy.run_all("broadcast_weights")
        ray.get(receives)
