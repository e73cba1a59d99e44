"""GPU weight sync: one NCCL group between the policy's rank 0 and every rollout engine's
workers; rank 0 broadcasts each parameter (gathered one at a time under ZeRO-3, so no rank
ever holds a second full copy) and each vLLM worker loads it in place with the model's own
``load_weights`` (which maps HF names onto fused QKV/gate-up parameters and tensor-parallel
shards). OpenRLHF's shape, on vLLM's stateless process group so the group lives beside the
trainer's and the engines' own ``torch.distributed`` worlds.

Parameters travel in buckets (consecutive parameters of one dtype, up to ``BUCKET_BYTES``
each, packed into one flat tensor): a 1B model is ~150 tensors, and one NCCL call per tensor
spends more time in launch latency than in the copy. Both sides plan the buckets from the
same ``(name, dtype, shape)`` list, so no layout travels with them.

Ranks: policy rank 0 is 0; engine ``i`` with tensor parallelism ``tp`` owns ranks
``1 + i*tp … (i+1)*tp``. Used when ``weight_sync`` resolves to ``nccl`` (GPU policy and GPU
engines that do not share devices); CPU runs sync through safetensors blobs instead.
"""

from __future__ import annotations

import math


def join_group(host: str, port: int, rank: int, world_size: int, device):
    """This process's communicator in the policy→engines group (rank 0 hosts the store)."""
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup

    group = StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world_size)
    return PyNcclCommunicator(group, device=device)


def engine_ranks(num_engines: int, tensor_parallel: int) -> tuple[list[int], int]:
    """First rank of each engine in the group, and the group's size."""
    return [1 + i * tensor_parallel for i in range(num_engines)], 1 + num_engines * tensor_parallel


BUCKET_BYTES = 256 << 20

def plan_buckets(metas: list[tuple[str, str, list[int]]], bucket_bytes: int = BUCKET_BYTES) -> list[list[int]]:
    """Indices of ``metas`` grouped into buckets: consecutive, one dtype per bucket, at most
    ``bucket_bytes`` each (a larger parameter travels alone)."""
    import torch

    buckets: list[list[int]] = []
    size, dtype = 0, None
    for i, (_, dt, shape) in enumerate(metas):
        nbytes = getattr(torch, dt).itemsize * math.prod(shape)
        if not buckets or dt != dtype or size + nbytes > bucket_bytes:
            buckets.append([])
            size, dtype = 0, dt
        buckets[-1].append(i)
        size += nbytes
    return buckets


def pack(tensors: list):
    """One flat tensor of the bucket's parameters, in order."""
    import torch

    return torch.cat([t.reshape(-1) for t in tensors])


def unpack(flat, metas: list[tuple[str, str, list[int]]]) -> list[tuple[str, object]]:
    """``(name, view)`` of each parameter in a received bucket."""
    out, offset = [], 0
    for name, _, shape in metas:
        n = math.prod(shape)
        out.append((name, flat[offset:offset + n].view(shape)))
        offset += n
    return out


def receive_into(comm, metas: list[tuple[str, str, list[int]]], device, load) -> int:
    """Receive each broadcast bucket and hand its parameters to ``load([(name, tensor), …])``."""
    import torch

    for bucket in plan_buckets(metas):
        part = [metas[i] for i in bucket]
        flat = torch.empty(sum(math.prod(m[2]) for m in part), dtype=getattr(torch, part[0][1]), device=device)
        comm.broadcast(flat, src=0, stream=torch.cuda.current_stream())
        load(unpack(flat, part))
    torch.cuda.synchronize()
    return len(metas)
