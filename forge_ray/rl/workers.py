"""Ray actors for the RL roles that hold a model: the policy (and critic) train with one
DeepSpeed engine per worker; the reference only scores. OpenRLHF's shape, our code.

A trainable group of ``N`` workers forms its own ``torch.distributed`` group (gloo on CPU,
NCCL on GPU) and trains data-parallel with ZeRO-0 (gradients all-reduced as in pre-training);
the controller hands each worker its shard of the batch. Every rank holds the whole model,
so the scoring passes (``token_logps``, ``values``) and the weights for the rollout engines
(:meth:`TrainableWorker.weights`) come from rank 0 alone. (ZeRO-3 would need every rank in
each of those passes: not offered until the controller shards them too.)

    group = ActorGroup(TrainableWorker, 2, num_cpus=1, job=TrainableRole(role="policy", model_dir=..., ...))
    group.run_sharded("train", shards)   # one shard per worker
    group.run_all("save_checkpoint", path)   # the same call on every worker
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import ray
import torch

from forge_ray.distributed.engine import clip_and_norm
from forge_ray.rl.objective import CriticLoss, PolicyLoss
from forge_ray.spec.sections import OptimSpec, TrainSpec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class TrainableRole:
    """What every rank of a policy or critic group is given."""

    role: Literal["policy", "critic"]
    model_dir: str
    optim: OptimSpec
    train: TrainSpec  # micro-batch and precision (ZeRO-0: see the module docstring)
    loss: PolicyLoss | CriticLoss
    threads: int = 1
    seed: int = 0


class TrainableWorker:
    """One rank of the policy or critic group."""

    def __init__(self, rank: int, world: int, job: TrainableRole):
        self.rank, self.world, self.job, self.role = rank, world, job, job.role

    def address(self) -> tuple[str, int]:
        """Where rank 0 listens for the process group (asked of rank 0 only)."""
        return ray.util.get_node_ip_address(), _free_port()

    def setup(self, master_addr: str, master_port: int) -> int:
        """Join the group's process group and build the DeepSpeed engine (all ranks at once)."""
        import torch.distributed as dist

        from forge_ray.distributed.engine import build_engine
        from forge_ray.train import capabilities

        job = self.job
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world), LOCAL_RANK="0")
        torch.manual_seed(job.seed)
        torch.set_num_threads(max(1, job.threads))
        # this worker's device decides, as in the trainer
        self.caps = capabilities.detect(job.train.precision, experts=job.train.experts)
        if not dist.is_initialized():
            dist.init_process_group(self.caps.backend, rank=self.rank, world_size=self.world)
        self.objective = _build_objective(job)
        capabilities.set_experts(self.objective.model, self.caps.experts)
        built = build_engine(self.objective, job.optim, job.train, self.world, self.caps)  # the trainer's factory
        self.engine, self.own_clip = built.engine, built.own_clip
        return self.rank

    def token_logps(self, sequences: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The current policy's log-probs of the given tokens (``[B, L-1]``), no grad."""
        from forge_ray.rl.experience import token_logps

        with torch.no_grad():
            return token_logps(self.objective.model, *self._on_device(sequences, attention_mask)).cpu()

    def values(self, sequences: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.objective.values(*self._on_device(sequences, attention_mask)).cpu()

    def _on_device(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        return [t.to(self.engine.device) for t in tensors]

    def train(self, shard: dict[str, torch.Tensor], epochs: int, micro_batch: int) -> dict[str, float]:
        """``epochs`` passes over this rank's shard in micro-batches; mean statistics."""
        totals: dict[str, float] = {}
        count = 0
        n = next(iter(shard.values())).shape[0]
        self.engine.train()
        for _ in range(epochs):
            for start in range(0, n, micro_batch):
                batch = {k: shard[k][start:start + micro_batch].to(self.engine.device) for k in self.objective.batch_keys}
                loss = self.engine(**batch)
                self.engine.backward(loss)
                if self.own_clip and self.engine.is_gradient_accumulation_boundary():
                    clip_and_norm(self.engine, self.objective, self.job.optim.grad_clip, own_clip=True)
                self.engine.step()
                for k, v in self.objective.stats.items():
                    totals[k] = totals.get(k, 0.0) + float(v)
                count += 1
        return {k: v / max(count, 1) for k, v in totals.items()}

    def weights(self) -> bytes | None:
        """A safetensors blob of the full weights on rank 0 (None on the other ranks)."""
        from forge_ray.rl.rollout import weights_blob

        state = self._full_state()
        if self.rank != 0:
            return None
        return weights_blob(state)

    def _full_state(self) -> dict | None:
        """HF-named full weights on rank 0, None elsewhere."""
        from forge_ray.train.export import gather_state, hf_state_dict

        state = gather_state(self.engine, self.objective, False, self.rank)  # ZeRO-0: rank 0 holds them all
        return None if state is None else hf_state_dict(state, None)

    def weights_digest(self) -> str | None:
        """SHA-256 of the full weights (rank 0): proves a restored policy is the saved one."""
        import hashlib

        state = self._full_state()
        if state is None:
            return None
        h = hashlib.sha256()
        for name in sorted(state):
            h.update(name.encode())
            h.update(state[name].float().contiguous().numpy().tobytes())
        return h.hexdigest()

    # NCCL weight sync (GPU): rank 0 broadcasts

    def open_weight_group(self, host: str, port: int, world_size: int) -> None:
        if self.rank == 0:
            from forge_ray.rl.rollout.nccl_sync import join_group

            self.weight_group = join_group(host, port, 0, world_size, torch.cuda.current_device())

    def weight_metas(self) -> list[tuple[str, str, list[int]]]:
        """(HF name, dtype, full shape) of every parameter, in broadcast order."""
        return [(name, str(p.dtype).removeprefix("torch."), list(p.shape))
                for name, p in self.objective.model.named_parameters()]

    def broadcast_weights(self) -> int:
        """Rank 0 sends every parameter in the buckets the engines expect."""
        from forge_ray.rl.rollout.nccl_sync import pack, plan_buckets

        if self.rank != 0:
            return 0
        params = [p for _, p in self.objective.model.named_parameters()]
        count = 0
        for bucket in plan_buckets(self.weight_metas()):
            part = [params[i] for i in bucket]
            self.weight_group.broadcast(pack([p.data for p in part]), src=0, stream=torch.cuda.current_stream())
            count += len(part)
        torch.cuda.synchronize()
        return count

    def save_hf(self, out_dir: str, tokenizer_dir: str) -> None:
        from forge_ray.train.export import write_hf_dir

        state = self._full_state()
        if self.rank == 0:
            model = self.objective.model
            write_hf_dir(state, model.config, tokenizer_dir, Path(out_dir), type(model))

    def save_checkpoint(self, directory: str) -> None:
        self.engine.save_checkpoint(directory, tag="engine")

    def load_checkpoint(self, directory: str) -> None:
        """``directory`` is this role's part of a sealed RL checkpoint: loaded from a private,
        verified copy of the whole checkpoint (see :func:`forge_ray.train.checkpoint.verified_copy`)."""
        from forge_ray.train.checkpoint import verified_copy

        part = Path(directory)
        with verified_copy(part.parent) as copy:
            self.engine.load_checkpoint(str(copy / part.name), tag="engine", load_optimizer_states=True,
                                        load_lr_scheduler_states=True)


def _build_objective(job: TrainableRole):
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

    from forge_ray.rl.objective import CriticObjective, PolicyObjective

    load = dict(use_safetensors=True, trust_remote_code=False, dtype=torch.float32)
    if job.role == "policy":
        return PolicyObjective(AutoModelForCausalLM.from_pretrained(job.model_dir, **load), job.loss)
    if job.role == "critic":  # the policy's backbone with a fresh one-label value head per token
        model = AutoModelForTokenClassification.from_pretrained(job.model_dir, num_labels=1, **load)
        return CriticObjective(model, **asdict(job.loss))
    raise ValueError(f"unknown trainable role {job.role!r}")


class ReferenceWorker:
    """The frozen reference policy: scores tokens, never trains."""

    def __init__(self, model_dir: str, threads: int = 1):
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(max(1, threads))
        self.device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=False,
                                                          dtype=torch.float32).to(self.device).eval()

    def token_logps(self, sequences: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from forge_ray.rl.experience import token_logps

        with torch.no_grad():
            return token_logps(self.model, sequences.to(self.device), attention_mask.to(self.device)).cpu()


class Bundles:
    """A placement group of ``size`` equal bundles that several roles may share: an actor
    placed with :meth:`options` on bundle ``i`` asks for ``share`` of that bundle, so
    colocated roles (``share=1/k``) fit together on what one role would take alone."""

    def __init__(self, size: int, num_cpus: float, num_gpus: float = 0):
        from ray.util.placement_group import placement_group

        self.size, self.num_cpus, self.num_gpus = size, num_cpus, num_gpus
        bundle = {"CPU": num_cpus, **({"GPU": num_gpus} if num_gpus else {})}
        self.pg = placement_group([bundle] * size, strategy="PACK")
        ray.get(self.pg.ready(), timeout=600)

    def options(self, index: int, share: float = 1.0, capture_children: bool = False) -> dict:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        strategy = PlacementGroupSchedulingStrategy(placement_group=self.pg, placement_group_bundle_index=index,
                                                    placement_group_capture_child_tasks=capture_children)
        return dict(num_cpus=self.num_cpus * share, num_gpus=self.num_gpus * share, scheduling_strategy=strategy)

    def remove(self) -> None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(self.pg)


class ActorGroup:
    """``size`` Ray actors of one role, rank ``i`` on bundle ``i`` of its own placement group
    or of a shared one (``bundles``, taking ``share`` of each bundle)."""

    def __init__(self, cls, size: int, num_cpus: float = 1, num_gpus: float = 0, init: dict[str, Any] | None = None,
                 bundles: Bundles | None = None, share: float = 1.0, job: TrainableRole | None = None):
        self.owns_bundles = bundles is None
        self.bundles = bundles or Bundles(size, num_cpus, num_gpus)
        remote = ray.remote(cls)
        self.actors = []
        for rank in range(size):
            args = (rank, size, job) if cls is TrainableWorker else ()
            self.actors.append(remote.options(**self.bundles.options(rank, share)).remote(*args, **(init or {})))
        if cls is TrainableWorker:  # one process group per trainable group, rooted at rank 0's node
            addr, port = ray.get(self.actors[0].address.remote())
            ray.get([a.setup.remote(addr, port) for a in self.actors])

    def run_all(self, method: str, *args, **kwargs) -> list:
        """Call ``method`` on every actor with the same arguments (a save, a collective);
        each actor's result, by rank."""
        return ray.get([getattr(a, method).remote(*args, **kwargs) for a in self.actors])

    def run_sharded(self, method: str, shards: list, **kwargs) -> list:
        """Call ``method`` on actor ``i`` with ``shards[i]`` (its part of a batch) and the same
        keyword arguments; each actor's result, by rank."""
        if len(shards) != len(self.actors):
            raise ValueError(f"{len(shards)} shards for {len(self.actors)} actors of {method!r}")
        return ray.get([getattr(a, method).remote(shard, **kwargs) for a, shard in zip(self.actors, shards)])

    def kill(self) -> None:
        for a in self.actors:
            ray.kill(a)
        if self.owns_bundles:
            self.bundles.remove()
