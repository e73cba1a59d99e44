"""The arena's model side: answers streamed token by token from any run's model (kept
loaded, a few at a time), and the leaderboard that arena votes make (Bradley–Terry ratings
on the Elo scale, with intervals). Votes themselves are stored by
:func:`forge_ray.runs.record_vote`; the ``human`` judge of an evaluation reads them too."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator

_LOADED: OrderedDict = OrderedDict()  # model dir → EvalModel, least recently used first
_LOCK = threading.Lock()
KEEP = 4


def _model(model_dir: str):
    from forge_ray.eval.model import EvalModel

    with _LOCK:
        if model_dir in _LOADED:
            _LOADED.move_to_end(model_dir)
            return _LOADED[model_dir]
        model = EvalModel(model_dir, batch_size=1)
        _LOADED[model_dir] = model
        while len(_LOADED) > KEEP:
            _LOADED.popitem(last=False)
        return model


def stream_answer(model_dir: str, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0) -> Iterator[str]:
    """The answer so far, after each new token (greedy unless ``temperature`` > 0)."""
    import torch
    from transformers import TextIteratorStreamer

    m = _model(model_dir)
    ids = torch.tensor([m.prompt_ids(prompt)])
    streamer = TextIteratorStreamer(m.tok, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                  eos_token_id=m.end_ids, pad_token_id=m.pad_id, streamer=streamer,
                  do_sample=temperature > 0, **({"temperature": temperature} if temperature > 0 else {}))
    worker = threading.Thread(target=lambda: _generate(m, kwargs), daemon=True)
    worker.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text.strip()
    worker.join()


def _generate(m, kwargs: dict) -> None:
    import torch

    with torch.no_grad():
        m.model.generate(**kwargs)


def leaderboard(vote_lines: list[str], samples: int = 200) -> list[dict]:
    """Every model that received a vote, best first: rating, 95% interval, games, wins."""
    from forge_ray.eval import judges, stats

    models: list[str] = []
    for line in vote_lines:
        for game in judges.human_votes([line], None):
            models += [m for m in game[:2] if m not in models]
    games = [g[:3] for g in judges.human_votes(vote_lines, None)]
    if not games:
        return []
    elo = stats.bradley_terry(models, games)
    ci = stats.bootstrap_ratings(models, games, samples=samples) if len(games) > 1 else {m: [elo[m]] * 2 for m in models}
    rows = [{"model": m, "rating": round(elo[m]), "ci": [round(c) for c in ci[m]],
             "games": sum(m in g[:2] for g in games),
             "wins": sum((g[0] == m and g[2] == 1) or (g[1] == m and g[2] == 0) for g in games)} for m in models]
    return sorted(rows, key=lambda r: -r["rating"])


def eval_prompts(store, limit: int = 50) -> list[str]:
    """Prompts of the eval runs' task items under ``store`` (a :class:`~forge_ray.runs.Storage`),
    unique, in order: what the arena offers to ask."""
    import json

    from forge_ray.eval.report import item_file

    seen: dict[str, None] = {}
    for m in store.list_runs():
        run = store.run(m["name"])
        if m.get("kind") != "eval" or not run.exists("report/results.json"):
            continue
        for task in json.loads(run.read_text("report/results.json"))["tasks"]:
            rel = f"report/items/{item_file(task)}"
            for line in (run.read_text(rel).splitlines() if run.exists(rel) else []):
                seen.setdefault(json.loads(line)["prompt"], None)
                if len(seen) >= limit:
                    return list(seen)
    return list(seen)


def eval_rankings(store) -> list[dict]:
    """Each succeeded eval run's ranking and task scores, from its report."""
    import json

    evals = []
    for m in store.list_runs():
        run = store.run(m["name"])
        if m.get("kind") == "eval" and m.get("status") == "succeeded" and run.exists("report/results.json"):
            results = json.loads(run.read_text("report/results.json"))
            evals.append({"run": m["name"], "ranking": results["ranking"], "tasks": results["tasks"]})
    return evals
