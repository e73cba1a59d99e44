"""Rollout packing and per-token log-probs on a tiny random Llama (no Ray)."""

from __future__ import annotations

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
