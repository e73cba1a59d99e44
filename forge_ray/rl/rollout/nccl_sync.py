"""GPU weight sync: one NCCL group between the policy's rank 0 and every rollout engine's
workers; rank 0 broadcasts each parameter (gathered one at a time under ZeRO-3, so no rank
ever holds a second full copy) and each vLLM worker loads it in place with the model's own
``load_weights`` (which maps HF names onto fused QKV/gate-up parameters and tensor-parallel
shards). OpenRLHF's shape, on vLLM's stateless process group so the group lives beside the
trainer's and the engines' own ``torch.distributed`` worlds.

Ranks: policy rank 0 is 0; engine ``i`` with tensor parallelism ``tp`` owns ranks
``1 + i*tp … (i+1)*tp``. Used when ``weight_sync`` resolves to ``nccl`` (GPU policy and GPU
engines that do not share devices); CPU runs sync through safetensors blobs instead.
"""

from __future__ import annotations


def join_group(host: str, port: int, rank: int, world_size: int, device):
    """This process's communicator in the policy→engines group (rank 0 hosts the store)."""
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup

    group = StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world_size)
    return PyNcclCommunicator(group, device=device)


def engine_ranks(num_engines: int, tensor_parallel: int) -> tuple[list[int], int]:
    """First rank of each engine in the group, and the group's size."""
    return [1 + i * tensor_parallel for i in range(num_engines)], 1 + num_engines * tensor_parallel


def receive_into(comm, metas: list[tuple[str, str, list[int]]], device, load) -> int:
    """Receive each broadcast parameter and hand it to ``load([(name, tensor)])``."""
    import torch

    for name, dtype, shape in metas:
        tensor = torch.empty(shape, dtype=getattr(torch, dtype), device=device)
        comm.broadcast(tensor, src=0, stream=torch.cuda.current_stream())
        load([(name, tensor)])
    torch.cuda.synchronize()
    return len(metas)
