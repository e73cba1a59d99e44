"""Pairwise judgments between models answering the same prompts. Each judge turns two
models' answers to one item into an outcome from A's side (1 A better, 0 B better, 0.5 tie):

- ``reference``: the task's scorer against the reference answer (higher score wins);
- ``reward_model``: a trained reward model's scores of both answers;
- ``rubric``: a judge model (any chat model) asked the rubric with both answers, in both
  orders to cancel position bias — it must prefer the same answer both times to decide;
- ``human``: votes cast in the UI arena (``arena/votes.jsonl`` under the storage root).
"""

from __future__ import annotations

import itertools
import json

Outcome = float


def by_scores(a: float, b: float) -> Outcome:
    return 1.0 if a > b else 0.0 if b > a else 0.5


def reference(results: dict[str, list[dict]], a: str, b: str) -> list[Outcome]:
    return [by_scores(x["score"], y["score"]) for x, y in zip(results[a], results[b])]


def reward_model(scorer, results: dict[str, list[dict]], models: list[str]) -> dict[str, list[float]]:
    """Reward-model scores of every model's answers (compared pairwise with :func:`by_scores`)."""
    out = {}
    for m in models:
        rows = results[m]
        out[m] = [float(s) for s in scorer.score([r["prompt"] for r in rows], [r["output"] for r in rows])]
    return out


def rubric_prompt(rubric: str, question: str, first: str, second: str) -> str:
    return (f"{rubric}\n\nQuestion: {question}\n\nAnswer A: {first}\n\nAnswer B: {second}\n\n"
            "Reply with the letter of the better answer: A or B.")


def rubric(judge, rubric_text: str, results: dict[str, list[dict]], a: str, b: str) -> list[Outcome]:
    """The judge model's preference by the log-likelihood of replying "A" vs "B", asked with
    the answers in both orders; a preference that flips with the order is a tie."""
    contexts, letters = [], []
    for x, y in zip(results[a], results[b]):
        for first, second in ((x["output"], y["output"]), (y["output"], x["output"])):
            ctx = judge.prompt_ids(rubric_prompt(rubric_text, x["prompt"], first, second))
            for letter in ("A", "B"):
                contexts.append(ctx)
                letters.append(list(judge.tok(letter, add_special_tokens=False)["input_ids"]))
    ll = judge.loglik(contexts, letters)
    outcomes = []
    for i in range(0, len(ll), 4):
        a_first = ll[i] > ll[i + 1]  # order (a, b): "A" means a
        a_second = ll[i + 3] > ll[i + 2]  # order (b, a): "B" means a
        outcomes.append(1.0 if a_first and a_second else 0.0 if not a_first and not a_second else 0.5)
    return outcomes


def human_votes(lines: list[str], models: list[str] | None) -> list[tuple[str, str, Outcome, str]]:
    """Arena votes between two of ``models`` (None: any): ``(a, b, outcome_for_a, prompt)``."""
    games = []
    for line in lines:
        if not line.strip():
            continue
        vote = json.loads(line)
        a, b = vote.get("model_a"), vote.get("model_b")
        if a and b and a != b and (models is None or (a in models and b in models)):
            outcome = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}.get(vote.get("vote"))
            if outcome is not None:
                games.append((a, b, outcome, vote.get("prompt", "")))
    return games


def pairs(models: list[str]) -> list[tuple[str, str]]:
    return list(itertools.combinations(models, 2))
