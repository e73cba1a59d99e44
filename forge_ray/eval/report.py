"""``report/`` of an evaluation: ``results.json`` (everything, machine-readable),
``report.md`` and ``report.html`` (tables and plots for people), ``scores.png`` (each
task's score per model with 95% intervals), ``curves.png`` (the compared runs' training
curves side by side) and ``items/<task>.jsonl`` (every model's answer to every item)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from forge_ray.eval import compare


def build(spec, per_task: dict, perplexity: dict, games: dict[str, list], backends: dict) -> dict:
    samples = spec.bootstrap_samples
    scores = compare.task_scores(per_task, samples, spec.seed)
    return {
        "name": spec.name, "models": list(spec.models), "backends": backends,
        "tasks": scores, "ranking": compare.ranking(scores, list(spec.models)),
        "perplexity": perplexity,
        "pairwise": {judge: compare.pairwise(g, samples, spec.seed) for judge, g in games.items()},
        "ratings": {judge: compare.ratings(list(spec.models), g, samples, spec.seed) for judge, g in games.items()},
        "disagreements": compare.disagreements(games, per_task),
        "by_type": by_type(per_task),
    }


def by_type(per_task: dict) -> dict:
    """``{task: {type: {model: mean score}}}`` for tasks whose rows carry a ``type`` (e.g. VQA's
    colour/shape/count questions), so a mean does not hide what a model cannot do."""
    out: dict = {}
    for model, tasks in per_task.items():
        for task, rows in tasks.items():
            for kind in sorted({r["type"] for r in rows if "type" in r}):
                scores = [r["score"] for r in rows if r.get("type") == kind]
                out.setdefault(task, {}).setdefault(kind, {})[model] = sum(scores) / len(scores)
    return out


def write(out: Path, summary: dict, per_task: dict, storage, models: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    items = out / "items"
    items.mkdir(exist_ok=True)
    for task in summary["tasks"]:
        with open(items / item_file(task), "w", encoding="utf-8") as f:
            for m in models:
                for row in per_task[m].get(task, []):
                    f.write(json.dumps({"model": m, **row}, ensure_ascii=False) + "\n")
    plots = [p for p in (_plot_scores(out, summary), _plot_curves(out, storage, models)) if p]
    (out / "report.md").write_text(markdown(summary, plots))
    (out / "report.html").write_text(to_html(summary, plots))


def item_file(task: str) -> str:
    """``items/`` file of a task (``lm-eval/hellaswag`` → ``lm-eval_hellaswag.jsonl``)."""
    return re.sub(r"[^\w.-]+", "_", task) + ".jsonl"


def _cell(score: dict | None) -> str:
    return "—" if score is None else f"{score['score']:.3f} [{score['ci'][0]:.2f}, {score['ci'][1]:.2f}]"


def _turns(score: dict | None) -> str:
    return "—" if not score or "ends_turn" not in score else f"{score['ends_turn']:.2f} · {score['length']:.1f}"


def _fmt(x, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table in the report."""
    models = summary["models"]
    out = []
    if summary["tasks"]:
        rows = [[m] + [_cell(summary["tasks"][t].get(m)) for t in summary["tasks"]] for m in models]
        out.append(("Scores (mean, 95% bootstrap interval)", ["model", *summary["tasks"]], rows))
        ended = [t for t in summary["tasks"] if any("ends_turn" in s for s in summary["tasks"][t].values())]
        if ended:
            rows = [[m] + [_turns(summary["tasks"][t].get(m)) for t in ended] for m in models]
            out.append(("Answers that end their turn before the token limit (share) · mean length (tokens)",
                        ["model", *ended], rows))
    if summary.get("retrieval"):
        readers = sorted({m for r in summary["retrieval"].values() for m in r["readers"]})
        header = ["task", "recall@k", *[f"{m}: when found / when missed" for m in readers]]
        rows = [[t, f"{_fmt(r['recall_at_k'])} (k={r['k']})",
                 *[f"{_fmt(r['readers'].get(m, {}).get('score_when_retrieved'))} ({r['readers'].get(m, {}).get('retrieved', 0)}) / "
                   f"{_fmt(r['readers'].get(m, {}).get('score_when_missed'))} ({r['readers'].get(m, {}).get('missed', 0)})"
                   for m in readers]] for t, r in summary["retrieval"].items()]
        out.append(("Retrieval (BM25): recall@k of the gold documents, and the reader's score when they were "
                    "found or missed", header, rows))
    for task, kinds in summary.get("by_type", {}).items():
        out.append((f"{task} by question type (mean score)", ["type", *models],
                    [[kind, *(_fmt(kinds[kind].get(m)) for m in models)] for kind in kinds]))
    if any(summary["perplexity"].values()):
        rows = [[m, _fmt(p and p["bits_per_byte"]), _fmt(p and p["perplexity"], 2), str(p and p["tokens"])]
                for m, p in summary["perplexity"].items()]
        out.append(("Held-out text", ["model", "bits/byte", "perplexity", "tokens"], rows))
    for judge, rows in summary["pairwise"].items():
        pooled = [r for r in rows if r["task"] == "all"]
        if pooled:
            out.append((f"Pairwise ({judge} judge, all tasks)", ["A", "B", "A's win rate", "95% interval", "W/T/L"],
                        [[r["a"], r["b"], f"{r['win_rate']:.3f}", f"[{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]",
                          f"{r['wins']}/{r['ties']}/{r['losses']}"] for r in pooled]))
    for judge, rating in summary["ratings"].items():
        if rating:
            order = sorted(rating["elo"], key=lambda m: -rating["elo"][m])
            out.append((f"Bradley–Terry ratings, Elo scale ({judge} judge)", ["model", "rating", "95% interval"],
                        [[m, f"{rating['elo'][m]:.0f}", f"[{rating['ci'][m][0]:.0f}, {rating['ci'][m][1]:.0f}]"]
                         for m in order]))
    return out


def markdown(summary: dict, plots: list[str]) -> str:
    lines = [f"# Evaluation: {summary['name']}", "",
             "Ranking (mean score over tasks): " + " > ".join(
                 f"{r['model']} ({_fmt(r['mean_score'])})" for r in summary["ranking"]), ""]
    for title, header, rows in tables(summary):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
    lines += [f"![{p}]({p})" for p in plots] + [""]
    if summary["disagreements"]:
        lines += ["## Where the judges disagree", ""]
        for d in summary["disagreements"]:
            lines.append(f"- **{d['task']}:{d['line']}** {d['prompt']!r}: {d['a']} said {d['output_a']!r}, "
                         f"{d['b']} said {d['output_b']!r}; verdicts {d['verdicts']}")
    return "\n".join(lines) + "\n"


def to_html(summary: dict, plots: list[str]) -> str:
    esc = html.escape
    parts = [f"<!doctype html><meta charset='utf-8'><title>{esc(summary['name'])}</title>",
             "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}</style>",
             f"<h1>Evaluation: {esc(summary['name'])}</h1>",
             "<p>Ranking: " + esc(" > ".join(r["model"] for r in summary["ranking"])) + "</p>"]
    for title, header, rows in tables(summary):
        parts.append(f"<h2>{esc(title)}</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    parts += [f"<img src='{esc(p)}' alt='{esc(p)}' style='max-width:100%'>" for p in plots]
    return "\n".join(parts) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files, no display
    import matplotlib.pyplot as plt

    return plt


def _plot_scores(out: Path, summary: dict) -> str | None:
    if not summary["tasks"]:
        return None
    plt = _pyplot()
    tasks, models = list(summary["tasks"]), summary["models"]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(tasks) * len(models) / 2), 3.5))
    for i, m in enumerate(models):
        shown = [j for j, t in enumerate(tasks) if m in summary["tasks"][t]]  # `+ rag` rows skip some tasks
        vals = [summary["tasks"][tasks[j]][m]["score"] for j in shown]
        err = [[v - summary["tasks"][tasks[j]][m]["ci"][0] for j, v in zip(shown, vals)],
               [summary["tasks"][tasks[j]][m]["ci"][1] - v for j, v in zip(shown, vals)]]
        ax.bar([j + i * width for j in shown], vals, width, yerr=err, capsize=3, label=m)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks)
    ax.set_ylabel("score (95% interval)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=110)
    plt.close(fig)
    return "scores.png"


CURVES = (("loss", "training loss"), ("val_loss", "validation loss"), ("reward_mean", "RL reward (sampled)"),
          ("eval_reward", "RL reward (held-out, greedy)"), ("eval_reward_sampled", "RL reward (held-out, sampled)"))


def _plot_curves(out: Path, storage, models: list[str]) -> str | None:
    """The compared runs' own curves (runs only: directories and untrained models have none)."""
    histories = {}
    for m in models:
        name = m.removeprefix("random:")
        if m.startswith(("random:", "http://", "https://")) or " + " in m or not storage.exists(name):
            continue
        run = storage.run(name)
        if run.exists("metrics.jsonl"):
            histories[m] = run.metrics()
    panels = [(k, t) for k, t in CURVES if any(k in r for h in histories.values() for r in h)]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for m, rows in histories.items():
            pts = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
            if pts:
                ax.plot(*zip(*pts), label=m, marker="." if len(pts) < 30 else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)
    return "curves.png"
