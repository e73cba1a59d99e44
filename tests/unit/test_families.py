"""Every decoder family in the table, as a tiny random-weight model: packed documents see
only themselves (sliding layers keep their window, Gemma keeps its soft-caps), the default
LoRA targets exist, and a saved directory passes the importer's checks and reloads with the
same logits. (The stages end to end are covered per family where they run: README, import.)"""

from __future__ import annotations

import pytest
import torch

from forge_ray.models.families import FAMILIES, FROM_SCRATCH, family_of, lora_targets, tiny_config
from forge_ray.train.objectives import causal_logits


def _model(family: str):
    from transformers import AutoModelForCausalLM

    from forge_ray.train import capabilities

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(family))
    capabilities.apply(model, capabilities.select(cuda=False))  # the trainer's kernels on this machine
    return model.eval()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_packed_documents_attend_only_to_themselves(family):
    """Two documents longer than the sliding window (24 tokens in the tiny configs) packed in
    one row give each document's logits from a forward of that document alone (transformers'
    own forward: its causal and sliding masks, its soft-caps)."""
    model = _model(family)
    assert family_of(model.config).name == family
    a, b = torch.randint(3, 512, (1, 40)), torch.randint(3, 512, (1, 33))
    packed = torch.cat([a, b, torch.zeros(1, 7, dtype=torch.long)], 1)  # padding at the end, as the packer leaves it
    segments = torch.tensor([[1] * 40 + [2] * 33 + [0] * 7])
    positions = torch.cat([torch.arange(40), torch.arange(33), torch.zeros(7, dtype=torch.long)])[None]
    with torch.no_grad():
        logits, _ = causal_logits(model, packed, segments, positions)
        alone_a = model(input_ids=a).logits[0, :-1]
        alone_b = model(input_ids=b).logits[0, :-1]
    torch.testing.assert_close(logits[0, :39], alone_a, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(logits[0, 40:72], alone_b, atol=2e-5, rtol=1e-4)


def test_without_the_family_rules_the_window_and_the_soft_caps_would_be_lost():
    """The seams matter: Gemma 3 under a plain document mask (no window on its sliding layers)
    and Gemma 2's LM head without its final soft-cap compute other logits than transformers'
    forward; Gemma 2 soft-caps attention scores, which SDPA cannot, so it runs the eager kernel."""
    from transformers import AutoModelForCausalLM

    from forge_ray.models.families import document_mask

    model = _model("gemma3")
    ids = torch.randint(3, 512, (1, 40))
    with torch.no_grad():
        base = model.get_decoder()(input_ids=ids, attention_mask=document_mask(torch.ones(1, 40, dtype=torch.long)))
        no_window = model.lm_head(base.last_hidden_state)[0]
        reference = model(input_ids=ids).logits[0]
    assert (no_window[:24] - reference[:24]).abs().max() < 1e-4  # inside the window: the same …
    assert (no_window[30:] - reference[30:]).abs().max() > 1e-2  # … past it, not
    torch.manual_seed(0)
    gemma2 = AutoModelForCausalLM.from_config(tiny_config("gemma2", final_logit_softcapping=0.05)).eval()
    from forge_ray.train import capabilities

    capabilities.apply(gemma2, capabilities.select(cuda=False))
    assert gemma2.config._attn_implementation == "eager"
    with torch.no_grad():
        capped, _ = causal_logits(gemma2, ids, torch.ones_like(ids), torch.arange(40)[None])
        uncapped = gemma2.lm_head(gemma2.get_decoder()(input_ids=ids).last_hidden_state)[0, :-1]
        reference = gemma2(input_ids=ids).logits[0, :-1]
    torch.testing.assert_close(capped[0], reference, atol=1e-6, rtol=1e-5)
    assert (uncapped - reference).abs().max() > 1e-2


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_default_lora_targets_exist_and_an_export_passes_the_importer(family, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from forge_ray.models.importer import inspect

    model = _model(family)
    targets = lora_targets(model.config)
    peft_model = get_peft_model(_model(family), LoraConfig(r=2, lora_alpha=4, target_modules=list(targets)))
    adapted = {n.rsplit(".", 1)[-1] for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert adapted == set(targets)
    model.save_pretrained(tmp_path)
    _write_tokenizer(tmp_path)
    info = inspect(tmp_path)
    stored = {t.data_ptr(): t.numel() for t in model.state_dict().values()}  # tied weights once, buffers too
    assert info["family"] == family and info["params"] == sum(stored.values())
    again = AutoModelForCausalLM.from_pretrained(tmp_path, use_safetensors=True, trust_remote_code=False).eval()
    ids = torch.randint(3, 512, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, model(input_ids=ids).logits)


def _write_tokenizer(path) -> None:
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")).save(str(path / "tokenizer.json"))


@pytest.mark.parametrize("family", sorted(FROM_SCRATCH))
def test_a_from_scratch_model_of_each_family_builds_from_the_spec_and_learns(family):
    """``model: {preset: tiny, family: …}`` builds that family's transformers model, which the
    trainer's objective (packed rows, MoE router losses) trains: the loss on a repeated batch falls."""
    from transformers import AutoModelForCausalLM

    from forge_ray.models.registry import hf_config, resolve
    from forge_ray.spec.sections import ModelSpec
    from forge_ray.train import capabilities
    from forge_ray.train.objectives import CausalLMObjective

    spec = ModelSpec(preset="tiny-moe" if FROM_SCRATCH[family].moe else "tiny", family=family)
    assert list(spec.check()) == []
    arch = resolve(spec)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config(arch, 512, 1, 2, 0))
    assert family_of(model.config).name == family
    capabilities.apply(model, capabilities.select(cuda=False))
    objective = CausalLMObjective(model, aux_coef=0.01 if arch.arch == "moe" else 0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    seg = torch.tensor([[1] * 20 + [2] * 28 + [0] * 16, [1] * 64])
    batch = {"input_ids": torch.randint(3, 512, (2, 64)), "segment_ids": seg, "loss_mask": (seg > 0).long(),
             "position_ids": torch.cat([torch.cat([torch.arange(20), torch.arange(28), torch.zeros(16, dtype=torch.long)])[None],
                                        torch.arange(64)[None]])}
    losses = []
    for _ in range(8):
        loss = objective(**batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(objective.logged_loss(loss)))
    assert losses[-1] < losses[0] - 1.0, losses  # memorising one batch: far below the start (ln 512 ≈ 6.2)
    assert ("aux_loss" in objective.stats) == (arch.arch == "moe")


def test_a_family_of_the_wrong_kind_or_not_buildable_is_refused_by_key():
    from forge_ray.spec.sections import ModelSpec

    (key, message, _), = ModelSpec(preset="tiny", family="qwen3_moe").check()
    assert key == "family" and "Mixture-of-Experts family but the model is dense" in message
    (key, message, hint), = ModelSpec(preset="tiny", family="deepseek_v3").check()
    assert key == "family" and "cannot be built from scratch" in message and "qwen3" in hint


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_domain_tokens_grow_each_familys_embeddings_from_their_pieces(family):
    """``new_tokens`` on an imported model of any family: two rows more on the input side (and
    the output side when untied), each the mean of its pieces' rows; the old tokens' logits on an
    old-token text are unchanged."""
    from forge_ray.models.vocab import grow_embeddings

    model = _model(family)
    ids = torch.randint(3, 512, (1, 12))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        old_in = model.get_input_embeddings().weight.detach().clone()
    assert grow_embeddings(model, 514, {512: [5, 6, 7], 513: [9]}) == 2
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == 514
    torch.testing.assert_close(emb[512], old_in[[5, 6, 7]].mean(0))
    torch.testing.assert_close(emb[513], old_in[9])
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert after.shape[-1] == 514
    torch.testing.assert_close(after[..., :512], before, atol=1e-5, rtol=1e-5)
