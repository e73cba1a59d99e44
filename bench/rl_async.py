"""RL steps per second, synchronous vs asynchronous rollouts (``async.max_staleness: 1``), on
the same spec in one run: the same policy, prompts, seed and number of steps (so the same
number of samples), each run's held-out reward at the end beside its speed. Reported in the
README as a ratio.

What the ratio means depends on where generation and training run. Asynchronous rollouts
overlap the engines' generation of the next batch with the policy's update on this one: on
separate devices a step costs about max(generate, train) instead of generate + train. On a
2-CPU machine both share the same two cores, so the overlap mostly trades one for the other
and the ratio stays near 1; `generate_frac` (logged per step) says how much there was to
hide.

It needs an SFT policy and the demo's prompts: run ``make demo`` (or its stages up to
demo-sft) first.

CPU:      python bench/rl_async.py --runs ./forge_runs --data ./forge_runs/demo-data [--steps 10]
One GPU:  python bench/rl_async.py --runs RUNS --data DATA --gpus 1
Cluster:  RAY_ADDRESS=HEAD:6379 python bench/rl_async.py --runs SHARED_RUNS --data DATA --gpus 1 --engines 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def spec(name: str, data: Path, steps: int, staleness: int, gpus: int, engines: int) -> dict:
    """The demo's GRPO settings (jobs/configs/demo.yaml), held-out reward measured at the end only."""
    return {"kind": "rl", "name": name, "policy": "demo-sft", "algo": "grpo", "seed": 0,
            "prompts": [{"path": str(data / "rl_prompts.jsonl"), "format": "prompt_answer"}],
            "eval_fraction": 0.5, "reward_funcs": ["contains_answer"],
            "rollout": {"backend": "auto", "n_samples": 8, "temperature": 1.0, "max_new_tokens": 24,
                        "num_engines": engines, "cpus_per_engine": 0.5 if not gpus else 1,
                        "gpus_per_engine": 1 if gpus else 0},
            "optim": {"lr": 1e-4, "warmup_steps": 0}, "kl_coef": 0.01, "prompts_per_step": 16,
            "micro_batch_size": 16, "max_steps": steps, "eval_every": 0, "checkpoint_every": 0,
            "resources": {"num_workers": 1, "cpus_per_worker": 1, "gpus_per_worker": gpus},
            "reference_cpus": 0.25, "async": {"max_staleness": staleness}}


def measure(runs: Path, name: str) -> dict:
    rows = [json.loads(line) for line in (runs / name / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "step_s" in r]
    timed = steps[1:]  # the first step of an asynchronous run has nothing in flight yet
    final = rows[-1]
    return {"steps_per_s": 1 / statistics.mean(r["step_s"] for r in timed),
            "generate_frac": statistics.mean(r["generate_frac"] for r in timed),
            "staleness_mean": statistics.mean(r["staleness_mean"] for r in timed),
            "logprob_mismatch": statistics.mean(r["logprob_mismatch"] for r in timed),
            "eval_reward_sampled": final.get("eval_reward_sampled"), "eval_reward": final.get("eval_reward"),
            "samples": sum(16 * 8 for _ in steps)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", required=True, help="storage root that holds demo-sft")
    p.add_argument("--data", required=True, help="the demo data directory (rl_prompts.jsonl)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--gpus", type=int, default=0, help="GPUs for the policy and for each engine")
    p.add_argument("--engines", type=int, default=1)
    p.add_argument("--verbose", action="store_true", help="vendor logs (vLLM, Ray) on the terminal too")
    args = p.parse_args()
    import os

    from forge_ray import api, console

    if args.verbose:
        os.environ[console.VERBOSE_ENV] = "1"
    console.setup_terminal()  # as `forge run`: vLLM's and Ray's logs into each run's run.log

    runs, data = Path(args.runs), Path(args.data)
    results = {}
    for label, staleness in (("sync", 0), ("async1", 1)):
        name = f"bench-rl-{label}-{int(time.time())}"  # a new run each time (a finished name would be skipped)
        api.run(spec(name, data, args.steps, staleness, args.gpus, args.engines), storage=str(runs),
                show_progress=False)
        results[label] = measure(runs, name)
    ratio = results["async1"]["steps_per_s"] / results["sync"]["steps_per_s"]
    for label, r in results.items():
        print(f"{label:7s} {r['steps_per_s']:.3f} steps/s  generate_frac {r['generate_frac']:.2f}  staleness "
              f"{r['staleness_mean']:.2f}  logprob_mismatch {r['logprob_mismatch']:.4f}  held-out reward sampled "
              f"{r['eval_reward_sampled']:.3f} greedy {r['eval_reward']:.3f} after {r['samples']} samples")
    print(f"async (max_staleness 1) / sync steps per second: {ratio:.2f}x")
    out = Path(__file__).parent / "results" / "rl_async.json"
    out.write_text(json.dumps({"ratio": ratio, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
