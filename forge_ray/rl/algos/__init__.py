"""RL algorithms as data: which advantage estimator, whether a critic is trained, where the
KL penalty goes, whether samples come in groups. The controller, the placement and the spec
checks read ``ALGORITHMS[name]`` instead of branching on names. (The KL estimator of the loss
term is the spec's ``kl_estimator``: it only matters where the KL is a loss term, GRPO.)"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Algorithm:
    advantage: str  # a key of advantages.ESTIMATORS
    critic: bool  # train a value model (PPO)
    kl_in_reward: bool  # KL penalty shaped into token rewards (else a loss term)
    needs_groups: bool  # the advantage compares samples of one prompt: n_samples ≥ 2


ALGORITHMS: dict[str, Algorithm] = {
    "ppo": Algorithm(advantage="gae", critic=True, kl_in_reward=True, needs_groups=False),
    "grpo": Algorithm(advantage="grpo", critic=False, kl_in_reward=False, needs_groups=True),
    "rloo": Algorithm(advantage="rloo", critic=False, kl_in_reward=True, needs_groups=True),
    "reinforce++": Algorithm(advantage="reinforce++", critic=False, kl_in_reward=True, needs_groups=False),
}
