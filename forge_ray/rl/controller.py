"""The RL loop, driven from one process: prompts → rollouts → rewards → (values, reference
log-probs) → advantages → policy/critic updates → weight sync to the rollout engines.

Roles are Ray actors (:mod:`forge_ray.rl.workers`, :mod:`forge_ray.rl.rollout`); the
algorithm is data (:data:`forge_ray.rl.algos.ALGORITHMS`), so this file has no per-algorithm
branches beyond "is there a critic". ``old_logp`` is recomputed by the policy workers
rather than taken from the engine, so the importance ratio is exact whatever the engine's
numerics.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import ray
import torch

from forge_ray.rl.algos import ALGORITHMS
from forge_ray.rl.algos.advantages import ESTIMATORS, explained_variance
from forge_ray.rl.algos.losses import KL_ESTIMATORS
from forge_ray.rl.experience import RolloutBatch, pack_rollouts
from forge_ray.rl.rollout import cut_at_stop

if TYPE_CHECKING:
    from ray.actor import ActorHandle

    from forge_ray.rl.workers import ActorGroup, Bundles

log = logging.getLogger("forge_ray.rl")


@dataclass
class Roles:
    """The Ray actors of one RL run, built by :func:`forge_ray.rl.placement.build_roles`."""

    policy: ActorGroup  # of TrainableWorker(role="policy")
    reference: ActorHandle  # a ReferenceWorker
    engines: list[ActorHandle]  # rollout engines (VLLMEngine or HFEngine)
    critic: ActorGroup | None = None  # of TrainableWorker(role="critic"), for PPO
    reward_fn: Callable[..., list[float]] | None = None  # forge_ray.rl.rewards.weighted_sum
    backend: Literal["hf", "vllm"] = "hf"
    engine_factory: Callable[[int], ActorHandle] | None = None  # index → a new engine (to replace one that died)
    sync: Literal["blob", "nccl"] = "blob"  # how weights reach the engines: safetensors via Ray, or NCCL
    sleep_engines: bool = False  # colocated engines free the GPU while the policy trains
    bundles: list[Bundles] = field(default_factory=list)  # shared placement groups to release at the end
    engine_bundles: dict[int, Bundles] = field(default_factory=dict)  # engine index → its tensor-parallel bundles
    layout: dict[str, Any] = field(default_factory=dict)  # role → where it runs (recorded in the manifest)


@dataclass
class LoopState:
    step: int = 0
    epoch: int = 0
    offset: int = 0


class RLController:
    def __init__(self, spec, roles: Roles, tokenizer, train_rows: list[dict], eval_rows: list[dict]):
        self.spec, self.roles, self.tok = spec, roles, tokenizer
        self.algo = ALGORITHMS[spec.algo]
        self.train_rows, self.eval_rows = train_rows, eval_rows
        self.state = LoopState()
        self.engine_restarts = 0
        self.weight_group_open, self.weight_metas = False, None
        self.samples: list[dict] = []  # a few of the last step's rollouts, for people to read
        self.end_ids = [i for i in (tokenizer.convert_tokens_to_ids("<|end|>"), tokenizer.eos_token_id)
                        if isinstance(i, int) and i >= 0]

    # ------------------------------------------------------------------ data

    def prompt_ids(self, rows: list[dict]) -> list[list[int]]:
        return [list(self.tok.apply_chat_template([{"role": "user", "content": r["prompt"]}],
                                                  add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"]) for r in rows]

    def next_prompts(self) -> list[dict]:
        """The next ``prompts_per_step`` rows of a per-epoch seeded permutation (resumable)."""
        n, out = len(self.train_rows), []
        while len(out) < self.spec.prompts_per_step:
            order = list(range(n))
            random.Random(self.spec.seed * 1_000_003 + self.state.epoch).shuffle(order)
            take = order[self.state.offset:self.state.offset + self.spec.prompts_per_step - len(out)]
            out += [self.train_rows[i] for i in take]
            self.state.offset += len(take)
            if self.state.offset >= n:
                self.state.epoch, self.state.offset = self.state.epoch + 1, 0
        return out

    # ------------------------------------------------------------------ rollouts

    def generate(self, prompt_ids: list[list[int]], n: int, temperature: float,
                 seed: int | None = None) -> list[list[list[int]]]:
        """Spread prompts over the engines (all generating at once); ``n`` responses per
        prompt, in order, each cut at the first stop string. ``seed`` fixes every sample
        (each prompt of each engine gets its own seed), so a rerun of the same spec draws
        the same rollouts however the engine batches them."""
        engines = self.roles.engines
        chunks = [prompt_ids[i::len(engines)] for i in range(len(engines))]
        seeds = [None if seed is None else seed + i * 100_003 for i in range(len(engines))]
        refs = [self._submit(i, c, n, temperature, seeds[i]) if c else None for i, c in enumerate(chunks)]
        parts = [self._collect(i, ref, chunks[i], n, temperature, seeds[i]) if ref else []
                 for i, ref in enumerate(refs)]
        out: list = [None] * len(prompt_ids)
        for e_index, part in enumerate(parts):
            for j, samples in enumerate(part):
                out[e_index + j * len(engines)] = samples
        stop = self.spec.rollout.stop
        if stop:
            def text(tokens):
                return self.tok.decode(tokens, skip_special_tokens=True)
            out = [[cut_at_stop(s, stop, text) for s in samples] for samples in out]
        return out

    def _submit(self, index: int, prompts: list[list[int]], n: int, temperature: float, seed: int | None):
        r = self.spec.rollout
        return self.roles.engines[index].generate.remote(prompts, max_tokens=r.max_new_tokens, temperature=temperature,
                                                         top_p=r.top_p, n=n, stop_token_ids=self.end_ids,
                                                         stop=r.stop or None, seed=seed)

    def _collect(self, index: int, ref, prompts: list[list[int]], n: int, temperature: float, seed: int | None,
                 retries: int = 2):
        """The result of engine ``index``; an engine that died is replaced, brought to the
        current weights, and asked again."""
        for attempt in range(retries + 1):
            try:
                return ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError) as exc:
                if attempt == retries or self.roles.engine_factory is None:
                    raise
                log.warning("rollout engine %d died (%s); replacing it", index, type(exc).__name__)
                self.roles.engines[index] = self.roles.engine_factory(index)
                self.weight_group_open = False  # a new member: every engine rejoins a fresh group
                self.sync_weights()
                self.engine_restarts += 1
                ref = self._submit(index, prompts, n, temperature, seed)
        raise AssertionError("unreachable")

    def decode(self, response: list[int]) -> str:
        return self.tok.decode([t for t in response if t not in self.end_ids], skip_special_tokens=True)

    def rewards(self, rows: list[dict], completions: list[str]) -> list[float]:
        columns = {k: [row.get(k) for row in rows] for k in rows[0] if k != "prompt"}
        return [float(x) for x in self.roles.reward_fn([r["prompt"] for r in rows], completions, **columns)]

    # ------------------------------------------------------------------ one step

    def step(self) -> dict:
        spec, t0 = self.spec, time.perf_counter()
        _maybe_kill_engine(self.roles.engines, self.state.step + 1)
        rows = self.next_prompts()
        prompt_ids = self.prompt_ids(rows)
        step_seed = (spec.seed * 1_000_003 + self.state.step) * 10_007
        samples = self.generate(prompt_ids, spec.rollout.n_samples, spec.rollout.temperature, step_seed)
        t_gen = time.perf_counter() - t0
        flat_rows = [row for row, s in zip(rows, samples) for _ in s]
        flat_prompts = [p for p, s in zip(prompt_ids, samples) for _ in s]
        responses = [resp for s in samples for resp in s]
        completions = [self.decode(r) for r in responses]
        scores = torch.tensor(self.rewards(flat_rows, completions))
        self.samples = [{"step": self.state.step + 1, "prompt": row["prompt"], "completion": text, "reward": float(sc)}
                        for row, text, sc in list(zip(flat_rows, completions, scores))[:self.spec.rollout.n_samples * 2]]
        batch = pack_rollouts(flat_prompts, responses, self.tok.pad_token_id)
        if self.roles.sleep_engines:  # colocated: the engines give the GPU back while the policy trains
            ray.get([e.sleep.remote() for e in self.roles.engines])
        tensors = self._experience(batch, scores)
        t_train = time.perf_counter()
        stats = self._train(tensors)
        if "old_values" in tensors:  # the critic's predictions on this batch, before it trained on it
            stats["critic_explained_var"] = explained_variance(tensors["old_values"], tensors["returns"],
                                                               tensors["response_mask"])
        if self.roles.sleep_engines:
            ray.get([e.wake_up.remote() for e in self.roles.engines])
        self.sync_weights()
        self.state.step += 1
        lengths = torch.tensor([len(r) for r in responses], dtype=torch.float32)
        elapsed = time.perf_counter() - t0
        metrics = {"reward_mean": float(scores.mean()), "reward_std": float(scores.std()) if len(scores) > 1 else 0.0,
                   "response_len": float(lengths.mean()), "generate_frac": t_gen / elapsed,
                   "train_frac": (time.perf_counter() - t_train) / elapsed,
                   "rollout_tokens_per_s": float(lengths.sum()) / max(t_gen, 1e-9),
                   "engine_restarts": self.engine_restarts, **stats}
        return metrics

    def _experience(self, batch: RolloutBatch, scores: torch.Tensor) -> dict[str, torch.Tensor]:
        seq, att, mask = batch.sequences, batch.attention_mask, batch.response_mask
        old = ray.get(self.roles.policy.actors[0].token_logps.remote(seq, att))
        ref = ray.get(self.roles.reference.token_logps.remote(seq, att))
        kl = KL_ESTIMATORS["k1"](old, ref) * mask
        values = ray.get(self.roles.critic.actors[0].values.remote(seq, att)) if self.roles.critic else None
        adv, returns = ESTIMATORS[self.algo.advantage](
            scores=scores, mask=mask, values=values, kl=kl if self.algo.kl_in_reward else None,
            kl_coef=self.spec.kl_coef, group_size=self.spec.rollout.n_samples, gamma=self.spec.gamma,
            lam=self.spec.lam)
        out = {"sequences": seq, "attention_mask": att, "response_mask": mask, "old_logp": old, "ref_logp": ref,
               "advantages": adv.detach(), "kl_to_ref": kl}
        if values is not None:
            out.update(old_values=values, returns=returns.detach())
        return out

    def _shards(self, tensors: dict[str, torch.Tensor], n: int) -> list[dict[str, torch.Tensor]]:
        size = next(iter(tensors.values())).shape[0]
        per = -(-size // n)
        return [{k: v[i * per:(i + 1) * per] for k, v in tensors.items()} for i in range(n)]

    def _train(self, tensors: dict[str, torch.Tensor]) -> dict[str, float]:
        spec = self.spec
        kl = float(tensors["kl_to_ref"].sum() / tensors["response_mask"].sum().clamp(min=1))
        groups = [(self.roles.policy, "policy")] + ([(self.roles.critic, "critic")] if self.roles.critic else [])
        out = {"kl_to_ref": kl}
        for group, name in groups:
            shards = self._shards(tensors, len(group.actors))
            results = group.run_sharded("train", shards, epochs=spec.epochs, micro_batch=spec.micro_batch_size)
            for key in results[0]:
                out[key if name == "policy" else f"critic_{key}"] = sum(r[key] for r in results) / len(results)
        return out

    def sync_weights(self) -> None:
        """Push the policy's weights to every engine: one safetensors blob through Ray, or
        (``nccl``) a broadcast from policy rank 0 that the engines receive concurrently."""
        engines = self.roles.engines
        if self.roles.sync != "nccl":
            blob = self.roles.policy.run_all("weights")[0]
            ray.get([e.update_weights.remote(blob) for e in engines])
            return
        from forge_ray.rl.rollout.nccl_sync import engine_ranks

        if not self.weight_group_open:
            host, port = ray.get(self.roles.policy.actors[0].address.remote())
            firsts, world = engine_ranks(len(engines), self.spec.rollout.tensor_parallel)
            joins = [e.init_weight_group.remote(host, port, first, world) for e, first in zip(engines, firsts)]
            self.roles.policy.run_all("open_weight_group", host, port, world)
            ray.get(joins)
            self.weight_metas = ray.get(self.roles.policy.actors[0].weight_metas.remote())
            self.weight_group_open = True
        receives = [e.receive_weights.remote(self.weight_metas) for e in engines]
        self.roles.policy.run_all("broadcast_weights")
        ray.get(receives)

    # ------------------------------------------------------------------ evaluation

    def evaluate(self) -> dict:
        """Mean reward on the held-out prompts: of greedy answers (``eval_reward``) and of
        ``eval_samples`` samples per prompt at the rollout temperature (``eval_reward_sampled``:
        the expected reward of the policy RL trains, on prompts it never trained on). The
        samples use the same seeds at every evaluation, so two measurements differ by the
        policy, not by the dice — a far steadier curve than greedy answers to 60 prompts,
        which move only when an answer's top token flips."""
        if not self.eval_rows:
            return {}
        prompt_ids = self.prompt_ids(self.eval_rows)
        samples = self.generate(prompt_ids, 1, 0.0)
        scores = self.rewards(self.eval_rows, [self.decode(s[0]) for s in samples])
        out = {"eval_reward": sum(scores) / len(scores)}
        n = self.spec.eval_samples
        if n:
            sampled = self.generate(prompt_ids, n, self.spec.rollout.temperature, seed=self.spec.seed * 7919 + 17)
            rows = [row for row in self.eval_rows for _ in range(n)]
            scores = self.rewards(rows, [self.decode(s) for group in sampled for s in group])
            out["eval_reward_sampled"] = sum(scores) / len(scores)
        return out

    def state_dict(self) -> dict:
        return {"step": self.state.step, "epoch": self.state.epoch, "offset": self.state.offset}

    def load_state_dict(self, state: dict) -> None:
        self.state = LoopState(step=int(state["step"]), epoch=int(state["epoch"]), offset=int(state["offset"]))


def _maybe_kill_engine(engines: list, step: int) -> None:
    """Fault injection for the recovery test (:mod:`forge_ray.faults`): kill rollout engine 0 once."""
    from forge_ray import faults

    fault = faults.planned()
    if fault is not None and fault.due("rollout_engine", step):
        ray.kill(engines[0], no_restart=True)
