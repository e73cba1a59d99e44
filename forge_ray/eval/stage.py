"""The ``eval`` stage (driver side): resolve the models, evaluate each one as a Ray task
(all in parallel as resources allow), judge them pairwise, and write ``report/``.

    forge run jobs/configs/tiny/eval.yaml                     # or: forge eval SPEC
    forge compare demo-pretrain demo-sft --task facts=forge_runs/demo-data/eval.jsonl
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path

from forge_ray.runner import Context, InputError, StageResult, input_dir
from forge_ray.runs import RunDir
from forge_ray.spec.stages import EvalStage

log = logging.getLogger("forge_ray.eval")


def heldout_texts(ctx: Context, spec: EvalStage) -> list[str]:
    """The text scored for bits-per-byte: ``perplexity`` sources, and the held-out (val)
    documents of ``perplexity_dataset`` — the data run's own split, recomputed from its spec."""
    from forge_ray.data.sources import iter_texts

    texts = [r["text"] for r in iter_texts(spec.perplexity)] if spec.perplexity else []
    if spec.perplexity_dataset:
        import pyarrow.parquet as pq
        import yaml

        from forge_ray.data.clean import is_heldout

        data_run = ctx.storage.run(spec.perplexity_dataset)
        data_spec = yaml.safe_load(data_run.read_text("spec.yaml"))
        fraction, seed = float(data_spec.get("val_fraction", 0.0)), int(data_spec.get("seed", 0))
        if fraction <= 0:
            raise InputError(f"perplexity_dataset {spec.perplexity_dataset!r} has no held-out split (val_fraction 0)")
        with data_run.fetch_dir("docs") as docs:
            for path in sorted(Path(docs).glob("*.parquet")):
                rows = pq.read_table(path, columns=["text", "payload"]).to_pylist()
                texts += [r["text"] for r in rows if is_heldout(r, fraction, seed)]
    return texts


def run(spec: EvalStage, run: RunDir, ctx: Context) -> StageResult:
    import ray

    from forge_ray.eval.evaluate import evaluate_model
    from forge_ray.eval.tasks import load_rows
    from forge_ray.spec import spec_to_dict

    for task in spec.tasks:  # a bad task file fails here, before any model loads
        load_rows(task)
    texts = heldout_texts(ctx, spec)
    ctx.ensure_ray()
    task_dicts = spec_to_dict(spec)["tasks"]
    prepared, retrieval = rag_tasks(spec)
    shown = shown_models(spec)
    with contextlib.ExitStack() as inputs:
        from forge_ray.eval.endpoint import endpoint_key, evaluate_endpoint, is_endpoint

        local = [ref for ref in spec.models if not is_endpoint(ref)]
        dirs = {ref: str(inputs.enter_context(input_dir(ctx, ref.removeprefix("random:"), "model"))) for ref in local}
        _check_image_tasks(spec, dirs)
        remote = ray.remote(evaluate_model).options(num_cpus=spec.cpus_per_model, num_gpus=spec.gpus_per_model)
        threads = max(1, int(spec.cpus_per_model))
        harness = {"tasks": spec.harness_tasks, "include": [str(Path(p).resolve()) for p in spec.harness_include],
                   "fewshot": spec.harness_fewshot, "limit": spec.harness_limit}
        seed_of = {ref: spec.seed if ref.startswith("random:") else None for ref in local}
        pending = {remote.remote(dirs[ref], seed_of[ref], task_dicts, texts, spec.backend, spec.batch_size,
                                 threads, harness): ref for ref in local if spec.mode_of(ref) != "rag"}
        # the same model again with passages in front of every question: `MODEL + rag`
        pending.update({remote.remote(dirs[ref], seed_of[ref], task_dicts, [], spec.backend, spec.batch_size,
                                      threads, None, prepared): rag_name(ref)
                        for ref in local if spec.mode_of(ref) != "closed_book"})
        # each endpoint's key resolved here (Ray tasks do not see the driver's env): only to listed URLs
        ask = ray.remote(evaluate_endpoint).options(num_cpus=0.1)
        endpoints = [ref for ref in spec.models if is_endpoint(ref)]
        pending.update({ask.remote(ref, task_dicts, endpoint_key(ref)): ref
                        for ref in endpoints if spec.mode_of(ref) != "rag"})
        pending.update({ask.remote(ref, task_dicts, endpoint_key(ref), prepared): rag_name(ref)
                        for ref in endpoints if spec.mode_of(ref) != "closed_book"})
        results: dict[str, dict] = {}
        with ctx.progress(f"{spec.name}: models", total=len(pending), unit="model") as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = pending.pop(done[0])
                results[ref] = ray.get(done[0])
                bar.update(1)
                log.info("%s evaluated in %.0fs (%s)", ref, results[ref]["seconds"], results[ref]["backend"])
        per_task = {m: results[m]["tasks"] for m in shown}
        compared = dataclasses.replace(spec, models=shown)  # `MODEL + rag` is compared like any model
        games = judge_all(compared, ctx, per_task, inputs)
    from forge_ray.eval.report import build, write

    summary = build(compared, per_task, {m: results[m]["perplexity"] for m in shown}, games,
                    backends={m: results[m]["backend"] for m in shown})
    if retrieval:
        summary["retrieval"] = retrieval_summary(retrieval, per_task, spec)
    with run.local_dir("report") as out:
        write(out, summary, per_task, ctx.storage, shown)
    run.update(generation_backend=sorted({r["backend"] for r in results.values()}))
    metrics = {"ranking": [r["model"] for r in summary["ranking"]]}
    for task, by_model in summary["tasks"].items():
        for m, s in by_model.items():
            metrics[f"{task}/{m}"] = s["score"]
            if "ends_turn" in s:
                metrics[f"ends_turn/{task}/{m}"] = s["ends_turn"]
    for m, p in summary["perplexity"].items():
        if p:
            metrics[f"bits_per_byte/{m}"] = p["bits_per_byte"]
    for task, r in summary.get("retrieval", {}).items():
        if r["recall_at_k"] is not None:
            metrics[f"recall_at_{r['k']}/{task}"] = r["recall_at_k"]
    return StageResult(metrics=metrics, outputs={"report": "report"})


RAG_SUFFIX = " + rag"


def rag_name(model: str) -> str:
    return model + RAG_SUFFIX


def shown_models(spec: EvalStage) -> list[str]:
    """The report's rows: each model closed-book, with retrieval, or both (``MODEL + rag`` right
    after ``MODEL``)."""
    out = []
    for m in spec.models:
        mode = spec.mode_of(m)
        if mode != "rag":
            out.append(m)
        if mode != "closed_book":
            out.append(rag_name(m))
    return out


def rag_tasks(spec: EvalStage) -> tuple[dict, dict]:
    """``({task: [shots, rows]} with passages in every prompt, {task: recall@k}``) — built once on
    the driver (one index for every model), or empty without a ``retrieval`` section. Image
    tasks are left out (their questions are about the image), and so are few-shot tasks (worked
    examples each behind their own passages would not fit a small model's context)."""
    if not spec.retrieval:
        return {}, {}
    from forge_ray.eval.retrieval import build_index, with_passages
    from forge_ray.eval.tasks import has_images, load_rows

    r = spec.retrieval
    index = build_index(r.documents, r.chunk_chars)
    log.info("retrieval: %d chunks indexed", len(index.chunks))
    prepared, recall = {}, {}
    for task in spec.tasks:
        if has_images(task) or task.few_shot:
            continue
        _, rows = load_rows(task)
        rag_rows, recall[task.name] = with_passages(rows, index, r.k, r.max_context_chars, r.gold_field)
        prepared[task.name] = [[], rag_rows]
    return prepared, recall


def retrieval_summary(recall: dict, per_task: dict, spec: EvalStage) -> dict:
    """Per task: recall@k of the gold documents, and each ``+ rag`` model's score when the gold
    documents were retrieved and when they were not — "retrieval missed" told apart from "reader
    failed"."""
    out = {}
    for task, value in recall.items():
        readers = {}
        for m in per_task:
            rows = per_task[m].get(task, [])
            if not m.endswith(RAG_SUFFIX) or not rows or "gold_retrieved" not in rows[0]:
                continue
            found = [r["score"] for r in rows if r.get("gold_retrieved")]
            missed = [r["score"] for r in rows if not r.get("gold_retrieved")]
            readers[m] = {"score_when_retrieved": sum(found) / len(found) if found else None, "retrieved": len(found),
                          "score_when_missed": sum(missed) / len(missed) if missed else None, "missed": len(missed)}
        out[task] = {"recall_at_k": value, "k": spec.retrieval.k, "readers": readers}
    return out


def _check_image_tasks(spec: EvalStage, dirs: dict[str, str]) -> None:
    """Image tasks need vision-language models: refuse a text-only model (or an endpoint)
    before anything loads, naming the model and the task."""
    from forge_ray.eval.endpoint import is_endpoint
    from forge_ray.eval.tasks import has_images
    from forge_ray.runner import InputError
    from forge_ray.vlm.answer import is_vlm

    image_tasks = [t for t in spec.tasks if has_images(t)]
    if not image_tasks:
        return
    for ref in spec.models:
        if is_endpoint(ref) or not is_vlm(dirs[ref]):
            task = image_tasks[0]
            raise InputError(f"model {ref!r} is not a vision-language model, and task {task.name!r} asks about "
                             f"images ({task.path}): evaluate image tasks with `kind: vlm` runs")


def judge_all(spec: EvalStage, ctx: Context, per_task: dict, inputs: contextlib.ExitStack) -> dict[str, list]:
    """``{judge: [(a, b, outcome_for_a, task, line)]}`` for every pair of models."""
    import ray

    from forge_ray.eval import judges

    pairs = judges.pairs(spec.models)
    # ours and lm-eval's, those every compared model answered (`+ rag` rows have no lm-eval tasks)
    tasks = [t for t in per_task[spec.models[0]] if all(t in per_task[m] for m in spec.models)]
    games: dict[str, list] = {}
    if "reference" in spec.judges:
        games["reference"] = [(a, b, o, t, r["line"]) for t in tasks for a, b in pairs
                              for o, r in zip(judges.reference({m: per_task[m][t] for m in spec.models}, a, b),
                                              per_task[a][t])]
    generative = [t.name for t in spec.tasks if t.scorer != "choice_loglik" and t.name in tasks]
    if "reward_model" in spec.judges:
        rm_dir = str(inputs.enter_context(input_dir(ctx, spec.reward_model, "model")))
        scores = ray.get(ray.remote(_reward_scores).options(num_cpus=spec.cpus_per_model).remote(
            rm_dir, {t: {m: per_task[m][t] for m in spec.models} for t in generative}, spec.models))
        games["reward_model"] = [(a, b, judges.by_scores(sa, sb), t, r["line"]) for t in generative for a, b in pairs
                                 for sa, sb, r in zip(scores[t][a], scores[t][b], per_task[a][t])]
    if "rubric" in spec.judges:
        judge_dir = str(inputs.enter_context(input_dir(ctx, spec.rubric_model, "model")))
        verdicts = ray.get(ray.remote(_rubric_verdicts).options(num_cpus=spec.cpus_per_model).remote(
            judge_dir, spec.rubric, {t: {m: per_task[m][t] for m in spec.models} for t in generative}, pairs))
        games["rubric"] = [(a, b, o, t, r["line"]) for t in generative for (a, b) in pairs
                           for o, r in zip(verdicts[t][f"{a}|{b}"], per_task[a][t])]
    if "human" in spec.judges:
        from forge_ray.runs import arena_votes

        votes = judges.human_votes(arena_votes(ctx.storage), spec.models)
        games["human"] = [(a, b, o, "arena", None) for a, b, o, _ in votes]
        log.info("%d arena votes between the compared models", len(votes))
    return games


def _reward_scores(rm_dir: str, by_task: dict, models: list[str]) -> dict:
    from forge_ray.eval.judges import reward_model
    from forge_ray.models.reward import RewardScorer

    scorer = RewardScorer(rm_dir)
    return {t: reward_model(scorer, results, models) for t, results in by_task.items()}


def _rubric_verdicts(judge_dir: str, rubric_text: str, by_task: dict, pairs: list) -> dict:
    from forge_ray.eval.judges import rubric
    from forge_ray.eval.model import EvalModel

    judge = EvalModel(judge_dir)
    return {t: {f"{a}|{b}": rubric(judge, rubric_text, results, a, b) for a, b in pairs}
            for t, results in by_task.items()}

