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


def test_rloo_applies_its_kl_penalty():
    # centred scores [1, −1]; token rewards −kl_coef·kl on each token, the score on the last:
    # row 0: [−.5, −.5 + 1] → returns [0, .5]; row 1: [0, −1] → returns [−1, −1]
    args = dict(scores=torch.tensor([1.0, 0.0]), mask=torch.ones(2, 2), group_size=2,
                kl=torch.tensor([[0.5, 0.5], [0.0, 0.0]]))
    without, _ = ESTIMATORS["rloo"](**args, kl_coef=0.0)
    with_kl, _ = ESTIMATORS["rloo"](**args, kl_coef=1.0)
    assert without.tolist() == [[1.0, 1.0], [-1.0, -1.0]]
    assert with_kl.tolist() == [pytest.approx([0.0, 0.5]), pytest.approx([-1.0, -1.0])]


def test_dr_grpo_advantages_are_centred_not_scaled():
    scores, mask = torch.tensor([1.0, 0.0, 0.2, 0.0]), torch.ones(4, 1)
    adv, _ = ESTIMATORS["grpo"](scores=scores, mask=mask, group_size=2, std_normalize=False)
    assert adv[:, 0].tolist() == pytest.approx([0.5, -0.5, 0.1, -0.1])
    scaled, _ = ESTIMATORS["grpo"](scores=scores, mask=mask, group_size=2)
    assert scaled[0, 0].item() == pytest.approx(scaled[2, 0].item(), rel=1e-4)  # std scaling makes a 0.2 gap weigh like a 1.0 gap


def test_gae_advantages_whitened_returns_not():
    args = dict(scores=torch.tensor([1.0, 0.0]), mask=torch.tensor([[1, 1, 0], [1, 1, 1]]),
                values=torch.tensor([[0.5, 0.6, 9.0], [0.1, 0.2, 0.3]]), gamma=1.0, lam=0.95)
    raw, ret = ESTIMATORS["gae"](**args)
    white, ret_w = ESTIMATORS["gae"](**args, whiten=True)
    m = args["mask"].bool()
    assert torch.equal(ret, ret_w)  # the critic fits the same returns
    assert white[m].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert white[m].var(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    assert white[~m].tolist() == [0.0]
    assert torch.corrcoef(torch.stack([raw[m], white[m]]))[0, 1] > 0.999  # same order, new scale


def test_k3_estimate_is_clamped_like_verl_and_openrlhf():
    logp, ref = torch.tensor([0.0]), torch.tensor([8.0])  # log-ratio 8: e^8 − 1 − 8 ≈ 2,972 unclamped
    assert KL_ESTIMATORS["k3"](logp, ref).item() == pytest.approx(10.0)
    assert KL_ESTIMATORS["k3"](torch.tensor([-1.0]), torch.tensor([-2.0])).item() == pytest.approx(math.exp(-1))


def test_dual_clip_bounds_the_loss_of_a_negative_advantage():
    old, mask = torch.zeros(1, 1), torch.ones(1, 1)
    logp = torch.full((1, 1), math.log(5.0))  # ratio 5 on a bad action: −A·ρ = 5
    loss, stats = policy_loss(logp, old, -torch.ones(1, 1), mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(5.0) and stats["dual_clip_frac"].item() == 0.0
    loss, stats = policy_loss(logp, old, -torch.ones(1, 1), mask, clip_eps=0.2, dual_clip=3.0)
    assert loss.item() == pytest.approx(3.0) and stats["dual_clip_frac"].item() == 1.0
    loss, _ = policy_loss(logp, old, torch.ones(1, 1), mask, clip_eps=0.2, dual_clip=3.0)
    assert loss.item() == pytest.approx(-1.2)  # positive advantages: the ordinary clip


def test_gspo_ratio_is_the_geometric_mean_of_token_ratios_and_its_gradient_the_sequences():
    from forge_ray.rl.algos.losses import sequence_ratio

    old = torch.zeros(1, 3)
    logp = torch.tensor([[math.log(2.0), math.log(8.0), 5.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0]])  # the third token is padding
    ratio = sequence_ratio(logp, old, mask)
    assert ratio[0, :2].tolist() == pytest.approx([4.0, 4.0])  # √(2·8)
    # with every ratio inside the clip, GSPO-token's gradient is GSPO's: −A·∇s_i, s_i = exp(mean log-ratio)
    adv = torch.full((1, 3), 0.5)
    loss, _ = policy_loss(logp, old, adv, mask, clip_eps=10.0, kind="gspo", aggregation="seq-mean-token-mean")
    (grad,) = torch.autograd.grad(loss, logp)
    direct = logp.detach().clone().requires_grad_(True)
    seq = -0.5 * torch.exp((direct[0, :2] - old[0, :2]).mean())
    (want,) = torch.autograd.grad(seq, direct)
    assert grad.tolist()[0] == pytest.approx(want.tolist()[0], abs=1e-6)
    assert loss.item() == pytest.approx(-0.5 * 4.0)


def test_gspo_clips_whole_sequences():
    old, mask = torch.zeros(2, 2), torch.ones(2, 2)
    logp = torch.tensor([[0.0, 0.002], [0.0, 0.0]])  # sequence 0: mean log-ratio .001 > 4e-4
    _, stats = policy_loss(logp, old, torch.ones(2, 2), mask, clip_eps=3e-4, clip_eps_high=4e-4, kind="gspo")
    assert stats["clip_frac"].item() == pytest.approx(0.5)  # both tokens of sequence 0, none of sequence 1


def test_cispo_keeps_a_gradient_where_ppo_clips_it_away():
    old, mask, adv = torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1)
    logp = torch.full((1, 1), math.log(1.5), requires_grad=True)  # ratio 1.5, above 1 + 0.28
    loss, stats = policy_loss(logp, old, adv, mask, clip_eps=0.2, clip_eps_high=0.28, kind="cispo")
    assert loss.item() == pytest.approx(-1.28 * math.log(1.5))  # −sg(clip(ρ))·A·log π
    (grad,) = torch.autograd.grad(loss, logp)
    assert grad.item() == pytest.approx(-1.28) and stats["clip_frac"].item() == 1.0
    ppo, _ = policy_loss(logp, old, adv, mask, clip_eps=0.2, clip_eps_high=0.28)
    (grad,) = torch.autograd.grad(ppo, logp)
    assert grad.item() == 0.0  # PPO: a clipped token teaches nothing


def test_is_weights_scale_each_tokens_loss():
    old, mask = torch.zeros(1, 2), torch.ones(1, 2)
    weights = torch.tensor([[2.0, 0.5]])
    loss, _ = policy_loss(old.clone(), old, torch.ones(1, 2), mask, is_weights=weights)
    assert loss.item() == pytest.approx(-(2.0 + 0.5) / 2)


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
    # Dr. GRPO: each response's token sum over one constant, here 4 → (6/4 + 4/4) / 2
    assert aggregate(x, mask, "seq-mean-token-sum-norm", norm_length=4).item() == pytest.approx(1.25)
    with pytest.raises(ValueError, match="token-mean"):
        aggregate(x, mask, "mean")


def test_entropy_of_uniform_is_log_v():
    assert entropy(torch.zeros(1, 1, 4)).item() == pytest.approx(math.log(4))


def test_every_algorithm_names_a_registered_estimator():
    for name, algo in ALGORITHMS.items():
        assert algo.advantage in ESTIMATORS, name
    assert ALGORITHMS["ppo"].critic and not ALGORITHMS["grpo"].critic
    assert ALGORITHMS["grpo"].needs_groups and ALGORITHMS["rloo"].needs_groups
    assert not ALGORITHMS["ppo"].needs_groups and not ALGORITHMS["reinforce++"].needs_groups


def test_explained_variance_scores_a_critic_on_response_tokens():
    from forge_ray.rl.algos.advantages import explained_variance

    returns = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 0.5), returns, mask) == pytest.approx(0.0)
    assert explained_variance(1 - returns, returns, mask) < 0  # worse than a constant
    assert explained_variance(returns, torch.zeros_like(returns), mask) == 0.0  # nothing to explain
