"""Bridge to EleutherAI's lm-evaluation-harness: run its tasks on one of our (or any HF)
model directories, offline — task YAMLs and data files from local directories
(``harness_include``), never a download — and return per-item rows in our own format, so
harness tasks sit in the same report, intervals and pairwise judgments as ours.

    forge eval spec.yaml   # with harness_tasks: [demo_facts_mc], harness_include: [demo-data/harness]
"""

from __future__ import annotations

import os
from pathlib import Path


def run_harness(model_dir: str, tasks: list[str], include: list[str], num_fewshot: int | None = None,
                limit: int | None = None, batch_size: int = 16) -> dict[str, list[dict]]:
    """``{"lm-eval/<task>": rows}`` with ``score`` the task's first per-item metric."""
    os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise ImportError("harness_tasks need EleutherAI lm-eval: pip install 'forge-ray[harness]'") from exc
    for path in include:
        if not Path(path).is_dir():
            raise FileNotFoundError(f"harness_include: {path} is not a directory of lm-eval task YAMLs")
    manager = TaskManager(include_path=list(include) or None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise KeyError(f"lm-eval does not know task(s) {unknown}: add their YAML directory to harness_include")
    res = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": model_dir, "dtype": "float32", "trust_remote_code": False},
        tasks=list(tasks), task_manager=manager, num_fewshot=num_fewshot, limit=limit, batch_size=batch_size,
        log_samples=True, device="cuda" if _cuda() else "cpu")
    out = {}
    for task, samples in res["samples"].items():
        metric = next(k.split(",")[0] for k in res["results"][task] if "," in k and "_stderr" not in k)
        out[f"lm-eval/{task}"] = [_row(s, metric) for s in sorted(samples, key=lambda s: s["doc_id"])]
    return out


def _row(sample: dict, metric: str) -> dict:
    resps = sample.get("filtered_resps") or []
    if resps and isinstance(resps[0], (tuple, list)):  # log-likelihood per choice: the model's pick
        picks = [float(r[0]) for r in resps]
        output = f"choice {max(range(len(picks)), key=picks.__getitem__)}"
    else:
        output = str(resps[0]) if resps else ""
    doc = sample.get("doc") or {}
    args = sample.get("arguments") or []
    prompt = doc.get("prompt") or doc.get("question") or (str(args[0][0]) if args and args[0] else "")
    return {"line": int(sample["doc_id"]) + 1, "prompt": prompt, "answer": sample.get("target"), "output": output,
            "score": float(sample[metric])}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
