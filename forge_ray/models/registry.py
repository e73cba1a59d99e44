"""Model presets as Python functions → ``transformers`` configs, plus size/FLOP/memory estimates.

Models are plain ``transformers`` architectures (Llama for dense, Mixtral for MoE) so an
export loads anywhere (``AutoModelForCausalLM``, vLLM) without our code. Nothing here is
distributed: the trainer wraps whatever this builds.

Memory per worker follows the ZeRO paper for mixed-precision Adam (Ψ = parameters, N =
data-parallel ranks): stage 0: 16Ψ; stage 1: 4Ψ + 12Ψ/N; stage 2: 2Ψ + 14Ψ/N; stage 3:
16Ψ/N — plus activations. fp32 training (CPU) keeps 4-byte weights and grads: 16Ψ total
becomes 4Ψ weights + 4Ψ grads + 8Ψ Adam, the same 16 bytes, split the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from forge_ray.spec.sections import ModelSpec


@dataclass(frozen=True)
class Arch:
    """Everything needed to build a model; presets return one, specs override fields."""

    arch: str  # dense | moe
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_seq_len: int = 2048
    num_experts: int = 0
    experts_per_token: int = 0
    router_aux_loss_coef: float = 0.01
    router_z_loss_coef: float = 0.001
    rope_theta: float = 10000.0
    tie_embeddings: bool = False
    family: str = ""  # transformers family (forge_ray.models.families); "": Llama for dense, Mixtral for MoE

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


PRESETS: dict[str, Callable[[], Arch]] = {}


def preset(fn: Callable[[], Arch]) -> Callable[[], Arch]:
    PRESETS[fn.__name__.replace("_", "-").removeprefix("p-")] = fn
    return fn


@preset
def tiny() -> Arch:
    """CPU tests: 2 layers × 128 wide, head_dim 64 (vLLM's CPU attention needs ≥ 64)."""
    return Arch("dense", hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=384,
                max_seq_len=512, tie_embeddings=True)


@preset
def tiny_moe() -> Arch:
    """CPU tests: tiny with 4 experts, top-2."""
    return Arch("moe", hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=192,
                max_seq_len=512, num_experts=4, experts_per_token=2, tie_embeddings=True)


@preset
def small() -> Arch:
    """~10M: quick single-machine experiments (4 layers × 256)."""
    return Arch("dense", hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=4, intermediate_size=768,
                max_seq_len=1024)


@preset
def p_125m() -> Arch:
    return Arch("dense", hidden_size=768, num_layers=12, num_heads=12, num_kv_heads=12, intermediate_size=2048)


@preset
def p_1b() -> Arch:
    return Arch("dense", hidden_size=2048, num_layers=16, num_heads=32, num_kv_heads=8, intermediate_size=8192,
                max_seq_len=4096, rope_theta=500000.0)


@preset
def p_8b() -> Arch:
    return Arch("dense", hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=8, intermediate_size=14336,
                max_seq_len=8192, rope_theta=500000.0)


@preset
def moe_small() -> Arch:
    """~0.9B total / ~0.3B active: 8 experts, top-2."""
    return Arch("moe", hidden_size=1024, num_layers=12, num_heads=16, num_kv_heads=4, intermediate_size=2816,
                max_seq_len=4096, num_experts=8, experts_per_token=2)


@preset
def moe_medium() -> Arch:
    """~14B total / ~2B active: 16 experts, top-2."""
    return Arch("moe", hidden_size=2048, num_layers=24, num_heads=16, num_kv_heads=4, intermediate_size=5632,
                max_seq_len=4096, num_experts=16, experts_per_token=2)


def resolve(spec: ModelSpec) -> Arch:
    """The preset with the spec's overrides applied."""
    if spec.preset not in PRESETS:
        import difflib

        close = difflib.get_close_matches(spec.preset, list(PRESETS), n=1)
        raise KeyError(f"unknown model preset {spec.preset!r}" + (f"; did you mean {close[0]!r}?" if close else
                                                                    f"; presets: {', '.join(PRESETS)}"))
    arch = PRESETS[spec.preset]()
    fields = {k: v for k, v in asdict(spec).items() if k != "preset" and v is not None and v != "preset"}
    arch = replace(arch, **fields)
    if arch.arch == "moe" and (arch.num_experts < 1 or arch.experts_per_token < 1):
        arch = replace(arch, num_experts=arch.num_experts or 4, experts_per_token=arch.experts_per_token or 2)
    return arch


def arch_from_hf(config) -> Arch:
    """The architecture of an existing HF model (an earlier run, or an imported model of any
    family in :mod:`forge_ray.models.families`)."""
    from forge_ray.models.families import experts_of, family_name

    moe, top_k, width = experts_of(config)
    family = family_name(config) or ""
    return Arch("moe" if moe else "dense", hidden_size=config.hidden_size, num_layers=config.num_hidden_layers,
                num_heads=config.num_attention_heads,
                num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
                intermediate_size=width, max_seq_len=config.max_position_embeddings,
                num_experts=moe, experts_per_token=top_k,
                router_aux_loss_coef=getattr(config, "router_aux_loss_coef", 0.01) if moe else 0.01,
                rope_theta=getattr(config, "rope_theta", 10000.0) or 10000.0,
                tie_embeddings=bool(getattr(config, "tie_word_embeddings", False)), family=family)


def hf_config(arch: Arch, vocab_size: int, bos_id: int | None = None, eos_id: int | None = None,
              pad_id: int | None = None):
    """The transformers config of this architecture: Llama (dense) or Mixtral (MoE) unless
    ``arch.family`` names another family that can be built from scratch."""
    common = dict(vocab_size=vocab_size, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
                  num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_heads,
                  num_key_value_heads=arch.num_kv_heads, max_position_embeddings=arch.max_seq_len,
                  rope_theta=arch.rope_theta, tie_word_embeddings=arch.tie_embeddings, bos_token_id=bos_id,
                  eos_token_id=eos_id, pad_token_id=pad_id, head_dim=arch.head_dim)
    family = arch.family or ("mixtral" if arch.arch == "moe" else "llama")
    if family == "llama" and arch.arch == "dense":
        from transformers import LlamaConfig

        return LlamaConfig(**common)
    if family == "mixtral" and arch.arch == "moe":
        from transformers import MixtralConfig

        return MixtralConfig(**common, num_local_experts=arch.num_experts, num_experts_per_tok=arch.experts_per_token,
                             router_aux_loss_coef=arch.router_aux_loss_coef, output_router_logits=True)
    import transformers

    from forge_ray.models.families import FROM_SCRATCH

    f = FROM_SCRATCH[family]  # a checked spec names only these (ModelSpec.check)
    extra = {}
    if arch.arch == "moe":  # Qwen3-MoE: every layer sparse, experts of the preset's MLP width
        extra = dict(num_experts=arch.num_experts, num_experts_per_tok=arch.experts_per_token,
                     moe_intermediate_size=arch.intermediate_size, decoder_sparse_step=1,
                     router_aux_loss_coef=arch.router_aux_loss_coef, output_router_logits=True)
    return getattr(transformers, f.config_class)(**common, **extra, architectures=[f.architecture])


# ------------------------------------------------------------------ estimates


@dataclass
class Estimate:
    params: int
    active_params: int
    embedding_params: int
    flops_per_token: float  # training (forward + backward), 6N + attention
    memory_gb: dict[str, float]  # per worker, by ZeRO stage, model states + activations
    activation_gb: float

    def to_json(self) -> dict:
        return asdict(self)


def estimate(arch: Arch, vocab_size: int, seq_len: int, micro_batch: int, num_workers: int,
             activation_checkpointing: bool = False, bytes_per_act: int = 4, frozen_copies: int = 0,
             fused_attention: bool = False) -> Estimate:
    """Parameters, FLOPs/token and memory per worker by ZeRO stage. ``frozen_copies``: full
    extra copies of the weights each worker holds for inference only (DPO's reference),
    counted at 2 bytes/param (bf16). ``fused_attention``: the attention kernel never stores
    the T×T scores (FlexAttention/flash on GPUs), so activations grow linearly in T."""
    d, L, f, V = arch.hidden_size, arch.num_layers, arch.intermediate_size, vocab_size
    kv = arch.num_kv_heads * arch.head_dim
    attn = d * d * 2 + d * kv * 2  # q, o, k, v
    mlp = 3 * d * f
    experts = max(arch.num_experts, 1)
    per_layer_total = attn + mlp * experts + (d * arch.num_experts if arch.arch == "moe" else 0) + 2 * d
    per_layer_active = attn + mlp * (arch.experts_per_token if arch.arch == "moe" else 1) + 2 * d
    emb = V * d * (1 if arch.tie_embeddings else 2)
    total = L * per_layer_total + emb + d
    active = L * per_layer_active + emb + d
    flops = 6 * (active - V * d * (0 if arch.tie_embeddings else 1)) + 12 * L * d * seq_len
    psi, n = float(total), float(num_workers)
    frozen = 2 * psi * frozen_copies
    states = {"zero0": 16 * psi + frozen, "zero1": 4 * psi + 12 * psi / n + frozen,
              "zero2": 2 * psi + 14 * psi / n + frozen, "zero3": 16 * psi / n + frozen}
    # activations kept for backward, per layer per token, in the unfused HF Llama/Mixtral block: the
    # two norms' inputs and outputs, q/k/v before and after rope, attention output, o_proj input,
    # SwiGLU's gate, up, act(gate) and product (≈ 11·d + 3·kv + 4·f elements; checked against a
    # measured peak in bench/RESULTS.md); plus the T×T scores unless the kernel is fused
    f_active = f * (arch.experts_per_token if arch.arch == "moe" else 1)
    scores = 0 if fused_attention else 5 * arch.num_heads * seq_len / 2
    per_token = L * ((11 * d + 3 * kv + 4 * f_active) + scores) * bytes_per_act
    if activation_checkpointing:
        per_token = L * 2 * d * bytes_per_act + per_token / L
    act = per_token * seq_len * micro_batch + micro_batch * seq_len * V * 4 * 2  # + logits and their grad
    gb = 1024**3
    return Estimate(params=int(total), active_params=int(active), embedding_params=int(emb),
                    flops_per_token=float(flops), memory_gb={k: (v + act) / gb for k, v in states.items()},
                    activation_gb=act / gb)
