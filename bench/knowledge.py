"""Knowledge infusion vs retrieval, measured: the demo's own recipe (the stages of
``jobs/configs/demo.yaml`` from the tokenizer to both SFT runs, unchanged) per seed, then one
evaluation of both SFT models closed-book and with retrieval on the held-out questions.

Writes ``bench/results/knowledge.json`` (every score with its 95% interval, per seed and per
setting) and ``bench/results/knowledge.png`` (held-out accuracy against pre-training steps), and
prints the README table.

CPU:      python bench/knowledge.py --seeds 0 1 2 --steps 1000 3000 [--copies 4 8]
One GPU:  python bench/knowledge.py --seeds 0 1 2 --steps 3000 10000   (the stages pick the GPU up)
Cluster:  RAY_ADDRESS=HEAD:6379 python bench/knowledge.py --seeds 0 1 2 --steps 3000 10000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
KNOWLEDGE_STAGES = ("demo-tokenizer", "demo-augmented", "demo-corpus", "demo-pretrain", "demo-sft-data", "demo-sft",
                    "demo-corpus-plain", "demo-pretrain-plain", "demo-sft-plain")


def pipeline(demo_yaml: Path, seed: int = 0) -> dict:
    """The demo's knowledge stages and its eval's retrieval and held-out tasks, as one pipeline;
    ``seed`` seeds every stage (initialisation, shuffles, augmentation) as well as the corpus."""
    demo = yaml.safe_load(demo_yaml.read_text())
    stages = [{**s, "seed": seed} for s in demo["stages"] if s["name"] in KNOWLEDGE_STAGES]
    demo_eval = next(s for s in demo["stages"] if s["name"] == "demo-eval")
    tasks = [t for t in demo_eval["tasks"] if t["name"] in ("held-out-facts", "held-out-two-hop")]
    stages.append({"kind": "eval", "name": "knowledge-eval", "models": ["demo-sft-plain", "demo-sft"], "mode": "both",
                   "retrieval": demo_eval["retrieval"], "tasks": tasks, "judges": ["reference"]})
    return {"kind": "pipeline", "name": "knowledge", "stages": stages}


def run_one(seed: int, steps: int, work: Path, copies: int = 8) -> dict:
    data, storage = work / f"data-{seed}", work / f"runs-{seed}-{steps}-{copies}"
    forge = str(Path(sys.executable).parent / "forge")
    subprocess.run([forge, "demo-data", str(data), "--seed", str(seed)], check=True, capture_output=True)
    spec = work / "knowledge.yaml"
    spec.write_text(yaml.safe_dump(pipeline(REPO / "jobs/configs/demo.yaml", seed), sort_keys=False))
    env = {**os.environ, "FORGE_DEMO_DATA": str(data), "FORGE_DEMO_PRETRAIN_STEPS": str(steps),
           "FORGE_DEMO_AUGMENT_COPIES": str(copies)}
    subprocess.run([forge, "run", str(spec), "--storage", str(storage)], check=True, env=env)
    results = json.loads((storage / "knowledge-eval" / "report" / "results.json").read_text())
    return {"seed": seed, "steps": steps, "copies": copies, "tasks": results["tasks"],
            "retrieval": results.get("retrieval", {})}


def table(rows: list[dict]) -> str:
    lines = ["| seed | steps | copies | task | plain | plain + rag | augmented | augmented + rag | recall@k |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for task, by_model in r["tasks"].items():
            def cell(m: str, by_model: dict = by_model) -> str:
                return f"{by_model[m]['score']:.2f} [{by_model[m]['ci'][0]:.2f}, {by_model[m]['ci'][1]:.2f}]"

            recall = r["retrieval"].get(task, {}).get("recall_at_k")
            lines.append(f"| {r['seed']} | {r['steps']} | {r['copies']} | {task} (n={by_model['demo-sft']['n']}) | {cell('demo-sft-plain')} | "
                         f"{cell('demo-sft-plain + rag')} | {cell('demo-sft')} | {cell('demo-sft + rag')} | "
                         f"{'—' if recall is None else f'{recall:.2f}'} |")
    return "\n".join(lines)


def plot(rows: list[dict], out: Path, steps: int = 1000, copies: int = 8) -> None:
    """Left: each seed's scores with intervals at the demo's setting (``steps``, ``copies``).
    Right, where measured: held-out accuracy against copies and against pre-training steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [(axis, fixed) for axis, fixed in (("copies", ("steps", steps)), ("steps", ("copies", copies)))
              if len({r[axis] for r in rows if r[fixed[0]] == fixed[1]}) > 1]
    fig, axes = plt.subplots(1, 1 + len(curves), figsize=(6 + 4 * len(curves), 3.8), squeeze=False)
    ax = axes[0][0]
    demo_rows = {r["seed"]: r for r in rows if r["steps"] == steps and r["copies"] == copies}
    seeds = sorted(demo_rows)
    for j, model in enumerate(("demo-sft-plain", "demo-sft-plain + rag", "demo-sft", "demo-sft + rag")):
        cells = [demo_rows[s]["tasks"]["held-out-facts"][model] for s in seeds]
        ax.errorbar([s + 0.12 * (j - 1.5) for s in seeds], [c["score"] for c in cells], capsize=3, fmt="o",
                    yerr=[[c["score"] - c["ci"][0] for c in cells], [c["ci"][1] - c["score"] for c in cells]],
                    label=model)
    ax.set_xticks(seeds)
    ax.set_xlabel(f"seed (corpus and stages); {steps} steps, {copies} copies")
    for ax, (axis, (name, value)) in zip(axes[0][1:], curves):
        for seed in sorted({r["seed"] for r in rows}):
            pts = sorted((r[axis], r["tasks"]["held-out-facts"]["demo-sft"]) for r in rows
                         if r["seed"] == seed and r[name] == value)
            if len(pts) > 1:
                xs, cells = zip(*pts)
                ax.errorbar(xs, [c["score"] for c in cells], capsize=3, fmt="o-", label=f"demo-sft (seed {seed})",
                            yerr=[[c["score"] - c["ci"][0] for c in cells], [c["ci"][1] - c["score"] for c in cells]])
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r[axis] for r in rows if r[name] == value}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel(("permuted copies and record phrasings" if axis == "copies" else "pre-training steps")
                      + f" ({name} {value})")
    for ax in axes[0]:
        ax.set_ylabel("held-out fact accuracy (190 questions)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, nargs="+", default=[1000], help="pre-training steps (make demo: 1000)")
    ap.add_argument("--copies", type=int, nargs="+", default=[8], help="permuted copies and record phrasings")
    ap.add_argument("--work", default=None, help="keep the runs here (default: a temporary directory)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="forge-knowledge-"))
    work.mkdir(parents=True, exist_ok=True)
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    rows = _load(out / "knowledge.json")
    for seed in args.seeds:
        for steps in args.steps:
            for copies in args.copies:
                row = run_one(seed, steps, work, copies)
                rows = [r for r in rows if _key(r) != _key(row)] + [row]
                rows.sort(key=_key)
                (out / "knowledge.json").write_text(json.dumps(rows, indent=2) + "\n")  # after every run: a stop loses one
                plot(rows, out / "knowledge.png")
    print(table(rows))


def _key(row: dict) -> tuple[int, int, int]:
    return row["seed"], row["steps"], row["copies"]


def _load(path: Path) -> list[dict]:
    """Earlier results: a setting measured again replaces its row, other settings stay."""
    return json.loads(path.read_text()) if path.exists() else []


if __name__ == "__main__":
    main()
