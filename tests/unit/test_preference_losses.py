"""DPO variants and the Bradley–Terry loss against values worked out by hand."""

from __future__ import annotations

import pytest
import torch

from forge_ray.train.preference import bradley_terry_loss, dpo_loss, sequence_logps

# policy log-probs of chosen/rejected, reference log-probs of chosen/rejected
PC, PR, RC, RR = torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.5])
# h = (−1 − (−3)) − (−2 − (−2.5)) = 2 − 0.5 = 1.5; with β = 0.1, β·h = 0.15


def test_sigmoid_dpo_loss_and_implicit_rewards():
    loss, rewards = dpo_loss(PC, PR, RC, RR, beta=0.1)
    assert loss.item() == pytest.approx(0.620957, abs=1e-6)  # −log σ(0.15) = log(1 + e^−0.15)
    assert rewards["chosen_reward"].item() == pytest.approx(0.1)  # β·(−1 − (−2))
    assert rewards["rejected_reward"].item() == pytest.approx(-0.05)  # β·(−3 − (−2.5))


def test_conservative_dpo_mixes_in_the_flipped_label():
    loss, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, variant="cdpo", label_smoothing=0.1)
    assert loss.item() == pytest.approx(0.9 * 0.620957 + 0.1 * 0.770957, abs=1e-6)  # 0.1·log(1 + e^0.15)


def test_ipo_is_the_squared_distance_to_half_inverse_beta():
    loss, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, variant="ipo")
    assert loss.item() == pytest.approx((1.5 - 5.0) ** 2)


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    pc, pr = PC.clone().requires_grad_(), PR.clone().requires_grad_()
    loss, _ = dpo_loss(pc, pr, RC, RR, beta=0.1)
    loss.sum().backward()
    assert pc.grad.item() < 0 < pr.grad.item()  # descending the loss increases π(chosen)


def test_bradley_terry_loss():
    loss = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.5, 0.0]))
    assert loss.tolist() == pytest.approx([0.201413, 0.693147], abs=1e-6)  # log(1 + e^−1.5), log 2


def test_sequence_logps_sums_only_masked_targets():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))  # predictions for t=1, t=2
    ids = torch.tensor([[0, 1, 1]])
    mask = torch.tensor([[0, 0, 1]])  # only the last token is an answer token
    total, count = sequence_logps(logits, ids, mask)
    assert total.item() == pytest.approx(torch.log(torch.tensor(0.8)).item()) and count.item() == 1
    total, count = sequence_logps(logits, ids, torch.tensor([[0, 1, 1]]))
    assert total.item() == pytest.approx(torch.log(torch.tensor(0.25 * 0.8)).item()) and count.item() == 2
