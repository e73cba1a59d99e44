"""Training metrics: ``metrics.jsonl`` + TensorBoard events in the run dir, and the peak FLOP/s
that MFU is measured against (measured once per machine, cached; or configured with
``FORGE_PEAK_FLOPS``)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch


def measured_peak_flops(dtype: torch.dtype, device: str = "cpu", size: int = 1024) -> float:
    """Dense matmul FLOP/s on this device and thread count, cached in ~/.cache/forge-ray."""
    if os.environ.get("FORGE_PEAK_FLOPS"):
        return float(os.environ["FORGE_PEAK_FLOPS"])
    key = f"{device}:{torch.cuda.get_device_name() if device.startswith('cuda') else 'cpu'}:{dtype}:" \
          f"{torch.get_num_threads()}:{size}"
    cache = Path.home() / ".cache" / "forge-ray" / "peak_flops.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    if key in known:
        return known[key]
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    reps, best = 10, float("inf")
    for _ in range(3):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    peak = 2 * size**3 * reps / best
    cache.parent.mkdir(parents=True, exist_ok=True)
    known[key] = peak
    cache.write_text(json.dumps(known, indent=1))
    return peak


class MetricsWriter:
    """Rank 0 only: one JSON line per logged step, mirrored to TensorBoard scalars."""

    def __init__(self, run, tb_dir: Path | None):
        self.run = run
        self.tb = None
        if tb_dir is not None:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(tb_dir), flush_secs=10)

    def log(self, step: int, metrics: dict) -> None:
        self.run.log_metrics(step, **metrics)
        if self.tb is None:
            return
        for name, value in metrics.items():
            if isinstance(value, (int, float)):
                self.tb.add_scalar(name, value, step)
            elif name == "expert_load":
                for layer, shares in enumerate(value):
                    for expert, share in enumerate(shares):
                        self.tb.add_scalar(f"expert_load/layer{layer}/expert{expert}", share, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
