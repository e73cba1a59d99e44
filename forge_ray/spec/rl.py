"""The spec of the reinforcement-learning stage (``rl``): sampling, placement, and the loss,
advantage and rollout settings of today's RL stacks (DAPO, Dr. GRPO, GSPO, CISPO, truncated
importance sampling, asynchronous rollouts) as settings, not forks. Re-exported by
:mod:`forge_ray.spec.stages` with every other kind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from forge_ray.rl.algos import ALGORITHMS, recipes
from forge_ray.spec.base import StageSpec
from forge_ray.spec.sections import OptimSpec, ResourcesSpec, SourceSpec
from forge_ray.spec.typed import opt


@dataclass(kw_only=True)
class RolloutSpec:
    """How responses are sampled."""

    backend: Literal["auto", "vllm", "hf"] = opt("auto", "auto: vLLM when installed, else HF generate")
    num_engines: int = opt(1, "rollout engines (actors)", ge=1)
    tensor_parallel: int = opt(1, "GPUs one engine spans (vLLM tensor parallelism; needs gpus_per_engine: 1)", ge=1)
    n_samples: int = opt(4, "responses per prompt", ge=1)
    temperature: float = opt(1.0, "sampling temperature", ge=0)
    top_p: float = opt(1.0, "nucleus sampling", gt=0, le=1)
    max_new_tokens: int = opt(32, "longest response", ge=1)
    stop: list[str] = opt([], "stop strings")
    cpus_per_engine: float = opt(1.0, "CPUs per engine actor (fractions allowed)", gt=0)
    gpus_per_engine: float = opt(0.0, "GPUs per engine actor (per tensor-parallel rank)", ge=0)


@dataclass(kw_only=True)
class ColocateSpec:
    """Roles that share resources instead of each taking their own (OpenRLHF's colocation).
    Colocated actors split their bundle's CPUs/GPUs equally."""

    policy_reference: bool = opt(False, "the reference runs on the policy's rank-0 bundle")
    critic_reward: bool = opt(False, "the reward model runs on the critic's rank-0 bundle (PPO)")
    all: bool = opt(False, "every role, rollout engines included, on the policy's bundles "
                           "(on GPUs vLLM sleeps while the policy trains)")


@dataclass(kw_only=True)
class DynamicSamplingSpec:
    """DAPO's dynamic sampling: a group whose samples all scored the same has zero advantage
    (GRPO, RLOO) and only dilutes the batch; drop it and draw more prompts."""

    enabled: bool = opt(False, "drop groups with equal rewards and draw more prompts until the batch is full")
    max_draws: int = opt(3, "at most this many draws of prompts_per_step prompts per step (then train on what "
                            "there is)", ge=1)


@dataclass(kw_only=True)
class OverlongSpec:
    """What an answer that runs to ``rollout.max_new_tokens`` costs (DAPO's overlong shaping)."""

    buffer: int = opt(0, "soft penalty: over the last N tokens before max_new_tokens the reward falls "
                         "linearly by up to `penalty` (0: off)", ge=0)
    penalty: float = opt(1.0, "the penalty at max_new_tokens", ge=0)
    mask_truncated: bool = opt(False, "responses that reach max_new_tokens without ending their turn are left "
                                      "out of the loss (DAPO's overlong filtering)")


@dataclass(kw_only=True)
class AsyncSpec:
    """Asynchronous off-policy rollouts: the engines generate the next batch while the policy
    trains on this one."""

    max_staleness: int = opt(0, "0: synchronous; N: a batch may be generated with weights up to N versions "
                                "older than the policy that trains on it", ge=0)


@dataclass(kw_only=True)
class RLStage(StageSpec):
    """Reinforcement learning of a policy with PPO, GRPO, RLOO or REINFORCE++."""

    KIND: ClassVar[str] = "rl"
    INPUTS: ClassVar[tuple[str, ...]] = ("policy", "reward_model")
    policy: str = opt(help="run whose model is the initial policy (and reference)")
    algo: Literal["ppo", "grpo", "rloo", "reinforce++"] = opt("grpo", "algorithm")
    recipe: Literal["dapo", "dr_grpo", "gspo"] | None = opt(
        None, "a paper's settings for every key this spec leaves unset (recorded expanded in the run's spec.yaml)")
    prompts: list[SourceSpec] = opt(help="prompts (format prompt_answer)")
    eval_fraction: float = opt(0.2, "share of prompts held out to measure reward", ge=0, lt=1)
    reward_model: str | None = opt(None, "reward-model run")
    reward_funcs: list[str] = opt(["normalized_match"], "reward functions: built-in names or module:function")
    reward_weights: list[float] = opt([], "weight per reward (default 1 each; the reward model is last)")
    rollout: RolloutSpec = opt(default_factory=RolloutSpec, help="sampling")
    kl_coef: float = opt(0.01, "KL penalty to the reference (in the reward or as a loss term, by algo)", ge=0)
    kl_estimator: Literal["k1", "k2", "k3"] = opt("k3", "KL estimator for the loss term (k3 clamped at 10, "
                                                        "as verl and OpenRLHF)")
    entropy_coef: float = opt(0.0, "entropy bonus", ge=0)
    policy_loss: Literal["ppo", "gspo", "cispo"] = opt(
        "ppo", "ppo: clipped token ratio; gspo: clipped sequence ratio (geometric mean of token ratios); "
               "cispo: REINFORCE weighted by clipped, stop-gradient token ratios")
    clip_eps: float = opt(0.2, "lower ratio clip: 1 − clip_eps", gt=0)
    clip_eps_high: float | None = opt(None, "upper ratio clip: 1 + clip_eps_high (DAPO clip-higher; default "
                                            "clip_eps)", gt=0)
    dual_clip: float | None = opt(None, "for negative advantages the loss is at most −dual_clip·A (e.g. 3)", gt=1)
    loss_aggregation: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                              "seq-mean-token-sum-norm"] = opt(
        "token-mean", "token-mean: every token of the batch alike (DAPO); seq-mean-token-mean: every response "
                      "alike; seq-mean-token-sum-norm: token sums over the constant max_new_tokens (Dr. GRPO)")
    std_normalize: bool = opt(True, "GRPO: divide group advantages by the group's std (false: Dr. GRPO)")
    whiten_advantages: bool = opt(True, "PPO: whiten GAE advantages over the batch (OpenRLHF and verl do)")
    dynamic_sampling: DynamicSamplingSpec = opt(default_factory=DynamicSamplingSpec,
                                                help="drop groups with no signal and draw more (DAPO)")
    overlong: OverlongSpec = opt(default_factory=OverlongSpec, help="penalise or mask answers that run to the limit")
    tis_cap: float | None = opt(None, "truncated importance sampling: weight tokens by min(π_trainer/π_engine, "
                                      "cap) against the rollout engine's log-probs (e.g. 2)", gt=0)
    mis_cap: float | None = opt(None, "masked importance sampling: tokens whose π_trainer/π_engine leaves "
                                      "[1/cap, cap] are dropped from the loss", gt=1)
    stale_threshold: float = opt(0.1, "mean |log π_engine − log π_trainer| right after a weight sync above which "
                                      "the run stops with a stale_weights diagnosis", gt=0)
    async_: AsyncSpec = opt(default_factory=AsyncSpec, help="asynchronous off-policy rollouts", key="async")
    gamma: float = opt(1.0, "discount", gt=0, le=1)
    lam: float = opt(0.95, "GAE lambda (PPO)", ge=0, le=1)
    epochs: int = opt(1, "policy passes over each rollout batch", ge=1)
    micro_batch_size: int = opt(8, "sequences per policy forward", ge=1)
    prompts_per_step: int = opt(8, "prompts per RL step", ge=1)
    max_steps: int = opt(20, "RL steps", ge=1)
    eval_every: int = opt(5, "steps between held-out reward measurements (0: only at start and end)", ge=0)
    eval_samples: int = opt(4, "held-out reward is also measured on this many samples per prompt at the rollout "
                               "temperature (the policy RL optimises; fixed seeds); 0: greedy only", ge=0)
    checkpoint_every: int = opt(5, "steps between checkpoints (0: only at the end)", ge=0)
    optim: OptimSpec = opt(default_factory=lambda: OptimSpec(lr=1e-5, warmup_steps=0), help="policy optimiser")
    resources: ResourcesSpec = opt(default_factory=ResourcesSpec, help="policy (and critic) workers")
    reference_cpus: float = opt(0.5, "CPUs of the reference actor (it only scores)", gt=0)
    colocate: ColocateSpec = opt(default_factory=ColocateSpec, help="roles that share resources")
    engine: Literal["forge", "openrlhf"] = opt("forge", "forge's own actors, or OpenRLHF's train_ppo_ray as a "
                                                         "Ray job on a GPU cluster (needs openrlhf installed there)")
    weight_sync: Literal["auto", "blob", "nccl"] = opt(
        "auto", "how new weights reach the engines: nccl (GPU broadcast from policy rank 0), blob "
                "(safetensors through Ray); auto: nccl when policy and engines have their own GPUs")

    def check(self):
        yield from super().check()
        if not self.prompts:
            yield "prompts", "needs at least one source", ""
        n_rewards = len(self.reward_funcs) + (1 if self.reward_model else 0)
        if n_rewards == 0:
            yield "reward_funcs", "needs a reward: a function or a reward_model", ""
        if self.reward_weights and len(self.reward_weights) != n_rewards:
            yield "reward_weights", f"has {len(self.reward_weights)} weights for {n_rewards} rewards", ""
        algo = ALGORITHMS[self.algo]
        if algo.needs_groups and self.rollout.n_samples < 2:
            yield "rollout.n_samples", f"{self.algo} compares samples of the same prompt: needs at least 2", ""
        if self.dynamic_sampling.enabled and not algo.needs_groups:
            yield "dynamic_sampling.enabled", f"{self.algo} has no groups of samples to filter", \
                  "use algo: grpo or rloo"
        if self.overlong.buffer >= self.rollout.max_new_tokens:
            yield "overlong.buffer", f"must be below rollout.max_new_tokens ({self.rollout.max_new_tokens})", ""
        r, gpus = self.rollout, self.resources.gpus_per_worker > 0
        if r.tensor_parallel > 1 and r.gpus_per_engine != 1:
            yield "rollout.tensor_parallel", "tensor parallelism spans whole GPUs: set rollout.gpus_per_engine: 1", ""
        if r.tensor_parallel > 1 and r.backend == "hf":
            yield "rollout.tensor_parallel", "the HF fallback engine has no tensor parallelism", "use backend: vllm"
        if r.tensor_parallel > 1 and self.colocate.all:
            yield "colocate.all", "colocated engines run on the policy's bundles: use rollout.tensor_parallel: 1", ""
        if self.colocate.critic_reward and (not algo.critic or not self.reward_model):
            yield "colocate.critic_reward", "needs a critic (algo: ppo) and a reward_model", ""
        if self.weight_sync == "nccl" and not (gpus and r.gpus_per_engine > 0):
            yield "weight_sync", "nccl needs GPUs for the policy and the engines (resources.gpus_per_worker, " \
                                 "rollout.gpus_per_engine)", ""
        if self.weight_sync == "nccl" and self.colocate.all:
            yield "weight_sync", "NCCL cannot join two ranks on one GPU: colocate.all syncs by blob", ""
        if self.async_.max_staleness and self.colocate.all:
            yield "async.max_staleness", "colocated engines sleep while the policy trains: they cannot generate " \
                                         "the next batch meanwhile", "use colocate.all: false"
        if self.engine == "openrlhf":
            for key in self.forge_only_settings():
                yield key, "is a setting of forge's own RL actors, not passed to OpenRLHF", "use engine: forge"

    def forge_only_settings(self) -> list[str]:
        """The settings this spec changes that only ``engine: forge`` implements."""
        changed = {"policy_loss": self.policy_loss != "ppo", "dual_clip": self.dual_clip is not None,
                   "std_normalize": not self.std_normalize, "dynamic_sampling.enabled": self.dynamic_sampling.enabled,
                   "overlong.buffer": self.overlong.buffer > 0, "overlong.mask_truncated": self.overlong.mask_truncated,
                   "tis_cap": self.tis_cap is not None, "mis_cap": self.mis_cap is not None,
                   "async.max_staleness": self.async_.max_staleness > 0}
        return [key for key, on in changed.items() if on]

    @classmethod
    def expand_raw(cls, raw: dict) -> dict:
        """The spec's mapping with its ``recipe`` expanded (see :mod:`forge_ray.rl.algos.recipes`)."""
        return recipes.expand(raw)

    def sync_method(self) -> str:
        """The weight-sync path actually used (``weight_sync`` with ``auto`` resolved)."""
        if self.weight_sync != "auto":
            return self.weight_sync
        own_gpus = self.resources.gpus_per_worker > 0 and self.rollout.gpus_per_engine > 0 and not self.colocate.all
        return "nccl" if own_gpus else "blob"
