"""RL maths against small cases worked out by hand (no Ray, no models)."""

from __future__ import annotations

import math

import pytest
import torch

from forge_ray.rl.algos import ALGORITHMS
from forge_ray.rl.algos.advantages import ESTIMATORS, token_rewards
from forge_ray.rl.algos.losses import KL_ESTIMATORS, aggregate, entropy, policy_loss, value_loss


def test_gae_by_hand_and_padding_is_ignored():
    # rewards [0, 0, 1]; V = [.5, .6, .7]; γ = 1, λ = .5
    # δ2 = 1 − .7 = .3 → A2 = .3; δ1 = .7 − .6 = .1 → A1 = .1 + .5·.3 = .25; δ0 = .1 → A0 = .1 + .5·.25 = .225
    adv, ret = ESTIMATORS["gae"](scores=torch.tensor([1.0]), mask=torch.tensor([[1, 1, 1, 0]]),
                                 values=torch.tensor([[0.5, 0.6, 0.7, 9.0]]), gamma=1.0, lam=0.5)
    assert adv.tolist()[0] == pytest.approx([0.225, 0.25, 0.3, 0.0])
    assert ret.tolist()[0] == pytest.approx([0.725, 0.85, 1.0, 0.0])


def test_kl_penalty_is_shaped_into_token_rewards():
    r = token_rewards(torch.tensor([2.0]), torch.tensor([[1, 1, 0]]), kl=torch.tensor([[0.5, 1.0, 7.0]]), kl_coef=0.1)
    assert r.tolist()[0] == pytest.approx([-0.05, 2.0 - 0.1, 0.0])


def test_grpo_normalises_within_each_group():
    adv, _ = ESTIMATORS["grpo"](scores=torch.tensor([1.0, 0.0, 0.0, 1.0]), mask=torch.ones(4, 2), group_size=2)
    s = 1 / math.sqrt(2)  # group mean .5, sample std √.5
    assert adv[:, 0].tolist() == pytest.approx([s, -s, -s, s], abs=1e-5)
    assert torch.equal(adv[:, 0], adv[:, 1])  # one advantage for every token of a response
    with pytest.raises(ValueError, match="groups of 3"):
        ESTIMATORS["grpo"](scores=torch.zeros(4), mask=torch.ones(4, 2), group_size=3)


def test_rloo_uses_the_other_samples_as_baseline():
    adv, _ = ESTIMATORS["rloo"](scores=torch.tensor([1.0, 0.0, 0.5]), mask=torch.ones(3, 1), group_size=3)
    assert adv[:, 0].tolist() == pytest.approx([0.75, -0.75, 0.0])


def test_reinforce_pp_whitens_returns_over_the_batch():
    adv, ret = ESTIMATORS["reinforce++"](scores=torch.tensor([1.0, 0.0]), mask=torch.ones(2, 2))
    assert ret.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert adv.tolist() == [[pytest.approx(1.0, abs=1e-4)] * 2, [pytest.approx(-1.0, abs=1e-4)] * 2]


def test_kl_estimators():
    logp, ref = torch.tensor([-1.0]), torch.tensor([-2.0])
    assert KL_ESTIMATORS["k1"](logp, ref).item() == pytest.approx(1.0)
    assert KL_ESTIMATORS["k2"](logp, ref).item() == pytest.approx(0.5)
    assert KL_ESTIMATORS["k3"](logp, ref).item() == pytest.approx(math.exp(-1))  # e^−1 − 1 + 1
    assert KL_ESTIMATORS["k3"](ref, ref).item() == 0.0


def test_clipped_policy_loss():
    old = torch.zeros(1, 1)
    logp = torch.full((1, 1), math.log(1.5))  # ratio 1.5
    mask = torch.ones(1, 1)
    loss, stats = policy_loss(logp, old, torch.ones(1, 1), mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(-1.2) and stats["clip_frac"].item() == 1.0  # gain capped at 1+ε
    loss, stats = policy_loss(logp, old, -torch.ones(1, 1), mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(1.5) and stats["clip_frac"].item() == 0.0  # a loss is never capped
    loss, _ = policy_loss(logp, old, torch.ones(1, 1), mask, clip_eps=0.2, clip_eps_high=0.28)
    assert loss.item() == pytest.approx(-1.28)  # asymmetric ("clip-higher") bound


def test_clipped_value_loss():
    loss = value_loss(torch.tensor([[1.0]]), torch.tensor([[0.5]]), torch.tensor([[2.0]]), torch.ones(1, 1), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * 1.69)  # clipped V = .7: (.7 − 2)² > (1 − 2)²


def test_aggregations_weight_tokens_or_sequences():
    x, mask = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]]), torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert aggregate(x, mask, "token-mean").item() == pytest.approx(2.5)
    assert aggregate(x, mask, "seq-mean-token-mean").item() == pytest.approx(3.0)
    assert aggregate(x, mask, "seq-mean-token-sum").item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match="token-mean"):
        aggregate(x, mask, "mean")


def test_entropy_of_uniform_is_log_v():
    assert entropy(torch.zeros(1, 1, 4)).item() == pytest.approx(math.log(4))


def test_every_algorithm_names_a_registered_estimator():
    for name, algo in ALGORITHMS.items():
        assert algo.advantage in ESTIMATORS and algo.kl_estimator in KL_ESTIMATORS, name
    assert ALGORITHMS["ppo"].critic and not ALGORITHMS["grpo"].critic


def test_explained_variance_scores_a_critic_on_response_tokens():
    from forge_ray.rl.algos.advantages import explained_variance

    returns = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 0.5), returns, mask) == pytest.approx(0.0)
    assert explained_variance(1 - returns, returns, mask) < 0  # worse than a constant
    assert explained_variance(returns, torch.zeros_like(returns), mask) == 0.0  # nothing to explain
