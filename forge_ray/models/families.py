"""The decoder families forge-ray trains, as transformers implements them (never remote code),
and the few things that differ between them — in one table, not in branches across the trainer.

Every stage drives a family through the same three seams:

- the **document mask** of packed rows (:func:`packed_attention_mask`): one boolean mask for
  every layer, narrowed to the family's sliding window where the model slides; a mask per
  layer type (``{"full_attention": …, "sliding_attention": …}``) for families that alternate
  full and sliding layers (Gemma 2/3, Qwen 2/3 with ``use_sliding_window``);
- the **logits** (:func:`final_logits`): the LM head, then the family's final soft-cap
  (Gemma 2/3) — forge computes logits from the decoder's hidden states itself (only where the
  loss needs them), so what ``ForCausalLM.forward`` adds must be added here too;
- the **attention kernel** (:func:`attention_kernel`): SDPA cannot soft-cap attention scores
  (Gemma 2), so such a model runs transformers' eager kernel (or FlexAttention, which can).

The table also names what LoRA adapts by default (Phi-3 fuses q/k/v into one ``qkv_proj``;
DeepSeek-V3 projects through low-rank latents) and how a tiny model of the family is shaped
for tests (:func:`tiny_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class Family:
    name: str
    architecture: str  # transformers' causal-LM class, as config.json names it
    config_class: str  # transformers' config class, for from-scratch models
    moe: bool = False
    lora_targets: tuple[str, ...] = ATTENTION  # LoRA's default target modules: the attention projections
    masks_by_layer_type: bool = False  # forward takes {layer type: mask} (alternating sliding/full layers)
    tiny: dict = field(default_factory=dict)  # config fields a tiny test model of the family needs


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("llama", "LlamaForCausalLM", "LlamaConfig"),
    Family("mistral", "MistralForCausalLM", "MistralConfig", tiny={"sliding_window": 24}),
    Family("qwen2", "Qwen2ForCausalLM", "Qwen2Config", masks_by_layer_type=True,
           tiny={"use_sliding_window": True, "sliding_window": 24, "max_window_layers": 1}),
    Family("qwen3", "Qwen3ForCausalLM", "Qwen3Config", masks_by_layer_type=True),
    Family("gemma2", "Gemma2ForCausalLM", "Gemma2Config", masks_by_layer_type=True, tiny={"sliding_window": 24}),
    Family("gemma3", "Gemma3ForCausalLM", "Gemma3TextConfig", masks_by_layer_type=True,
           tiny={"sliding_window": 24, "sliding_window_pattern": 2}),
    Family("phi3", "Phi3ForCausalLM", "Phi3Config", lora_targets=("qkv_proj", "o_proj")),
    Family("olmo2", "Olmo2ForCausalLM", "Olmo2Config"),
    Family("mixtral", "MixtralForCausalLM", "MixtralConfig", moe=True,
           tiny={"num_local_experts": 4, "num_experts_per_tok": 2}),
    Family("qwen3_moe", "Qwen3MoeForCausalLM", "Qwen3MoeConfig", moe=True,
           tiny={"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 64, "decoder_sparse_step": 1}),
    Family("deepseek_v3", "DeepseekV3ForCausalLM", "DeepseekV3Config", moe=True,
           lora_targets=("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"),
           tiny={"n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 64, "n_shared_experts": 1,
                 "first_k_dense_replace": 1, "q_lora_rank": 32, "kv_lora_rank": 32, "qk_rope_head_dim": 16,
                 "qk_nope_head_dim": 16, "v_head_dim": 32, "n_group": 1, "topk_group": 1}),
)}
BY_ARCHITECTURE = {f.architecture: f for f in FAMILIES.values()}
#: families a from-scratch model (``model.family``) can be: their configs take the Llama-style
#: shape fields; DeepSeek-V3's latent attention needs shapes of its own (import one instead)
FROM_SCRATCH = {name: f for name, f in FAMILIES.items() if name != "deepseek_v3"}


class UnsupportedFamily(ValueError):
    """A model whose architecture is not in :data:`FAMILIES` (the message lists those that are)."""


def family_of(config) -> Family:
    """The family of a transformers config (by its architecture, else its ``model_type``)."""
    for arch in getattr(config, "architectures", None) or []:
        if arch in BY_ARCHITECTURE:
            return BY_ARCHITECTURE[arch]
    model_type = getattr(config, "model_type", None)
    by_type = {"gemma3_text": "gemma3"}.get(model_type, model_type)
    if by_type in FAMILIES:
        return FAMILIES[by_type]
    raise UnsupportedFamily(f"architecture {(getattr(config, 'architectures', None) or [model_type])[0]!r} is not "
                            f"supported (supported: {', '.join(BY_ARCHITECTURE)})")


def lora_targets(config) -> list[str]:
    """What LoRA adapts when the spec names nothing: the family's attention projections."""
    return list(_family_or_none(config, "lora_targets") or ATTENTION)


def experts_of(config) -> tuple[int, int, int]:
    """``(experts per layer, experts per token, each expert's MLP width)`` of an MoE config
    (``(0, 0, intermediate_size)`` for a dense one): each family names them its own way."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config  # a VLM: its language model
    experts = next((getattr(config, k) for k in ("num_local_experts", "num_experts", "n_routed_experts")
                    if getattr(config, k, None)), 0)
    if not experts:
        return 0, 0, getattr(config, "intermediate_size", 0)
    return experts, config.num_experts_per_tok, getattr(config, "moe_intermediate_size", None) or config.intermediate_size


def document_mask(segment_ids: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """Boolean mask [B, 1, T, T], True where query i may attend key j: same document, j ≤ i,
    and (sliding layers) i − j < ``window``, transformers' own window rule. SDPA takes it as is
    (an additive float mask costs a fill and an add per head and layer)."""
    import torch

    t = segment_ids.shape[1]
    idx = torch.arange(t, device=segment_ids.device)
    causal = idx[None, :] <= idx[:, None]
    if window is not None:
        causal &= idx[None, :] > idx[:, None] - window
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    allowed = same & causal & (segment_ids[:, :, None] != 0)
    allowed |= torch.eye(t, dtype=torch.bool, device=segment_ids.device)  # padding sees itself: no NaN rows
    return allowed[:, None]


def document_block_mask(segment_ids: torch.Tensor, window: int | None = None):
    """The same rule as :func:`document_mask` as a FlexAttention ``BlockMask``: blocks no query
    of which may see (other documents, the future, beyond the window) are skipped by the kernel."""
    from torch.nn.attention.flex_attention import create_block_mask

    seg = segment_ids

    def allowed(b, h, q, kv):
        ok = (seg[b, q] == seg[b, kv]) & (kv <= q) & (seg[b, q] != 0)
        if window is not None:
            ok = ok & (kv > q - window)
        return ok | (q == kv)

    batch, t = seg.shape
    return create_block_mask(allowed, batch, None, t, t, device=seg.device)


def packed_attention_mask(config, segment_ids: torch.Tensor):
    """What the model's ``attention_mask`` must be for packed rows under its attention kernel:
    one mask, or one per layer type for families that alternate sliding and full layers; a
    block mask for FlexAttention, a boolean one for SDPA, an additive one (0 / −∞) for the
    eager kernel, which adds the mask to the scores."""
    kernel = getattr(config, "_attn_implementation", None)
    window = getattr(config, "sliding_window", None)

    def build(w):
        if kernel == "flex_attention":
            return document_block_mask(segment_ids, w)
        mask = document_mask(segment_ids, w)
        if kernel == "eager":
            import torch

            return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill_(
                ~mask, torch.finfo(torch.float32).min)
        return mask

    layer_types = getattr(config, "layer_types", None)
    if layer_types and _family_or_none(config, "masks_by_layer_type"):
        return {kind: build(window if kind == "sliding_attention" else None) for kind in set(layer_types)}
    return build(window)


def final_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on the decoder's hidden states, then the family's final soft-cap (Gemma)."""
    import torch

    logits = model.lm_head(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def attention_kernel(config, chosen: str) -> str:
    """``chosen`` (transformers' name), unless the model soft-caps attention scores, which SDPA
    cannot do: then the eager kernel, which does what the model was trained with."""
    if getattr(config, "attn_logit_softcapping", None) and chosen == "sdpa":
        return "eager"
    return chosen


def tiny_config(family: str, vocab_size: int = 512, **overrides):
    """A tiny random-weight config of ``family`` (tests, import examples): 2 layers × 128, head_dim 64
    (vLLM's CPU attention needs ≥ 64), the family's own defaults otherwise."""
    import transformers

    f = FAMILIES[family]
    fields = dict(vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=512,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, architectures=[f.architecture])
    if family == "deepseek_v3":  # multi-head latent attention: its own head shapes, every head its own KV
        fields.pop("head_dim")
        fields["num_key_value_heads"] = fields["num_attention_heads"]
    config = getattr(transformers, f.config_class)(**{**fields, **f.tiny, **overrides})
    return config


def family_name(config) -> str | None:
    """The family's name, or None for a model outside the table (an earlier version's making, a
    VLM's language model)."""
    try:
        return family_of(config).name
    except UnsupportedFamily:
        return None


def _family_or_none(config, attribute: str):
    name = family_name(config)
    return getattr(FAMILIES[name], attribute) if name else None
