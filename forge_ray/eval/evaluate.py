"""One model's whole evaluation, run as a Ray task (models in parallel on a cluster):
every task suite, and bits-per-byte of the held-out text. Generation goes through a vLLM
engine in the task's own process when vLLM is installed (``backend: auto``), else batched
HF ``generate``; likelihoods (multiple choice, bits-per-byte) always come from the HF model.
"""

from __future__ import annotations

import time


def pick_backend(choice: str, random_init: bool) -> str:
    """``vllm`` needs weights on disk: an untrained (``random:``) model generates with HF."""
    from forge_ray.rl.placement import pick_backend as installed_backend

    if choice == "hf" or random_init:
        return "hf"
    if choice == "vllm":
        import vllm  # noqa: F401 - chosen explicitly: a missing install is an error, not a fallback
    return installed_backend(choice)


def evaluate_model(model_dir: str, random_init_seed: int | None, tasks: list[dict], texts: list[str],
                   backend: str = "auto", batch_size: int = 16, threads: int = 1, harness: dict | None = None,
                   prepared: dict | None = None) -> dict:
    """``{"tasks": {name: per-row results}, "perplexity": {...} | None, "backend": ...}``.
    ``prepared``: ``{task: [shots, rows]}`` given instead of the task files (the retrieval
    baseline's prompts, passages in front); only those tasks are then evaluated."""
    from forge_ray.eval.model import EvalModel
    from forge_ray.eval.tasks import load_rows, run_task
    from forge_ray.spec.stages import TaskSpec

    t0 = time.perf_counter()
    from forge_ray.vlm.answer import is_vlm

    if is_vlm(model_dir):
        return _evaluate_vlm(model_dir, random_init_seed, tasks, threads, t0)
    model = EvalModel(model_dir, random_init_seed=random_init_seed, batch_size=batch_size, threads=threads)
    used = pick_backend(backend, random_init_seed is not None)
    generate = None
    if used == "vllm":
        from forge_ray.rl.rollout.vllm_engine import VLLMRollout

        engine = VLLMRollout(model_dir, max_model_len=int(min(2048, model.model.config.max_position_embeddings)))

        def generate(prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
            return [o[0] for o in engine.generate(prompts, max_tokens=max_new_tokens, stop_token_ids=model.end_ids)]
    out: dict = {"tasks": {}, "perplexity": None, "backend": used}
    try:
        for task_dict in tasks:
            task = TaskSpec(**task_dict)
            if prepared is not None and task.name not in prepared:
                continue
            if prepared is not None:
                shots, rows = [tuple(s) for s in prepared[task.name][0]], prepared[task.name][1]
            else:
                shots, rows = load_rows(task)
            out["tasks"][task.name] = run_task(model, task, shots, rows, generate=generate)
    finally:
        if used == "vllm":
            engine.close()
    if texts:
        out["perplexity"] = model.bits_per_byte(texts)
    if harness and harness["tasks"]:
        out["tasks"].update(_harness(model, model_dir, random_init_seed, harness, batch_size))
    out["seconds"] = time.perf_counter() - t0
    return out


def _evaluate_vlm(model_dir: str, random_init_seed: int | None, tasks: list[dict], threads: int, t0: float) -> dict:
    """A vision-language model: every task answered by greedy generation (with the rows'
    images where they have them); no bits-per-byte or harness tasks (text-only measures)."""
    from forge_ray.eval.tasks import load_rows, run_image_task
    from forge_ray.spec.stages import TaskSpec
    from forge_ray.vlm.answer import VLMAnswerer

    answerer = VLMAnswerer(model_dir, random_init_seed=random_init_seed, threads=threads)
    out: dict = {"tasks": {}, "perplexity": None, "backend": "hf"}
    for task_dict in tasks:
        task = TaskSpec(**task_dict)
        out["tasks"][task.name] = run_image_task(answerer, task, load_rows(task)[1])
    out["seconds"] = time.perf_counter() - t0
    return out


def _harness(model, model_dir: str, random_init_seed: int | None, harness: dict, batch_size: int) -> dict:
    """lm-eval on the model's directory (an untrained model is written to a temporary one)."""
    import tempfile

    from forge_ray.eval.harness import run_harness

    args = dict(tasks=harness["tasks"], include=harness["include"], num_fewshot=harness["fewshot"],
                limit=harness["limit"], batch_size=batch_size)
    if random_init_seed is None:
        return run_harness(model_dir, **args)
    with tempfile.TemporaryDirectory() as tmp:
        model.model.save_pretrained(tmp, safe_serialization=True)
        model.tok.save_pretrained(tmp)
        return run_harness(tmp, **args)
