"""Evaluation pieces without a model server: scorers on hand-made tricky cases, task files
that fail naming file:line, the statistics, and the judges' logic."""

from __future__ import annotations

import json

import pytest

from forge_ray.eval import compare, judges, stats
from forge_ray.eval.tasks import TaskError, load_rows, scorer
from forge_ray.spec.stages import TaskSpec


def score(name: str, outputs: list[str], answers: list, **kw) -> list[float]:
    return scorer(name)(["q"] * len(outputs), outputs, answer=answers, **kw)


def test_exact_and_normalised_matching():
    assert score("exact_match", ["Paris", " Paris \n(capital)", "paris", "Paris."], ["Paris"] * 4) == [1, 1, 0, 0]
    # normalisation: case, punctuation, runs of whitespace; ':' and '-' kept (part numbers, times)
    assert score("normalized_match", ["PARIS!", "  the   answer ", "AB-1234.", "AB1234", "10:30"],
                 ["paris", "The answer", "ab-1234", "AB-1234", "1030"]) == [1, 1, 1, 0, 0]
    assert score("normalized_match", ["Zoë", "naïve café"], ["zoë", "Naïve Café"]) == [1, 1]  # unicode letters stay
    assert score("contains", ["It is probably Paris, France", "Parisian"], ["paris", "paris"]) == [1, 1]
    assert score("contains_answer", ["It is probably Paris, France", "Parisian"], ["paris", "paris"]) == [1, 0]
    assert score("contains_answer", ["first line\nParis"], ["Paris"]) == [0]  # only the first line counts


def test_regex_and_numeric_edge_cases():
    # a pattern per task (scorer_args) with the row's answer spliced in, escaped
    assert score("regex", ["Cost: $3.50 total", "Cost: $3x50"], ["$3.50", "$3.50"], pattern=r"\b{answer}") == [0, 0]
    assert score("regex", ["Cost: $3.50 total", "Cost: $3x50"], ["$3.50", "$3.50"], pattern=r"{answer}\b") == [1, 0]
    assert score("regex", ["AB-1234", "ab-1234 "], [None, None], pattern=r"^[A-Z]{2}-\d{4}$") == [1, 0]
    with pytest.raises(ValueError, match="needs a pattern"):
        score("regex", ["x"], ["x"])
    assert score("numeric", ["about 1,000 units", "-2.5e3", "3.14159", "n/a"], ["1000", "-2500", "3.14", "0"],
                 abs_tol=0.01) == [1, 1, 1, 0]
    assert score("numeric", ["3.14159"], ["3.14"]) == [0]  # default tolerance is tight
    assert score("numeric", ["the answer is 7, not 8"], ["8"]) == [1]  # the last number is the answer


def test_unknown_scorer_suggests_and_user_scorer_loads():
    with pytest.raises(KeyError, match="did you mean 'contains'"):
        scorer("contain")
    assert scorer("tests.unit.test_eval_scorers:always_half")(["q"], ["x"]) == [0.5]


def always_half(prompts, completions, **_):
    return [0.5] * len(completions)


def test_task_files_fail_naming_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt": "a", "answer": "b"}\n\n{"prompt": "c"}\n')
    with pytest.raises(TaskError, match=rf"{path}:3: needs 'answer'"):
        load_rows(TaskSpec(name="t", path=str(path)))
    path.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "c", "answer": \n')
    with pytest.raises(TaskError, match=rf"{path}:2: not JSON"):
        load_rows(TaskSpec(name="t", path=str(path)))
    path.write_text('{"prompt": "a", "choices": ["x", "y"], "answer": "z"}\n')
    with pytest.raises(TaskError, match=rf"{path}:1: answer 'z' is neither"):
        load_rows(TaskSpec(name="t", path=str(path), scorer="choice_loglik"))
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": f"a{i}"}) + "\n" for i in range(6)))
    shots, rows = load_rows(TaskSpec(name="t", path=str(path), few_shot=2, limit=3))
    assert shots == [("q0", "a0"), ("q1", "a1")] and [r["prompt"] for r in rows] == ["q2", "q3", "q4"]
    assert rows[0]["line"] == 3


def test_bootstrap_interval_covers_the_mean_and_narrows_with_n():
    small = stats.bootstrap_ci([1, 0] * 10, seed=1)
    large = stats.bootstrap_ci([1, 0] * 500, seed=1)
    assert small[0] < 0.5 < small[1] and large[0] < 0.5 < large[1]
    assert (large[1] - large[0]) < (small[1] - small[0]) / 4
    assert stats.bootstrap_ci([1, 1, 1]) == (1.0, 1.0)


def test_bradley_terry_recovers_the_order_and_the_gap():
    games = [("a", "b", 1.0)] * 75 + [("a", "b", 0.0)] * 25 + [("b", "c", 1.0)] * 75 + [("b", "c", 0.0)] * 25
    r = stats.bradley_terry(["a", "b", "c"], games, prior=0.0)
    assert r["a"] > r["b"] > r["c"]
    # 75% wins ⇔ a 3:1 strength ratio ⇔ 400·log10(3) ≈ 191 Elo points
    assert r["a"] - r["b"] == pytest.approx(190.8, abs=2) and r["b"] - r["c"] == pytest.approx(190.8, abs=2)
    undefeated = stats.bradley_terry(["a", "b"], [("a", "b", 1.0)] * 5)
    assert 1000 < undefeated["a"] < 1400  # finite thanks to the prior


class _Judge:
    """A stand-in judge model at the interface the rubric judge uses (prompt_ids, tok, loglik)."""

    def __init__(self, prefer):
        self.prefer, self.prompts = prefer, {}
        self.tok = lambda text, add_special_tokens=False: {"input_ids": [ord(text)]}

    def prompt_ids(self, text):
        self.prompts[len(self.prompts)] = text
        return [len(self.prompts) - 1]

    def loglik(self, contexts, conts):
        return [self.prefer(self.prompts[c[0]], chr(k[0])) for c, k in zip(contexts, conts)]


def test_rubric_judge_cancels_position_bias():
    results = {"x": [{"prompt": "q", "output": "right"}], "y": [{"prompt": "q", "output": "wrong"}]}
    always_a = _Judge(lambda prompt, letter: 1.0 if letter == "A" else 0.0)
    assert judges.rubric(always_a, "be right", results, "x", "y") == [0.5]  # bias only: no decision

    def knows(prompt, letter):
        first = prompt.split("Answer A: ")[1].split("\n")[0]
        return 1.0 if (letter == "A") == (first == "right") else 0.0
    assert judges.rubric(_Judge(knows), "be right", results, "x", "y") == [1.0]
    assert judges.rubric(_Judge(knows), "be right", results, "y", "x") == [0.0]


def test_human_votes_and_disagreements():
    lines = [json.dumps(v) for v in ({"model_a": "m1", "model_b": "m2", "vote": "a", "prompt": "p"},
                                     {"model_a": "m2", "model_b": "m1", "vote": "tie"},
                                     {"model_a": "m1", "model_b": "other", "vote": "b"},
                                     {"model_a": "m1", "model_b": "m2", "vote": "bogus"})]
    assert [g[:3] for g in judges.human_votes(lines, ["m1", "m2"])] == [("m1", "m2", 1.0), ("m2", "m1", 0.5)]
    results = {m: {"t": [{"line": 1, "prompt": "q", "output": o, "score": s}]}
               for m, o, s in (("m1", "A1", 1.0), ("m2", "A2", 0.0))}
    by_judge = {"reference": [("m1", "m2", 1.0, "t", 1)], "reward_model": [("m1", "m2", 0.0, "t", 1)]}
    [d] = compare.disagreements(by_judge, results)
    assert d["verdicts"] == {"reference": 1.0, "reward_model": 0.0} and d["output_b"] == "A2"
    assert compare.disagreements({"reference": [("m1", "m2", 1.0, "t", 1)],
                                  "reward_model": [("m1", "m2", 0.5, "t", 1)]}, results) == []


def test_docstring_examples_hold():
    import doctest

    result = doctest.testmod(stats)
    assert result.attempted and not result.failed


def test_scores_show_which_answers_end_their_turn_and_how_long_they_run():
    from forge_ray.eval.compare import task_scores
    from forge_ray.eval.report import tables

    stops = [{"score": 1.0, "ends_turn": True, "length": 8}, {"score": 0.0, "ends_turn": True, "length": 6}]
    rambles = [{"score": 1.0, "ends_turn": False, "length": 24}, {"score": 0.0, "ends_turn": True, "length": 10}]
    scores = task_scores({"sft": {"facts": stops}, "grpo": {"facts": rambles}, "api": {"facts": [{"score": 1.0}]}},
                         samples=100)
    assert scores["facts"]["sft"]["score"] == scores["facts"]["grpo"]["score"] == 0.5  # the same score …
    assert scores["facts"]["sft"]["ends_turn"] == 1.0 and scores["facts"]["grpo"]["ends_turn"] == 0.5  # … not the same
    assert scores["facts"]["grpo"]["length"] == 17.0 and "ends_turn" not in scores["facts"]["api"]
    shown = {title: rows for title, _, rows in tables({"models": ["sft", "grpo", "api"], "tasks": scores,
                                                        "perplexity": {}, "pairwise": {}, "ratings": {}})}
    turns = next(rows for title, rows in shown.items() if title.startswith("Answers that end their turn"))
    assert turns == [["sft", "1.00 · 7.0"], ["grpo", "0.50 · 17.0"], ["api", "—"]]
