"""RL algorithms as data: which advantage estimator, whether a critic is trained, where the
KL penalty goes. The controller reads ``ALGORITHMS[name]`` instead of branching on names."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Algorithm:
    advantage: str  # a key of advantages.ESTIMATORS
    critic: bool  # train a value model (PPO)
    kl_in_reward: bool  # KL penalty shaped into token rewards (else a loss term)
    needs_groups: bool  # n_samples ≥ 2 per prompt required
    kl_estimator: str = "k1"  # for the loss term: k3 (GRPO) is unbiased and non-negative


ALGORITHMS: dict[str, Algorithm] = {
    "ppo": Algorithm(advantage="gae", critic=True, kl_in_reward=True, needs_groups=False),
    "grpo": Algorithm(advantage="grpo", critic=False, kl_in_reward=False, needs_groups=True, kl_estimator="k3"),
    "rloo": Algorithm(advantage="rloo", critic=False, kl_in_reward=True, needs_groups=True),
    "reinforce++": Algorithm(advantage="reinforce++", critic=False, kl_in_reward=True, needs_groups=False),
}
