"""Build DeepSpeed's JIT C++ ops once, at set-up time, instead of inside the first training run.

On a fresh machine the first ``deepspeed.initialize`` compiles the shared-memory CPU
collectives (and, with optimizer offload, CPU Adam) with ninja: minutes on 2 cores. The
build is cached per venv under ``~/.cache/torch_extensions``; ``make setup`` runs this.

    python -m forge_ray.distributed.warmup
"""

from __future__ import annotations

import time


def main() -> None:
    import torch

    start = time.perf_counter()
    if torch.cuda.is_available():
        print("CUDA present: DeepSpeed ops build on first use with the CUDA toolchain; nothing to warm here")
        return
    from deepspeed.ops.op_builder.cpu import CPUAdamBuilder, ShareMemCommBuilder

    for builder in (ShareMemCommBuilder(), CPUAdamBuilder()):
        builder.load(verbose=False)
        print(f"built {builder.NAME}")
    print(f"DeepSpeed CPU ops ready in {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
