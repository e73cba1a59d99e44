"""The HF fallback rollout engine: greedy equals HF generate, sampling is seeded, weight
updates take effect in place."""

from __future__ import annotations

import torch

from forge_ray.rl.rollout import weights_blob
from forge_ray.rl.rollout.hf_engine import HFEngine


def _save_tiny(path, seed: int):
    from transformers import AutoModelForCausalLM

    from forge_ray.models.registry import PRESETS, hf_config

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(PRESETS["tiny"](), vocab_size=64, bos_id=1, eos_id=2, pad_id=0))
    model.save_pretrained(path, safe_serialization=True)
    return model.eval()


def _hf_greedy(model, prompt, n):
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=[])
    return out[0, len(prompt):].tolist()


def test_greedy_matches_generate_and_weights_update_in_place(tmp_path):
    a = _save_tiny(tmp_path / "a", seed=0)
    b = _save_tiny(tmp_path / "b", seed=1)
    engine = HFEngine(str(tmp_path / "a"))
    prompts = [[1, 5, 6, 7], [1, 9]]
    got = engine.generate(prompts, max_tokens=8, stop_token_ids=[])
    assert [g[0] for g in got] == [_hf_greedy(a, p, 8) for p in prompts]
    assert engine.update_weights(weights_blob(b.state_dict())) == len(b.state_dict()) - 1  # tied lm_head sent once
    got = engine.generate(prompts, max_tokens=8, stop_token_ids=[])
    assert [g[0] for g in got] == [_hf_greedy(b, p, 8) for p in prompts]


def test_sampling_is_seeded_and_stops_at_stop_tokens(tmp_path):
    _save_tiny(tmp_path / "a", seed=0)
    first = HFEngine(str(tmp_path / "a"), seed=7).generate([[1, 5]], max_tokens=12, temperature=1.0, n=4,
                                                            stop_token_ids=[])
    again = HFEngine(str(tmp_path / "a"), seed=7).generate([[1, 5]], max_tokens=12, temperature=1.0, n=4,
                                                            stop_token_ids=[])
    assert first == again and len({tuple(s) for s in first[0]}) > 1  # reproducible, and samples differ
    stop = first[0][0][3]
    cut = HFEngine(str(tmp_path / "a"), seed=7).generate([[1, 5]], max_tokens=12, temperature=1.0, n=1,
                                                          stop_token_ids=[stop])
    assert cut[0][0][-1] == stop and len(cut[0][0]) <= 4


def test_a_per_call_seed_fixes_the_draws_whatever_came_before(tmp_path):
    _save_tiny(tmp_path / "a", seed=0)
    engine = HFEngine(str(tmp_path / "a"), seed=7)
    kwargs = dict(max_tokens=10, temperature=1.0, n=3, stop_token_ids=[])
    first = engine.generate([[1, 5]], seed=11, **kwargs)
    engine.generate([[2, 6]], **kwargs)  # unseeded calls in between move the engine's own generator
    assert engine.generate([[1, 5]], seed=11, **kwargs) == first
    assert engine.generate([[1, 5]], seed=12, **kwargs) != first


def test_stop_strings_cut_where_the_controller_cuts(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from forge_ray.rl.rollout import cut_at_stop

    _save_tiny(tmp_path / "a", seed=0)
    vocab = {f"t{i}": i for i in range(64)}
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")))
    fast.save_pretrained(tmp_path / "a")
    engine = HFEngine(str(tmp_path / "a"), seed=3)
    free = engine.generate([[1, 5]], max_tokens=12, stop_token_ids=[])[0][0]
    stop = fast.decode(free[4:6])  # a string the greedy answer contains, spanning two tokens
    cut = engine.generate([[1, 5]], max_tokens=12, stop_token_ids=[], stop=[stop])[0][0]
    assert cut == cut_at_stop(free, [stop], lambda t: fast.decode(t, skip_special_tokens=True))
    assert len(cut) <= 6 and stop in fast.decode(cut)


def test_samples_carry_the_log_prob_the_trainer_computes_and_the_weights_version(tmp_path):
    from forge_ray.rl.experience import pack_rollouts, token_logps

    a = _save_tiny(tmp_path / "a", seed=0)
    b = _save_tiny(tmp_path / "b", seed=1)
    engine = HFEngine(str(tmp_path / "a"), seed=5)
    samples = engine.sample([[1, 5, 6]], max_tokens=6, temperature=1.0, n=3, stop_token_ids=[])[0]
    batch = pack_rollouts([[1, 5, 6]] * 3, [s.tokens for s in samples], pad_id=0)
    with torch.no_grad():
        trainer = token_logps(a, batch.sequences, batch.attention_mask)[batch.response_mask.bool()]
    engine_logp = torch.tensor([lp for s in samples for lp in s.logprobs])
    assert torch.allclose(engine_logp, trainer, atol=1e-4)  # the same distribution: no mismatch
    assert {s.version for s in samples} == {0}
    engine.update_weights(weights_blob(b.state_dict()))
    assert engine.sample([[1, 5, 6]], max_tokens=2)[0][0].version == 1
