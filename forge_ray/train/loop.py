"""The one step loop, run by every Ray Train worker for pre-training and SFT.

It reads top to bottom: set up (threads, seed, model, optimizer, DeepSpeed engine, data
stream), resume if a checkpoint exists, then step: micro-batches with gradient
accumulation, metrics, validation, checkpoints; finally export (rank 0 writes an HF
directory). Everything it needs arrives in ``job`` (plain data), so the same function runs
on a laptop, a GPU box or a cluster.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from forge_ray.compat.transformers import model_from_config
from forge_ray.train.capabilities import to_device

log = logging.getLogger("forge_ray.train")


def lr_lambda(optim: dict, max_steps: int):
    """Warmup, then cosine (or warmup-stable-decay, or constant) down to min_lr_ratio."""
    warmup, floor = optim["warmup_steps"], optim["min_lr_ratio"]

    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if optim["schedule"] == "constant":
            return 1.0
        if optim["schedule"] == "wsd":
            decay_start = max_steps * (1 - optim["decay_fraction"])
            if step < decay_start:
                return 1.0
            return floor + (1 - floor) * max(0.0, (max_steps - step) / max(max_steps - decay_start, 1))
        progress = min(1.0, (step - warmup) / max(max_steps - warmup, 1))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


def build_model(job: dict):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if job.get("vlm"):  # image+text: a LLaVA-layout model around a language model
        from forge_ray.vlm.model import build_vlm, freeze

        model = build_vlm(job)
        freeze(model, job["vlm"]["freeze"])
    elif job["spec"]["kind"] == "reward_model":  # backbone + a freshly initialised scalar head
        torch.manual_seed(job["seed"])
        model = AutoModelForSequenceClassification.from_pretrained(
            job["init_model_dir"], num_labels=1, pad_token_id=job["token_ids"]["pad_id"], use_safetensors=True,
            trust_remote_code=False, dtype=torch.float32)
    elif job.get("init_model_dir"):
        model = AutoModelForCausalLM.from_pretrained(job["init_model_dir"], use_safetensors=True,
                                                     trust_remote_code=False, dtype=torch.float32)
        if job.get("vocab_pieces"):  # domain tokens: rows from their old pieces (checkpoints hold the grown size)
            from forge_ray.models.vocab import grow_embeddings

            grow_embeddings(model, job["token_ids"]["vocab_size"], job["vocab_pieces"])
    else:
        from forge_ray.models.registry import Arch, hf_config

        torch.manual_seed(job["seed"])
        model = AutoModelForCausalLM.from_config(hf_config(Arch(**job["arch"]), **job["token_ids"]),
                                                 dtype=torch.float32)
    lora = job["spec"].get("lora") or {}
    if lora.get("enabled"):
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"],
                                                 lora_dropout=lora["dropout"], target_modules=lora["target_modules"]))
    if job["spec"]["train"]["activation_checkpointing"]:
        model.gradient_checkpointing_enable()
    return model


def build_objective(job: dict, model):
    """What the step loop optimises, by stage kind; all share ``forward(**batch) → loss``,
    ``batch_keys``, ``step_metrics`` and ``eval_sums``/``eval_metrics``."""
    kind, pad_id = job["spec"]["kind"], job["token_ids"]["pad_id"]
    if kind == "dpo":
        from transformers import AutoModelForCausalLM

        from forge_ray.train.preference import DPOObjective

        reference = AutoModelForCausalLM.from_pretrained(job["init_model_dir"], use_safetensors=True,
                                                         trust_remote_code=False, dtype=torch.float32)
        spec = job["spec"]
        return DPOObjective(model, reference, pad_id, spec["beta"], spec["loss"], spec["label_smoothing"],
                            spec["sft_coef"])
    if kind == "reward_model":
        from forge_ray.train.preference import RewardObjective

        return RewardObjective(model, pad_id)
    if job.get("vlm"):
        from forge_ray.vlm.objective import VLMObjective

        return VLMObjective(model)
    from forge_ray.train.objectives import CausalLMObjective

    arch = job.get("arch") or {}
    return CausalLMObjective(model, arch.get("router_aux_loss_coef", 0.0), arch.get("router_z_loss_coef", 0.0))


def _optimizer(model, optim: dict, offload: bool, fused: bool = False):
    """AdamW with decay on matrices only; ``fused`` (one kernel for all parameters) on CUDA."""
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    groups = [g for g in ({"params": decay, "weight_decay": optim["weight_decay"]},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]  # LoRA: no 1-D params
    kwargs = dict(lr=optim["lr"], betas=(optim["beta1"], optim["beta2"]), eps=optim["eps"])
    if offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, **kwargs)
    return torch.optim.AdamW(groups, **kwargs, **({"fused": True} if fused else {}))


def clips_itself(zero_stage: int, device: str) -> bool:
    """ZeRO-0 on CUDA: every rank holds the whole averaged gradient after ``engine.backward``,
    so the trainer clips it there with one fused norm, which is also the logged one; DeepSpeed's
    ZeRO-0 clip computes a norm it does not keep, and logging it took a second pass over every
    parameter (its cost is in ``bench/RESULTS.md``). CPU ranks keep DeepSpeed's
    clip: the pass is cheap there, and CPU runs keep the numerics of earlier versions, which
    the demo's small recipes (and their tests) were tuned on."""
    return zero_stage == 0 and device == "cuda"


def clip_and_norm(engine, objective, grad_clip: float, own_clip: bool):
    """Global gradient norm before clipping, as a tensor (read it when logging: a readback
    waits for the device). ``own_clip``: clip here; else DeepSpeed clips in ``step`` and the
    norm is DeepSpeed's (ZeRO ≥ 1) or computed from the full gradients (ZeRO-0)."""
    if own_clip:
        grads = [p for p in objective.parameters() if p.grad is not None]
        return torch.nn.utils.clip_grad_norm_(grads, grad_clip if grad_clip > 0 else float("inf"), foreach=True)
    norm = engine.get_global_grad_norm()
    if norm is not None:
        return torch.as_tensor(norm)
    norms = [p.grad.detach().float().norm() for p in objective.parameters() if p.grad is not None]
    return torch.stack(norms).norm() if norms else None


def _all_reduce(values: list[float]) -> list[float]:
    import torch.distributed as dist

    on_gpu = dist.is_initialized() and dist.get_backend() == "nccl"  # NCCL reduces CUDA tensors only
    t = torch.tensor(values, dtype=torch.float64, device="cuda" if on_gpu else "cpu")
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def _agreed_checkpoint(train_dir: str | None, rank: int, world: int) -> str | None:
    """Rank 0 picks the newest whole checkpoint under ``train_dir``; every rank loads that one
    (ranks looking on their own could see different sets while one is still arriving)."""
    from forge_ray.train import checkpoint as ckpt

    if not train_dir:
        return None
    choice = [None]
    if rank == 0:
        found = ckpt.latest(Path(train_dir))
        choice = [str(found) if found else None]
    if world > 1:
        torch.distributed.broadcast_object_list(choice, src=0)
    return choice[0]


def evaluate(engine, objective, files: list[str], rank: int, world: int, batch_size: int, n_batches: int,
             pin: bool = False) -> dict:
    """Validation metrics over a fixed (unshuffled) slice of the held-out rows, summed over
    ranks: the objective says what to sum (NLL and bytes; correct pairs and margins)."""
    import pyarrow.parquet as pq

    from forge_ray.data.stream import PackedStream

    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    if rows < world:
        return {}  # too few held-out rows for every rank: no validation rather than a crash
    stream = PackedStream(files, rank, world, max(1, min(batch_size, rows // world)), seed=0, shuffle=False)
    totals: list[float] | None = None
    engine.eval()
    with torch.no_grad():
        for batch in itertools.islice(iter(stream), min(n_batches, stream.batches_per_epoch)):
            b = to_device(batch, objective.batch_keys, engine.device, pin)
            engine(**b)
            sums = objective.eval_sums(b)
            totals = sums if totals is None else [a + x for a, x in zip(totals, sums)]
    engine.train()
    return objective.eval_metrics(_all_reduce(totals)) if totals else {}


def train_loop_per_worker(job: dict) -> None:
    import deepspeed
    import ray.train
    from transformers import AutoTokenizer

    from forge_ray.data.stream import PackedStream
    from forge_ray.distributed.deepspeed_config import bf16_mode, build_ds_config
    from forge_ray.runs import Storage
    from forge_ray.spec.sections import TrainSpec
    from forge_ray.train import capabilities
    from forge_ray.train import checkpoint as ckpt
    from forge_ray.train.export import HF_SUBDIR
    from forge_ray.train.metrics import MetricsWriter, measured_peak_flops
    from forge_ray.train.objectives import token_bytes

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    train, optim = job["spec"]["train"], job["spec"]["optim"]
    torch.set_num_threads(max(1, int(job["cpus_per_worker"])))
    torch.manual_seed(job["seed"])
    np.random.seed(job["seed"] + rank)

    # ---- capabilities (bf16, attention kernel, compile, pinned copies): this worker's device decides
    caps = capabilities.detect(train["precision"], train.get("attention", "auto"), train.get("compile", False))

    # ---- model, optimizer, engine
    model = build_model(job)
    objective = build_objective(job, model)
    from forge_ray.train.objectives import CausalLMObjective

    if isinstance(objective, CausalLMObjective):  # the objective that builds its mask per kernel
        capabilities.apply(model, caps)
    offload = train["offload"] != "none" and train["zero_stage"] >= 1
    optimizer = _optimizer(objective, optim, offload, fused=caps.device == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(optim, train["max_steps"]))
    mode = bf16_mode(train["zero_stage"]) if caps.precision == "bf16" else None
    own_clip = clips_itself(train["zero_stage"], caps.device)
    ds_config = build_ds_config(TrainSpec(**train), world, 0.0 if own_clip else optim["grad_clip"], caps.precision,
                                mode or "deepspeed")
    engine, optimizer, _, scheduler = deepspeed.initialize(model=objective, optimizer=optimizer,
                                                           lr_scheduler=scheduler, config=ds_config,
                                                           dist_init_required=False)
    stream = PackedStream(job["train_files"], rank, world, train["micro_batch_size"], seed=job["seed"])
    objective.byte_table = token_bytes(AutoTokenizer.from_pretrained(job["tokenizer_dir"]))

    # ---- resume: a re-run after a driver crash, or a worker group Ray Train restarted. The run's
    # own newest whole checkpoint comes first: when a node dies, Ray Train may not have
    # registered the checkpoint its workers had just written, and would restart from step 0.
    step, state = 0, None
    agreed = _agreed_checkpoint(job.get("train_dir"), rank, world)
    if agreed:
        state = ckpt.load(engine, Path(agreed), rank)
    elif (restored := ray.train.get_checkpoint()) is not None:
        with restored.as_directory() as d:
            state = ckpt.load(engine, Path(d), rank)
    if state is not None:
        step = state["step"]
        stream.load_state_dict(state["stream"])
        log.info("rank %d resumed at step %d", rank, step)

    run = Storage(job["storage"]).run(job["run_name"]) if rank == 0 else None
    if run:
        run.update(capabilities={**caps.to_json(), "bf16_mode": mode}, precision=caps.precision)
    if run and state is not None:  # the run's own record of every (re)start of its worker group
        run.append_line("run.log", f"{time.strftime('%Y-%m-%d %H:%M:%S')} INFO forge_ray.train: worker group of "
                                   f"{world} resumed at step {step} from {agreed or 'the checkpoint Ray Train kept'}")
    writer = MetricsWriter(run, Path(run.path) / "tensorboard" if run.storage.is_local else None) if run else None
    peak = measured_peak_flops(caps.dtype, caps.device, size=8192 if caps.device == "cuda" else 1024)
    tokens_per_step = (train["micro_batch_size"] * train["grad_accum"] * train["seq_len"] * world
                       * getattr(objective, "sequences_per_row", 1))
    it = iter(stream)
    final: dict = {}
    if step == 0 and job["val_files"] and train["eval_every"]:  # the baseline every later figure is read against
        start = evaluate(engine, objective, job["val_files"], rank, world, train["micro_batch_size"],
                         train["eval_batches"], caps.pin_memory)
        if writer and start:
            writer.log(0, start)

    # ---- the step loop
    while step < train["max_steps"]:
        t0 = time.perf_counter()
        wait = 0.0
        losses = []
        for _ in range(train["grad_accum"]):
            t_data = time.perf_counter()
            batch = to_device(next(it), objective.batch_keys, engine.device, caps.pin_memory)
            wait += time.perf_counter() - t_data
            loss = engine(**batch)
            engine.backward(loss)
            if engine.is_gradient_accumulation_boundary():
                grad_norm = clip_and_norm(engine, objective, optim["grad_clip"], own_clip)
            engine.step()
            losses.append(float(objective.stats.get("lm_loss", loss.detach())))
        step += 1
        _maybe_fail(job, step, rank)
        elapsed = time.perf_counter() - t0
        (loss_sum,) = _all_reduce([sum(losses) / len(losses)])
        metrics = {"loss": loss_sum / world, "lr": scheduler.get_last_lr()[0],
                   "tokens_per_s": tokens_per_step / elapsed, "data_wait_frac": wait / elapsed}
        if grad_norm is not None:
            metrics["grad_norm"] = float(grad_norm)
        metrics["mfu"] = metrics["tokens_per_s"] * job["flops_per_token"] / (peak * world)
        # the objective's own figures (MoE load, DPO rewards, …) from the last micro-batch, averaged over ranks
        metrics.update(objective.step_metrics(lambda values: [v / world for v in _all_reduce(values)]))
        if not math.isfinite(metrics["loss"]):
            raise FloatingPointError(f"loss is {metrics['loss']} at step {step}: lower optim.lr or check the data "
                                     "(see metrics.jsonl for the steps before)")
        last = step == train["max_steps"]
        if job["val_files"] and train["eval_every"] and (step % train["eval_every"] == 0 or last):
            metrics.update(evaluate(engine, objective, job["val_files"], rank, world, train["micro_batch_size"],
                                    train["eval_batches"], caps.pin_memory))
        if writer and (step % train["log_every"] == 0 or last or "val_loss" in metrics):
            writer.log(step, metrics)
        final = metrics
        if last or (train["checkpoint_every"] and step % train["checkpoint_every"] == 0):
            with tempfile.TemporaryDirectory(prefix="forge-ckpt-") as d:
                _write_hf(engine, objective, job, rank, Path(d) / HF_SUBDIR)  # `forge export` reads it
                ckpt.save(engine, Path(d), rank, step, stream.state_dict(), world=world)
                ray.train.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))} | {"step": step},
                                 checkpoint=ray.train.Checkpoint.from_directory(d))
        elif "val_loss" in metrics:  # a validation without a checkpoint: still news for a sweep's scheduler
            ray.train.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))} | {"step": step})
    if writer:
        writer.close()
    export(engine, objective, job, rank, final)


def _maybe_fail(job: dict, step: int, rank: int) -> None:
    """Fault injection for recovery tests (:mod:`forge_ray.faults`): one worker SIGKILLs itself once."""
    fault = job.get("fault")
    if fault is not None and fault.due("train_step", step, rank):
        os.kill(os.getpid(), signal.SIGKILL)


def _write_hf(engine, objective, job: dict, rank: int, out: Path) -> dict | None:
    """Rank 0 writes the HF directory of the current weights (LoRA merged); returns them."""
    from forge_ray.train.export import gather_state, hf_state_dict, write_hf_dir

    state = gather_state(engine, objective, job["spec"]["train"]["zero_stage"] == 3, rank)
    if rank != 0:
        return None
    state = hf_state_dict(state, job["spec"].get("lora"))
    base = _base_model(objective.model)
    extra = None
    if job.get("vlm"):
        from forge_ray.vlm.model import processor_files

        extra = processor_files(job["vlm"])
    write_hf_dir(state, base.config, job["tokenizer_dir"], out, type(base), extra_files=extra)
    return state


def _base_model(model):
    """The plain ``transformers`` model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _write_probe(model, job: dict, run) -> None:
    """Logits of the trained model on a fixed batch, so an export can be checked against it
    (next-token logits of a language model; the scores of a reward model)."""
    import safetensors.torch

    from forge_ray.data.stream import PackedStream

    batch = next(iter(PackedStream(job["train_files"], 0, 1, 2, seed=0, shuffle=False)))
    input_ids = torch.as_tensor(np.asarray(batch["input_ids" if "input_ids" in batch else "chosen_ids"]),
                                dtype=torch.long)
    inputs = {"input_ids": input_ids}
    if "pixel_values" in batch:  # a VLM: the same pixels the export will be given
        size = model.config.vision_config.image_size
        inputs["pixel_values"] = torch.as_tensor(np.asarray(batch["pixel_values"]), dtype=torch.float32).view(-1, 3, size, size)
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        logits = model(**{k: v.to(device) for k, v in inputs.items()}).logits.float().cpu()
    run.write_bytes("export_probe.safetensors", safetensors.torch.save({**inputs, "logits": logits}))


def export(engine, objective, job: dict, rank: int, final_metrics: dict) -> None:
    """Write the run's ``model/`` (rank 0) and the probe logits of the training model on a
    fixed batch (under ZeRO-3 the module holds only shards, so the probe runs on the
    gathered weights instead)."""
    from forge_ray.runs import Storage

    if rank != 0:
        _write_hf(engine, objective, job, rank, Path())  # joins the ZeRO-3 gather; writes nothing
        return
    run = Storage(job["storage"]).run(job["run_name"])
    with run.local_dir("model") as out:
        state = _write_hf(engine, objective, job, rank, out)
    probe_model = objective.model
    if job["spec"]["train"]["zero_stage"] == 3:
        base = _base_model(objective.model)
        probe_model = model_from_config(type(base), base.config, torch.float32)
        probe_model.load_state_dict(state, strict=False)
        probe_model.tie_weights()
    _write_probe(probe_model, job, run)
