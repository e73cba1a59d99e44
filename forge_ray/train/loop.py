"""The one step loop, run by every Ray Train worker for pre-training, SFT, DPO, reward
models and vision-language models.

:class:`Trainer` reads top to bottom: set up (threads, seed, model, objective, optimizer,
DeepSpeed engine, data stream), resume if a checkpoint exists, then step: micro-batches with
gradient accumulation, metrics, validation, checkpoints; finally export (rank 0 writes an HF
directory). Everything it needs arrives as one :class:`~forge_ray.train.job.TrainJob`, so the
same code runs on a laptop, a GPU box or a cluster.
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

from forge_ray.distributed.engine import clip_and_norm
from forge_ray.train.capabilities import to_device
from forge_ray.train.job import TrainJob

log = logging.getLogger("forge_ray.train")


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


class Trainer:
    """One worker's training run: :meth:`setup` builds everything, :meth:`resume` restores the
    newest checkpoint, then each :meth:`train_step` is followed by :meth:`maybe_eval` and
    :meth:`maybe_checkpoint`; :meth:`fit` is that sequence, ending with the export."""

    def __init__(self, job: TrainJob):
        import ray.train

        self.job, self.train, self.optim = job, job.spec.train, job.spec.optim
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.step = 0
        self.resumed_from: str | None = None

    # ---- set-up: this worker's device decides the capabilities (bf16, kernel, compile, pinning)
    def setup(self) -> None:
        from transformers import AutoTokenizer

        from forge_ray.data.stream import PackedStream
        from forge_ray.distributed.engine import build_engine
        from forge_ray.runs import Storage
        from forge_ray.train import capabilities
        from forge_ray.train.build import build_model, build_objective
        from forge_ray.train.metrics import MetricsWriter, measured_peak_flops
        from forge_ray.train.objectives import token_bytes

        job, train, optim = self.job, self.train, self.optim
        torch.set_num_threads(max(1, int(job.spec.resources.cpus_per_worker)))
        torch.manual_seed(job.seed)
        np.random.seed(job.seed + self.rank)
        self.caps = caps = capabilities.detect(train.precision, train.attention, train.compile, train.experts)
        model = build_model(job)
        self.objective = build_objective(job, model, token_bytes(AutoTokenizer.from_pretrained(job.tokenizer_dir)))
        capabilities.apply(model, caps, attention=self.objective.any_attention_kernel)
        built = build_engine(self.objective, optim, train, self.world, caps, max_steps=train.max_steps)
        self.engine, self.scheduler, self.own_clip, self.bf16_mode = (built.engine, built.scheduler, built.own_clip,
                                                                      built.bf16_mode)
        self.stream = PackedStream(job.train_files, self.rank, self.world, train.micro_batch_size, seed=job.seed)
        self.run = Storage(job.storage).run(job.run_name) if self.rank == 0 else None
        if self.run:
            self.run.update(capabilities={**caps.to_json(), "bf16_mode": self.bf16_mode}, precision=caps.precision)
        tensorboard = Path(self.run.path) / "tensorboard" if self.run and self.run.storage.is_local else None
        self.writer = MetricsWriter(self.run, tensorboard) if self.run else None
        self.peak = measured_peak_flops(caps.dtype, caps.device, size=8192 if caps.device == "cuda" else 1024)
        self.tokens_per_step = (train.micro_batch_size * train.grad_accum * train.seq_len * self.world
                                * self.objective.sequences_per_row)

    # ---- resume: a re-run after a driver crash, or a worker group Ray Train restarted. The run's
    # own newest whole checkpoint comes first: when a node dies, Ray Train may not have
    # registered the checkpoint its workers had just written, and would restart from step 0.
    def resume(self) -> None:
        import ray.train

        from forge_ray.train import checkpoint as ckpt

        state = None
        agreed = _agreed_checkpoint(self.job.train_dir, self.rank, self.world)
        if agreed:
            state = ckpt.load(self.engine, Path(agreed), self.rank)
        elif (restored := ray.train.get_checkpoint()) is not None:
            with restored.as_directory() as d:
                state = ckpt.load(self.engine, Path(d), self.rank)
        if state is None:
            return
        self.step = state["step"]
        self.stream.load_state_dict(state["stream"])
        self.resumed_from = agreed or "the checkpoint Ray Train kept"
        log.info("rank %d resumed at step %d", self.rank, self.step)
        # the run's own record of every (re)start of its worker group
        self.note(f"worker group of {self.world} resumed at step {self.step} from {self.resumed_from}")

    def note(self, message: str) -> None:
        """A phase of this run, with its time, in the run's ``run.log`` (rank 0) and as what
        the driver's progress bar shows until the next one."""
        if self.run:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S") + f",{int(time.time() * 1000) % 1000:03d}"
            self.run.append_line("run.log", f"{stamp} INFO forge_ray.train: {message}")
            self.run.update(phase=message)

    def evaluate(self) -> dict:
        return evaluate(self.engine, self.objective, self.job.val_files, self.rank, self.world,
                        self.train.micro_batch_size, self.train.eval_batches, self.caps.pin_memory)

    def train_step(self, batches) -> dict:
        """One optimizer step over ``grad_accum`` micro-batches; the step's metrics (every rank
        computes the same figures: losses and the objective's own are averaged over ranks)."""
        engine, objective, world = self.engine, self.objective, self.world
        t0 = time.perf_counter()
        wait, losses, grad_norm = 0.0, [], None
        for _ in range(self.train.grad_accum):
            t_data = time.perf_counter()
            batch = to_device(next(batches), objective.batch_keys, engine.device, self.caps.pin_memory)
            wait += time.perf_counter() - t_data
            loss = engine(**batch)
            engine.backward(loss)
            if engine.is_gradient_accumulation_boundary():
                grad_norm = clip_and_norm(engine, objective, self.optim.grad_clip, self.own_clip)
            engine.step()
            losses.append(objective.logged_loss(loss))
        self.step += 1
        _maybe_fail(self.job, self.step, self.rank)
        elapsed = time.perf_counter() - t0
        (loss_sum,) = _all_reduce([float(sum(losses)) / len(losses)])
        metrics = {"loss": loss_sum / world, "lr": self.scheduler.get_last_lr()[0],
                   "tokens_per_s": self.tokens_per_step / elapsed, "data_wait_frac": wait / elapsed}
        if grad_norm is not None:
            metrics["grad_norm"] = float(grad_norm)
        metrics["mfu"] = metrics["tokens_per_s"] * self.job.flops_per_token / (self.peak * world)
        # the objective's own figures (MoE load, DPO rewards, …) from the last micro-batch
        metrics.update(objective.step_metrics(lambda values: [v / world for v in _all_reduce(values)]))
        if not math.isfinite(metrics["loss"]):
            raise FloatingPointError(f"loss is {metrics['loss']} at step {self.step}: lower optim.lr or check the "
                                     "data (see metrics.jsonl for the steps before)")
        return metrics

    def maybe_eval(self, metrics: dict) -> None:
        """Validation every ``eval_every`` steps and at the end, into ``metrics``."""
        every = self.train.eval_every
        if self.job.val_files and every and (self.step % every == 0 or self.step == self.train.max_steps):
            t = time.perf_counter()
            metrics.update(self.evaluate())
            self.note(f"validation at step {self.step} in {time.perf_counter() - t:.1f}s")

    def maybe_checkpoint(self, metrics: dict) -> None:
        """A sealed checkpoint (with its HF directory) every ``checkpoint_every`` steps and at the
        end, reported to Ray Train; a validation without one is still reported (a sweep's
        scheduler decides on it)."""
        import ray.train

        from forge_ray.train import checkpoint as ckpt
        from forge_ray.train.export import HF_SUBDIR, write_weights

        every, last = self.train.checkpoint_every, self.step == self.train.max_steps
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))} | {"step": self.step}
        if last or (every and self.step % every == 0):
            t = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="forge-ckpt-") as d:
                write_weights(self.engine, self.objective, self.job, self.rank, Path(d) / HF_SUBDIR)  # `forge export`
                ckpt.save(self.engine, Path(d), self.rank, self.step, self.stream.state_dict(), world=self.world)
                ray.train.report(numbers, checkpoint=ray.train.Checkpoint.from_directory(d))
            self.note(f"checkpoint at step {self.step} in {time.perf_counter() - t:.1f}s")
        elif "val_loss" in metrics:
            ray.train.report(numbers)

    def log(self, metrics: dict) -> None:
        last = self.step == self.train.max_steps
        if self.writer and (self.step % self.train.log_every == 0 or last or "val_loss" in metrics):
            self.writer.log(self.step, metrics)

    def fit(self) -> None:
        from forge_ray.train.export import export_run_model

        t = time.perf_counter()
        self.setup()
        self.resume()
        self.note(f"workers set up in {time.perf_counter() - t:.1f}s (model, engine, data stream)")
        if self.step == 0 and self.job.val_files and self.train.eval_every and self.train.eval_at_start:
            t = time.perf_counter()  # the baseline later figures are read against
            start = self.evaluate()
            self.note(f"step-0 validation in {time.perf_counter() - t:.1f}s")
            if self.writer and start:
                self.writer.log(0, start)
        batches, first = iter(self.stream), self.step + 1
        while self.step < self.train.max_steps:
            t = time.perf_counter()
            metrics = self.train_step(batches)
            if self.step == first:
                self.note(f"first step in {time.perf_counter() - t:.1f}s")
            self.maybe_eval(metrics)
            self.log(metrics)
            self.maybe_checkpoint(metrics)
        if self.writer:
            self.writer.close()
        t = time.perf_counter()
        export_run_model(self.engine, self.objective, self.job, self.rank)
        self.note(f"model exported in {time.perf_counter() - t:.1f}s")


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's entry point on every worker: ``config["job"]`` is the stage's :class:`TrainJob`."""
    Trainer(config["job"]).fit()


def _maybe_fail(job: TrainJob, step: int, rank: int) -> None:
    """Fault injection for recovery tests (:mod:`forge_ray.faults`): one worker SIGKILLs itself
    once, or holds still once (while the test fails something around it)."""
    fault = job.fault.fired("train_step", step, rank) if job.fault is not None else None
    if fault is not None and fault.hold_s > 0:
        time.sleep(fault.hold_s)
    elif fault is not None:
        os.kill(os.getpid(), signal.SIGKILL)
