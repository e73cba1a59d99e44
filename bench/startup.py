"""Start-up to the first training step: ``forge run`` of a small pre-training spec on a Ray
cluster that is already running, phase by phase (connect, data preparation, worker start and
DeepSpeed, step-0 validation, first step), read from the run's own ``run.log``. Three runs
of one corpus under different names: the first prepares the data, the second reads that
preparation, the third also skips the step-0 validation; then an empty Ray Train run with the
same workers, for what Ray Train's start costs on its own.

The corpus is the demo's documents repeated to ``--mb`` megabytes; the tokenizer is trained
once before timing starts (a pre-training spec names an existing tokenizer run).

CPU:      python bench/startup.py [--mb 1] [--workers 1]
One GPU:  python bench/startup.py --gpu --workers 1
Cluster:  RAY_ADDRESS=HEAD:6379 python bench/startup.py   (storage must be shared: --storage)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml


def _stamp(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _first(path: Path, needle: str) -> float | None:
    for line in path.read_text().splitlines() if path.exists() else []:
        if needle in line:
            return _stamp(line)
    return None


def phases(storage: Path, name: str, t0: float) -> dict:
    """Seconds from the command's start to the end of each phase, from the run's own
    ``run.log`` (the stage's and the workers' phase lines, to the millisecond)."""
    run = storage / name
    manifest = json.loads((run / "manifest.json").read_text())
    data = next((p for p in manifest["parents"] if p.endswith("-data")), None)
    marks = {
        "stage started": _first(run / "run.log", f"run {name} (pretrain) started"),
        "data ready": (_first(storage / data / "run.log", "succeeded") if data == f"{name}-data"
                       else _first(run / "run.log", "starting")),
        "workers started (Ray Train)": _first(run / "run.log", "Started training worker group"),
        "workers set up (model, engine, data stream)": _first(run / "run.log", "workers set up in"),
        "step-0 validation done": _first(run / "run.log", "step-0 validation in"),
        "first step done": _first(run / "run.log", "first step in"),  # (metrics.jsonl's times are whole seconds)
    }
    out = {k: (round(v - t0, 1) if v is not None else None) for k, v in marks.items()}
    return {**out, "data": "reused " + data if data != f"{name}-data" else "prepared"}


def ray_train_floor(res: dict, storage: Path, env: dict) -> float:
    """Seconds a TorchTrainer with the same workers takes to run an empty function on this
    cluster: what starting any Ray Train worker group costs here, before forge does anything."""
    code = ("import time, ray; t = time.time(); ray.init(log_to_driver=False)\n"
            "from ray.train import RunConfig, ScalingConfig\nfrom ray.train.torch import TorchTrainer\n"
            f"res = {res!r}\n"
            "TorchTrainer(lambda c: None, scaling_config=ScalingConfig(num_workers=res['num_workers'], "
            "use_gpu=bool(res.get('gpus_per_worker')), resources_per_worker={'GPU': 1} if res.get('gpus_per_worker') "
            f"else {{'CPU': res['cpus_per_worker']}}), run_config=RunConfig(name='floor', storage_path={str(storage)!r})).fit()\n"
            "print(time.time() - t)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, default=1.0, help="corpus size")
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--workers", type=int, default=2, help="training workers (CPU: the machine's cores shared)")
    p.add_argument("--storage", default=None)
    args = p.parse_args()
    forge = str(Path(sys.executable).parent / "forge")
    ray_bin = str(Path(sys.executable).parent / "ray")
    work = Path(tempfile.mkdtemp(prefix="forge-startup-"))
    storage = Path(args.storage or work / "runs")
    corpus = work / "corpus"
    from forge_ray.demo.corpus import write_demo_data

    write_demo_data(work / "demo")
    docs = [p.read_text() for p in sorted((work / "demo" / "docs").rglob("*.md"))]
    corpus.mkdir()
    size, i = 0, 0
    while size < args.mb * 1e6:
        text = docs[i % len(docs)] + f"\n\n(copy {i // len(docs)})\n"
        (corpus / f"doc-{i:05d}.md").write_text(text)
        size, i = size + len(text.encode()), i + 1
    started_ray = False
    env = dict(os.environ)
    if not env.get("RAY_ADDRESS"):
        subprocess.run([ray_bin, "start", "--head", "--num-cpus", str(os.cpu_count()), "--include-dashboard=false"],
                       check=True, capture_output=True)
        env["RAY_ADDRESS"], started_ray = "auto", True
    try:
        tok = {"kind": "tokenizer", "name": "bench-tok", "vocab_size": 2048, "sources": [{"path": str(corpus)}]}
        (work / "tok.yaml").write_text(yaml.safe_dump(tok))
        subprocess.run([forge, "run", str(work / "tok.yaml"), "--storage", str(storage)], check=True, env=env,
                       capture_output=True)
        res = ({"num_workers": args.workers, "gpus_per_worker": 1} if args.gpu else
               {"num_workers": args.workers, "cpus_per_worker": (os.cpu_count() or 2) / args.workers})
        results = {}
        runs = (("startup-1", {}), ("startup-2", {}), ("startup-3", {"eval_at_start": False}))
        for name, extra in runs:
            spec = {"kind": "pretrain", "name": name, "tokenizer": "bench-tok", "model": {"preset": "tiny"},
                    "data": [{"path": str(corpus)}], "resources": res,
                    "train": {"max_steps": 3, "micro_batch_size": 8, "seq_len": 128, "eval_every": 3,
                              "checkpoint_every": 0, **extra}}
            (work / f"{name}.yaml").write_text(yaml.safe_dump(spec))
            t0 = time.time()
            subprocess.run([forge, "run", str(work / f"{name}.yaml"), "--storage", str(storage)], check=True, env=env,
                           capture_output=True)
            results[name] = {**phases(storage, name, t0), "command done": round(time.time() - t0, 1), **extra}
        floor = ray_train_floor(res, work / "floor", env)
        print(json.dumps({"corpus_mb": round(size / 1e6, 2), "documents": i, "phases_s": results,
                          "ray_train_empty_fit_s": floor}, indent=1))
    finally:
        if started_ray:
            subprocess.run([ray_bin, "stop", "--force"], capture_output=True)


if __name__ == "__main__":
    main()
