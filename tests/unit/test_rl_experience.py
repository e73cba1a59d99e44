"""Rollout packing and per-token log-probs on a tiny random Llama (no Ray)."""

from __future__ import annotations

import pytest
import torch

from forge_ray.rl.experience import pack_rollouts, token_logps


def _tiny_model():
    from transformers import AutoModelForCausalLM

    from forge_ray.models.registry import PRESETS, hf_config

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(hf_config(PRESETS["tiny"](), vocab_size=64, bos_id=1, eos_id=2,
                                                      pad_id=0)).eval()


def test_pack_marks_exactly_the_response_targets():
    batch = pack_rollouts([[5, 6, 7], [5]], [[8, 9], [10, 11, 12]], pad_id=0)
    assert batch.sequences.tolist() == [[5, 6, 7, 8, 9], [5, 10, 11, 12, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    # targets are tokens 1…4; row 0's response tokens 8, 9 are targets 2, 3
    assert batch.response_mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 0]]


def test_token_logps_match_an_unpadded_forward():
    model = _tiny_model()
    prompts, responses = [[5, 6, 7], [5]], [[8, 9], [10, 11, 12]]
    batch = pack_rollouts(prompts, responses, pad_id=0)
    with torch.no_grad():
        logp, ent = token_logps(model, batch.sequences, batch.attention_mask, return_entropy=True)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            ids = torch.tensor([p + r])
            alone = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
            expected = alone[torch.arange(ids.shape[1] - 1), ids[0, 1:]]
            torch.testing.assert_close(logp[i, :ids.shape[1] - 1], expected, rtol=1e-5, atol=1e-5)
    assert ent.shape == logp.shape and bool((ent > 0).all())


@pytest.mark.parametrize("kind", ["ppo", "gspo", "cispo"])
def test_policy_objective_moves_probability_toward_positive_advantage(kind):
    from forge_ray.rl.algos.advantages import ESTIMATORS
    from forge_ray.rl.objective import PolicyLoss, PolicyObjective

    model = _tiny_model().train()
    batch = pack_rollouts([[5, 6], [5, 6]], [[8, 9], [10, 11]], pad_id=0)
    with torch.no_grad():
        old = token_logps(model, batch.sequences, batch.attention_mask)
    adv, _ = ESTIMATORS["grpo"](scores=torch.tensor([1.0, 0.0]), mask=batch.response_mask, group_size=2)
    objective = PolicyObjective(model, PolicyLoss(kind=kind, kl_loss_coef=0.01))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(4):  # a few PPO epochs on the same rollouts
        optimizer.zero_grad()
        objective(batch.sequences, batch.attention_mask, batch.response_mask, old, old.detach(), adv,
                  torch.ones_like(old)).backward()
        optimizer.step()
    with torch.no_grad():
        new = token_logps(model, batch.sequences, batch.attention_mask)
    gain = ((new - old) * batch.response_mask).sum(-1)
    assert gain[0] > 0 > gain[1]  # the rewarded response became likelier, the other less likely
    assert objective.stats["kl"] > 0 and 0 <= objective.stats["clip_frac"] <= 1


def test_critic_objective_fits_returns():
    from transformers import AutoModelForTokenClassification

    from forge_ray.models.registry import PRESETS, hf_config
    from forge_ray.rl.objective import CriticObjective

    torch.manual_seed(0)
    config = hf_config(PRESETS["tiny"](), vocab_size=64, bos_id=1, eos_id=2, pad_id=0)
    config.num_labels = 1
    critic = AutoModelForTokenClassification.from_config(config)
    objective = CriticObjective(critic, value_clip=None)
    batch = pack_rollouts([[5, 6], [5, 7]], [[8, 9], [10, 11]], pad_id=0)
    returns = torch.tensor([1.0, -1.0])[:, None].expand_as(batch.response_mask).float()
    old = torch.zeros_like(returns)
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = objective(batch.sequences, batch.attention_mask, batch.response_mask, old, returns)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
