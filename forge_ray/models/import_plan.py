"""``forge import PATH --plan``: what training an open model would take, from its config alone —
before copying tens of gigabytes of weights or asking for a single GPU.

Parameters are counted exactly by building the model on PyTorch's ``meta`` device (shapes, no
storage: a 70B model in seconds, any family transformers implements, tied weights once). GPU
memory per worker follows the ZeRO paper for bf16 mixed-precision Adam (Ψ parameters, N
data-parallel workers; 2Ψ bf16 weights, 2Ψ bf16 gradients, 12Ψ fp32 master weights and Adam
moments), with DeepSpeed's CPU offload moving the 12Ψ (``optimizer``) or everything but the
layer being computed (``all``, ZeRO-3) into host memory:

=========  ===============  =================  ===================
stage      offload none     offload optimizer  offload all
=========  ===============  =================  ===================
ZeRO-0     16Ψ              —                  —
ZeRO-1     4Ψ + 12Ψ/N       4Ψ (+12Ψ/N host)   —
ZeRO-2     2Ψ + 14Ψ/N       2Ψ + 2Ψ/N (host)   —
ZeRO-3     16Ψ/N            4Ψ/N (host)        2 layers (16Ψ/N host)
=========  ===============  =================  ===================

plus activations (bf16, a fused attention kernel, optionally checkpointed) and a fixed
allowance for the CUDA context and allocator. The minimum GPUs of a row is the least N whose
per-worker need fits the GPU.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

GB = 1024**3
#: CUDA context, NCCL buffers and allocator fragmentation per GPU worker
OVERHEAD_GB = 3.0


@dataclass
class Row:
    zero_stage: int
    offload: str
    gpu_gb_per_worker: dict[int, float]  # at 1, 8 and the minimum N workers
    host_gb_per_worker: float  # at the minimum N (offload's host memory)
    min_gpus: int | None  # None: does not fit however many GPUs


@dataclass
class ImportPlan:
    architecture: str
    family: str
    params: int
    active_params: int
    activation_gb: float
    gpu_gb: float
    host_gb: float
    rows: list[Row] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def best_of(rows: list[Row]) -> Row | None:
        """The fewest GPUs; among those, the least offloading (host memory is slower)."""
        fits = [r for r in rows if r.min_gpus is not None]
        order = {"none": 0, "optimizer": 1, "all": 2}
        return min(fits, key=lambda r: (r.min_gpus, order[r.offload], r.zero_stage)) if fits else None


def count_parameters(config) -> tuple[int, int]:
    """``(total, active per token)``: the model built on the meta device (no weights, no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    from forge_ray.models.families import experts_of

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    experts, top_k, _ = experts_of(config)
    routed = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n and "shared" not in n)
    return total, int(total - routed + (routed * top_k / experts if experts else 0))


def states_gb(stage: int, offload: str, psi: float, n: int, layer_bytes: float) -> tuple[float, float] | None:
    """(GPU, host) GB of model states per worker for ``n`` workers (the table above); None where
    DeepSpeed has no such mode. ``layer_bytes``: one decoder layer's bf16 weights (offload all)."""
    table = {
        (0, "none"): (16 * psi, 0), (1, "none"): (4 * psi + 12 * psi / n, 0), (2, "none"): (2 * psi + 14 * psi / n, 0),
        (3, "none"): (16 * psi / n, 0), (1, "optimizer"): (4 * psi, 12 * psi / n),
        (2, "optimizer"): (2 * psi + 2 * psi / n, 12 * psi / n), (3, "optimizer"): (4 * psi / n, 12 * psi / n),
        (3, "all"): (2 * layer_bytes, 16 * psi / n),  # the layer computed and the one prefetched
    }
    if (stage, offload) not in table:
        return None
    gpu, host = table[(stage, offload)]
    return gpu / GB, host / GB


def plan(config, gpu_gb: float = 80.0, seq_len: int = 4096, micro_batch: int = 1,
         activation_checkpointing: bool = True, host_gb: float = 200.0) -> ImportPlan:
    """Every ZeRO stage and offload for ``config`` on GPUs of ``gpu_gb`` with ``host_gb`` of host
    memory per GPU worker (what offloading may use), ``micro_batch`` rows of ``seq_len``."""
    from forge_ray.models.families import family_name
    from forge_ray.models.registry import arch_from_hf, estimate

    total, active = count_parameters(config)
    arch = arch_from_hf(config)
    act_gb = estimate(arch, config.vocab_size, seq_len, micro_batch, 1, activation_checkpointing,
                      bytes_per_act=2, fused_attention=True).activation_gb
    family = family_name(config) or "unsupported"
    result = ImportPlan((config.architectures or ["?"])[0], family, total, active, round(act_gb, 2), gpu_gb, host_gb)
    layer_bytes = 2 * total / max(config.num_hidden_layers, 1)
    for stage in range(4):
        for offload in ("none", "optimizer", "all"):
            if states_gb(stage, offload, total, 1, layer_bytes) is None:
                continue

            def gpu_need(n: int, stage=stage, offload=offload) -> float:
                return states_gb(stage, offload, total, n, layer_bytes)[0] + act_gb + OVERHEAD_GB

            def fits(n: int, stage=stage, offload=offload) -> bool:
                return gpu_need(n) <= gpu_gb and states_gb(stage, offload, total, n, layer_bytes)[1] <= host_gb

            powers = [n for n in (2**k for k in range(13)) if fits(n)]
            n_min = _least(fits, powers[0]) if powers else None
            shown = sorted({1, 8} | ({n_min} if n_min else set()))
            result.rows.append(Row(stage, offload, {n: round(gpu_need(n), 1) for n in shown},
                                   round(states_gb(stage, offload, total, n_min or 1, layer_bytes)[1], 1), n_min))
    return result


def _least(fits, upper: int) -> int:
    """The least N ≤ ``upper`` with ``fits(N)`` (need falls as N grows)."""
    lo = max(1, upper // 2)
    while lo < upper and not fits(lo):
        lo += 1
    return lo if fits(lo) else upper


def read_config(path: str | Path):
    """The transformers config of a model directory (or a config.json), refusing remote code."""
    from transformers import AutoConfig

    from forge_ray.models.importer import ImportRefused

    p = Path(path)
    file = p / "config.json" if p.is_dir() else p
    if not file.is_file():
        raise ImportRefused(f"{p}: no config.json — give a Hugging Face model directory or its config.json")
    raw = json.loads(file.read_text())
    if raw.get("auto_map"):
        raise ImportRefused(f"{file}: auto_map asks for remote code; forge-ray never runs it")
    return AutoConfig.from_pretrained(str(file.parent), trust_remote_code=False)


def format_plan(p: ImportPlan) -> list[str]:
    lines = [f"{p.architecture} ({p.family}): {p.params / 1e9:.2f} B parameters"
             + (f", {p.active_params / 1e9:.2f} B active per token" if p.active_params != p.params else ""),
             f"activations per worker {p.activation_gb:.1f} GB; GPUs of {p.gpu_gb:.0f} GB, "
             f"{p.host_gb:.0f} GB of host memory per GPU for offloading", "",
             f"{'ZeRO':<5} {'offload':<10} {'GB/GPU at 1':>12} {'at 8':>8} {'min GPUs':>9} {'host GB/worker':>15}"]
    for r in p.rows:
        lines.append(f"{r.zero_stage:<5} {r.offload:<10} {r.gpu_gb_per_worker[1]:>12.1f} {r.gpu_gb_per_worker[8]:>8.1f} "
                     f"{r.min_gpus if r.min_gpus else 'no fit':>9} {r.host_gb_per_worker:>15.1f}")
    for label, rows in (("without offload", [r for r in p.rows if r.offload == "none"]),
                        ("with CPU offload", [r for r in p.rows if r.offload != "none"])):
        best = ImportPlan.best_of(rows)
        lines.append(f"fewest GPUs {label}: {best.min_gpus} (train.zero_stage={best.zero_stage}, "
                     f"train.offload={best.offload})" if best else f"fewest GPUs {label}: none fits")
    return lines
