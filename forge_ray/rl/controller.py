"""The RL loop, driven from one process: prompts → rollouts → rewards (+ overlong shaping)
→ (dynamic sampling) → (values, reference log-probs) → advantages → policy/critic updates →
weight push to the rollout engines.

Roles are Ray actors (:mod:`forge_ray.rl.workers`, :mod:`forge_ray.rl.rollouts`); the
algorithm is data (:data:`forge_ray.rl.algos.ALGORITHMS`), so this file has no per-algorithm
branches beyond "is there a critic". ``old_logp`` is recomputed by the policy workers, so the
PPO ratio is exact whatever the engine's numerics; the engine's own log-probs measure the
engine–trainer mismatch (``logprob_mismatch``) and, as options, correct for it (truncated or
masked importance sampling).

Asynchronous rollouts (``async.max_staleness: N``): the next ``N`` draws of prompts are
already generating while the policy trains on this one, so a batch was drawn with weights up
to ``N`` pushes old. The policy's ratio is then taken against its own current log-probs and
each token weighted by ``min(π_trainer/π_engine, tis_cap)`` — the behaviour policy's
log-probs enter through that weight (decoupled PPO, as AReaL and verl's fully-async mode).
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import ray
import torch

from forge_ray.rl.algos import ALGORITHMS, shaping
from forge_ray.rl.algos.advantages import ESTIMATORS, explained_variance
from forge_ray.rl.algos.losses import KL_ESTIMATORS
from forge_ray.rl.experience import engine_logps, pack_rollouts
from forge_ray.rl.rollouts import EnginePool, Group, Pending

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


#: truncated-IS cap used by asynchronous rollouts when the spec sets no ``tis_cap``
ASYNC_TIS_CAP = 2.0


class StaleWeights(RuntimeError):
    """The rollout engines sample from other weights than the policy's right after a push."""


@dataclass
class LoopState:
    step: int = 0
    epoch: int = 0
    offset: int = 0
    draws: int = 0  # draws of prompts so far (dynamic sampling may take several per step)


@dataclass
class Draw:
    """``prompts_per_step`` prompts sent to the engines; ``before`` is the data position
    before they were taken (where a checkpoint taken while they are in flight resumes)."""

    rows: list[dict]
    prompts: list[list[int]]
    pending: Pending
    before: LoopState


class RLController:
    def __init__(self, spec, roles: Roles, tokenizer, train_rows: list[dict], eval_rows: list[dict]):
        self.spec, self.roles, self.tok = spec, roles, tokenizer
        self.algo = ALGORITHMS[spec.algo]
        self.train_rows, self.eval_rows = train_rows, eval_rows
        self.state = LoopState()
        self.samples: list[dict] = []  # a few of the last step's rollouts, for people to read
        self.end_ids = [i for i in (tokenizer.convert_tokens_to_ids("<|end|>"), tokenizer.eos_token_id)
                        if isinstance(i, int) and i >= 0]
        self.pool = EnginePool(roles, spec, self.end_ids, lambda t: self.tok.decode(t, skip_special_tokens=True))
        self.in_flight: deque[Draw] = deque()  # asynchronous rollouts: draws generating while the policy trains
        self.drawn: list[Group] = []

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

    def draw(self) -> Draw:
        """Take the next prompts and send them to the engines (returns at once); each draw has
        its own seed, so a rerun of the same spec draws the same rollouts."""
        before = replace(self.state)
        rows = self.next_prompts()
        prompts = self.prompt_ids(rows)
        seed = (self.spec.seed * 1_000_003 + self.state.draws) * 10_007
        self.state.draws += 1
        r = self.spec.rollout
        return Draw(rows, prompts, self.pool.submit(prompts, r.n_samples, r.temperature, seed), before)

    def score(self, draw: Draw) -> list[Group]:
        """The draw's samples with their rewards and overlong penalties."""
        samples = self.pool.collect(draw.pending)
        flat_rows = [row for row, group in zip(draw.rows, samples) for _ in group]
        flat = [s for group in samples for s in group]
        rewards = self.rewards(flat_rows, [self.decode(s.tokens) for s in flat])
        o, r = self.spec.overlong, self.spec.rollout
        lengths = torch.tensor([len(s.tokens) for s in flat])
        penalties = shaping.overlong_penalty(lengths, r.max_new_tokens, o.buffer, o.penalty).tolist()
        n, groups = r.n_samples, []
        for i, (row, prompt, group) in enumerate(zip(draw.rows, draw.prompts, samples)):
            groups.append(Group(row, prompt, group, rewards[i * n:(i + 1) * n], penalties[i * n:(i + 1) * n]))
        return groups

    def next_groups(self) -> shaping.Filled[Group]:
        """This step's groups: one draw, or (dynamic sampling) as many draws as it takes to
        fill the batch with groups whose samples differ. With asynchronous rollouts the first
        draw is the oldest in flight, and the next one is sent before this step trains."""
        depth = self.spec.async_.max_staleness
        self.drawn = []  # every group drawn this step, kept or not

        def draw_and_score() -> list[Group]:
            if depth and not self.in_flight:
                self.in_flight.append(self.draw())
            draw = self.in_flight.popleft() if self.in_flight else self.draw()
            groups = self.score(draw)
            self.drawn += groups
            return groups

        ds = self.spec.dynamic_sampling
        if ds.enabled:
            def keep(groups: list[Group]) -> list[bool]:
                scores = torch.tensor([s for g in groups for s in g.scores])
                return shaping.informative_groups(scores, self.spec.rollout.n_samples).tolist()
            filled = shaping.fill_batch(draw_and_score, keep, self.spec.prompts_per_step, ds.max_draws)
        else:
            groups = draw_and_score()
            filled = shaping.Filled(groups, len(groups), 0, 1)
        while len(self.in_flight) < depth:  # generating while the policy trains on this batch
            self.in_flight.append(self.draw())
        return filled

    def decode(self, response: list[int]) -> str:
        return self.tok.decode([t for t in response if t not in self.end_ids], skip_special_tokens=True)

    def rewards(self, rows: list[dict], completions: list[str]) -> list[float]:
        columns = {k: [row.get(k) for row in rows] for k in rows[0] if k != "prompt"}
        return [float(x) for x in self.roles.reward_fn([r["prompt"] for r in rows], completions, **columns)]

    # ------------------------------------------------------------------ one step

    def step(self) -> dict:
        spec, t0 = self.spec, time.perf_counter()
        _maybe_kill_engine(self.roles.engines, self.state.step + 1)
        filled = self.next_groups()
        t_gen = time.perf_counter() - t0
        groups = filled.groups
        flat = [s for g in groups for s in g.samples]
        drawn = torch.tensor([r for g in self.drawn for r in g.rewards])
        # the policy's reward on everything it drew (the batch dynamic sampling keeps is chosen for its spread)
        metrics = {"reward_mean": float(drawn.mean()), "reward_std": float(drawn.std()) if len(drawn) > 1 else 0.0,
                   "filtered_groups_frac": filled.filtered_frac, "draws": filled.draws,
                   "generate_frac": 0.0, "train_frac": 0.0}
        if groups:
            metrics.update(self._update(groups, flat))
        else:
            log.warning("step %d: every group's samples scored the same; nothing to train on", self.state.step + 1)
        self.state.step += 1  # the policy's weights are now version `step`
        if not _skip_push(self.state.step):
            self.pool.push(self.state.step, wait=not spec.async_.max_staleness)
        elapsed = time.perf_counter() - t0
        metrics.update(generate_frac=t_gen / elapsed, engine_restarts=self.pool.restarts,
                       weight_version=self.pool.version, step_s=elapsed)
        if "train_s" in metrics:
            metrics["train_frac"] = metrics.pop("train_s") / elapsed
        if flat:
            metrics["rollout_tokens_per_s"] = sum(len(s.tokens) for s in flat) / max(t_gen, 1e-9)
        return metrics

    def _update(self, groups: list[Group], flat: list) -> dict:
        """Advantages and one policy (and critic) update on ``groups``; the step's metrics."""
        spec = self.spec
        rows = [g.row for g in groups for _ in g.samples]
        prompts = [g.prompt for g in groups for _ in g.samples]
        responses = [s.tokens for s in flat]
        rewards = torch.tensor([r for g in groups for r in g.rewards])
        scores = torch.tensor([s for g in groups for s in g.scores])
        self.samples = [{"step": self.state.step + 1, "prompt": row["prompt"], "completion": self.decode(s.tokens),
                         "reward": float(sc)} for row, s, sc in list(zip(rows, flat, scores))[:spec.rollout.n_samples * 2]]
        if self.roles.sleep_engines:  # colocated: the engines give the GPU back while the policy trains
            ray.get([e.sleep.remote() for e in self.roles.engines])
        tensors, stats = self._experience(prompts, flat, scores)
        t_train = time.perf_counter()
        stats.update(self._train(tensors))
        if self.roles.sleep_engines:
            ray.get([e.wake_up.remote() for e in self.roles.engines])
        if "old_values" in tensors:  # the critic's predictions on this batch, before it trained on it
            stats["critic_explained_var"] = explained_variance(tensors["old_values"], tensors["returns"],
                                                               tensors["response_mask"])
        lengths = torch.tensor([len(r) for r in responses], dtype=torch.float32)
        staleness = torch.tensor([float(self.state.step - s.version) for s in flat])  # updates behind the policy
        return {"batch_reward_mean": float(rewards.mean()), "score_mean": float(scores.mean()),
                "response_len": float(lengths.mean()),
                "ends_turn": shaping.ends_turn(responses, self.end_ids),
                "truncated_frac": float(shaping.truncated(responses, self.end_ids,
                                                          spec.rollout.max_new_tokens).float().mean()),
                "staleness_mean": float(staleness.mean()), "staleness_max": float(staleness.max()),
                "train_s": time.perf_counter() - t_train, **stats}

    def _experience(self, prompts: list[list[int]], flat: list, scores: torch.Tensor
                    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        spec = self.spec
        batch = pack_rollouts(prompts, [s.tokens for s in flat], self.tok.pad_token_id)
        seq, att, mask = batch.sequences, batch.attention_mask, batch.response_mask
        old = ray.get(self.roles.policy.actors[0].token_logps.remote(seq, att))
        ref = ray.get(self.roles.reference.token_logps.remote(seq, att))
        behaviour = engine_logps(prompts, flat, mask.shape[1])
        stats = {"logprob_mismatch": shaping.logprob_mismatch(old, behaviour, mask)}
        kl = KL_ESTIMATORS["k1"](old, ref) * mask
        values = ray.get(self.roles.critic.actors[0].values.remote(seq, att)) if self.roles.critic else None
        adv, returns = ESTIMATORS[self.algo.advantage](
            scores=scores, mask=mask, values=values, kl=kl if self.algo.kl_in_reward else None,
            kl_coef=spec.kl_coef, group_size=spec.rollout.n_samples, gamma=spec.gamma, lam=spec.lam,
            std_normalize=spec.std_normalize, whiten=spec.whiten_advantages)
        loss_mask = mask.clone()
        if spec.overlong.mask_truncated:
            cut = shaping.truncated([s.tokens for s in flat], self.end_ids, spec.rollout.max_new_tokens)
            loss_mask[cut] = 0
        is_weights = torch.ones_like(old)
        cap = spec.tis_cap or (ASYNC_TIS_CAP if spec.async_.max_staleness else None)
        if cap:
            is_weights = shaping.truncated_is_weights(old, behaviour, cap)
            stats["is_weight_mean"] = float((is_weights * mask).sum() / mask.sum().clamp(min=1))
        if spec.mis_cap:
            keep = shaping.masked_is_keep(old, behaviour, spec.mis_cap)
            stats["mis_masked_frac"] = float(((~keep) & mask.bool()).sum() / mask.sum().clamp(min=1))
            loss_mask = loss_mask * keep
        out = {"sequences": seq, "attention_mask": att, "response_mask": mask, "loss_mask": loss_mask,
               "old_logp": old, "ref_logp": ref, "advantages": adv.detach(), "is_weights": is_weights,
               "kl_to_ref": kl}
        if values is not None:
            out.update(old_values=values, returns=returns.detach())
        return out, stats

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
        """Push the policy's weights to every engine (see :meth:`EnginePool.push`), numbered
        by the updates the policy has had."""
        self.pool.push(self.state.step)

    def stale_weights(self, metrics: dict) -> StaleWeights | None:
        """The error to stop with when the engines, right after a weight push, sample from
        other weights than the policy's (a push that did not arrive, a reload that kept old
        tensors): the mismatch of a healthy run is numerics only. Asynchronous runs are
        off-policy by design and are not held to it."""
        mismatch = metrics.get("logprob_mismatch")
        if self.spec.async_.max_staleness or mismatch is None or mismatch <= self.spec.stale_threshold:
            return None
        return StaleWeights(f"step {self.state.step}: the rollout engines' log-probs differ from the policy's by "
                            f"{mismatch:.3f} per token on average (stale_threshold {self.spec.stale_threshold}): "
                            f"they sampled with other weights than the policy's")

    # ------------------------------------------------------------------ evaluation

    def evaluate(self) -> dict:
        """Mean reward on the held-out prompts: of greedy answers (``eval_reward``) and of
        ``eval_samples`` samples per prompt at the rollout temperature (``eval_reward_sampled``:
        the expected reward of the policy RL trains, on prompts it never trained on), with the
        share of greedy answers that end their turn before ``max_new_tokens``
        (``eval_ends_turn``) and their mean length. The samples use the same seeds at every
        evaluation, so two measurements differ by the policy, not by the dice — a far
        steadier curve than greedy answers to 60 prompts, which move only when an answer's top
        token flips."""
        if not self.eval_rows:
            return {}
        prompt_ids = self.prompt_ids(self.eval_rows)
        greedy = [s[0].tokens for s in self.pool.generate(prompt_ids, 1, 0.0)]
        scores = self.rewards(self.eval_rows, [self.decode(s) for s in greedy])
        out = {"eval_reward": sum(scores) / len(scores), "eval_ends_turn": shaping.ends_turn(greedy, self.end_ids),
               "eval_response_len": sum(map(len, greedy)) / len(greedy)}
        n = self.spec.eval_samples
        if n:
            sampled = self.pool.generate(prompt_ids, n, self.spec.rollout.temperature, seed=self.spec.seed * 7919 + 17)
            rows = [row for row in self.eval_rows for _ in range(n)]
            scores = self.rewards(rows, [self.decode(s.tokens) for group in sampled for s in group])
            out["eval_reward_sampled"] = sum(scores) / len(scores)
        return out

    def state_dict(self) -> dict:
        """The data position to resume from: before the oldest draw still in flight (its
        prompts are drawn again on resume, by the restored policy)."""
        at = self.in_flight[0].before if self.in_flight else self.state
        return {"step": self.state.step, "epoch": at.epoch, "offset": at.offset, "draws": at.draws}

    def load_state_dict(self, state: dict) -> None:
        self.state = LoopState(step=int(state["step"]), epoch=int(state["epoch"]), offset=int(state["offset"]),
                               draws=int(state.get("draws", state["step"])))


def _maybe_kill_engine(engines: list, step: int) -> None:
    """Fault injection for the recovery test (:mod:`forge_ray.faults`): kill rollout engine 0 once."""
    from forge_ray import faults

    fault = faults.planned()
    if fault is not None and fault.due("rollout_engine", step):
        ray.kill(engines[0], no_restart=True)


def _skip_push(step: int) -> bool:
    """Fault injection for the mismatch test (:mod:`forge_ray.faults`): the weight push after
    ``step`` is skipped once, so the next step samples with stale weights."""
    from forge_ray import faults

    fault = faults.planned()
    return fault is not None and fault.due("weight_sync", step)
