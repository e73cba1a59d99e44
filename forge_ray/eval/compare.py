"""From per-item results and judgments to the comparison a report shows: each task's score
per model with a bootstrap interval, pairwise win rates per judge with intervals,
Bradley–Terry/Elo ratings when more than two models meet, and the items where judges
disagree."""

from __future__ import annotations

from forge_ray.eval import stats

Game = tuple  # (model_a, model_b, outcome_for_a, task, line)


def task_scores(results: dict[str, dict[str, list[dict]]], samples: int, seed: int = 0) -> dict:
    """``{task: {model: {score, ci, n}}}`` from ``{model: {task: rows}}``; for generated
    answers also ``ends_turn`` (share that ended their turn before the token limit) and
    ``length`` (mean answer tokens) — a model that answers and then rambles to the limit
    scores like one that stops, and only these show it."""
    out: dict = {}
    for model, tasks in results.items():
        for task, rows in tasks.items():
            scores = [r["score"] for r in rows]
            entry = {"score": sum(scores) / max(len(scores), 1),
                     "ci": list(stats.bootstrap_ci(scores, samples=samples, seed=seed)), "n": len(scores)}
            if rows and all("ends_turn" in r for r in rows):
                entry.update(ends_turn=sum(r["ends_turn"] for r in rows) / len(rows),
                             length=sum(r["length"] for r in rows) / len(rows))
            out.setdefault(task, {})[model] = entry
    return out


def ranking(scores: dict, models: list[str]) -> list[dict]:
    """Models by their mean score over tasks (macro average), best first."""
    rows = []
    for m in models:
        per_task = [scores[t][m]["score"] for t in scores if m in scores[t]]
        rows.append({"model": m, "mean_score": sum(per_task) / len(per_task) if per_task else None})
    return sorted(rows, key=lambda r: -(r["mean_score"] if r["mean_score"] is not None else -1))


def pairwise(games: list[Game], samples: int, seed: int = 0) -> list[dict]:
    """Win rate of ``a`` over ``b`` per (task, pair) and pooled over tasks (``task: "all"``)."""
    groups: dict = {}
    for a, b, outcome, task, _ in games:
        groups.setdefault((task, a, b), []).append(outcome)
        groups.setdefault(("all", a, b), []).append(outcome)
    return [{"task": task, "a": a, "b": b, **stats.win_rate(outs, samples=samples, seed=seed)}
            for (task, a, b), outs in sorted(groups.items())]


def ratings(models: list[str], games: list[Game], samples: int, seed: int = 0) -> dict | None:
    if len(models) < 3 or not games:
        return None
    triples = [(a, b, o) for a, b, o, *_ in games]
    return {"elo": stats.bradley_terry(models, triples),
            "ci": stats.bootstrap_ratings(models, triples, samples=max(100, samples // 5), seed=seed)}


def disagreements(by_judge: dict[str, list[Game]], results: dict, limit: int = 20) -> list[dict]:
    """Items two judges decide in opposite directions (one says A, the other B)."""
    index: dict = {}
    for judge, games in by_judge.items():
        for a, b, outcome, task, line in games:
            if line is not None:
                index.setdefault((task, line, a, b), {})[judge] = outcome
    out = []
    for (task, line, a, b), verdicts in sorted(index.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        decided = {j: o for j, o in verdicts.items() if o != 0.5}
        if len(set(decided.values())) > 1:
            row_a = next(r for r in results[a][task] if r["line"] == line)
            row_b = next(r for r in results[b][task] if r["line"] == line)
            out.append({"task": task, "line": line, "prompt": row_a["prompt"], "a": a, "b": b,
                        "output_a": row_a["output"], "output_b": row_b["output"], "verdicts": verdicts})
            if len(out) >= limit:
                break
    return out
