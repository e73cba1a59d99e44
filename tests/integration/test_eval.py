"""Evaluation on the demo pipeline's models: the demo's eval stage ranks the post-trained
models above the pre-trained-only and untrained ones on held-out facts with intervals and
writes the report; ``forge compare`` gives the same answers through vLLM as through HF;
arena votes reach the human judge; the rubric judge runs on a real model."""

from __future__ import annotations

import json

import pytest

from forge_ray import api
from tests.conftest import forge, read_json

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(demo_runs):
    return read_json(demo_runs / "demo-eval" / "report" / "results.json")


def test_demo_eval_ranks_post_trained_models_above_base_and_untrained(report, demo_runs):
    facts = report["tasks"]["held-out-facts"]
    print("held-out facts:", {m: (round(s["score"], 2), [round(c, 2) for c in s["ci"]]) for m, s in facts.items()})
    print("ranking:", [(r["model"], round(r["mean_score"], 3)) for r in report["ranking"]])
    assert all(s["n"] == 190 for s in facts.values())
    for post in ("demo-sft", "demo-dpo", "demo-grpo"):
        # on the chat-format task every post-trained model's interval lies wholly above the untrained
        # model's; against the pre-trained model only SFT's lead is certain, and it is read paired
        # (below): the pre-trained model's chat answers vary from 0.06 to 0.31 between runs
        assert facts[post]["ci"][0] > facts["random:demo-pretrain"]["ci"][1], (post, facts[post])
        assert facts[post]["score"] > facts["demo-sft-plain"]["score"], (post, facts[post])
    # The ranking averages all tasks, two of them in the base model's own format (3-shot, multiple
    # choice), where the pre-trained model is strong: so only the untrained model's place is certain.
    means = [r["mean_score"] for r in report["ranking"]]
    assert means == sorted(means, reverse=True)
    ranked = [r["model"] for r in report["ranking"] if not r["model"].endswith(" + rag")]
    assert ranked[-1] == "random:demo-pretrain", ranked
    # bits-per-byte on the corpus's held-out documents: training lowers it far below the untrained model's
    bpb = {m: p["bits_per_byte"] for m, p in report["perplexity"].items() if p}  # `+ rag` rows score no text
    assert bpb["demo-pretrain"] < 0.5 * bpb["random:demo-pretrain"], bpb
    # pairwise: SFT beats the pre-trained model per the references; five models get Elo-scale ratings
    facts_pairs = {(r["a"], r["b"]): r for r in report["pairwise"]["reference"] if r["task"] == "held-out-facts"}
    vs = facts_pairs[("demo-pretrain", "demo-sft")]
    assert vs["win_rate"] < 0.5 and vs["ci"][1] < 0.5 and vs["n"] == 190
    elo = report["ratings"]["reference"]["elo"]
    assert elo["demo-sft"] > elo["demo-pretrain"] and elo["demo-grpo"] > elo["random:demo-pretrain"]
    assert "reward_model" in report["pairwise"] and report["ratings"]["reward_model"]
    # EleutherAI lm-eval's multiple-choice version of the same facts, from the local task file
    mc = report["tasks"]["lm-eval/demo_facts_mc"]
    closed_book = [m for m in report["models"] if not m.endswith(" + rag")]
    assert set(mc) == set(closed_book) and all(s["n"] == 190 and 0 <= s["score"] <= 1 for s in mc.values())


def test_the_report_shows_which_models_end_their_turn(report):
    """A model that answers and then rambles to the token limit scores like one that stops; the
    report's turn endings and lengths tell them apart. (The demo's RL model against its SFT
    parent is printed, not asserted: on 2026-12-02 it ended 184 of 190 answers against SFT's
    185 — the DAPO overlong penalty rarely fires on the demo's short answers; README, RL.)"""
    facts = report["tasks"]["held-out-facts"]
    turns = {m: (round(s["ends_turn"], 3), round(s["length"], 1)) for m, s in facts.items()}
    print("held-out facts, share of answers ending their turn · mean length:", turns)
    assert all(0 <= s["ends_turn"] <= 1 and s["length"] > 0 for s in facts.values())
    assert facts["random:demo-pretrain"]["ends_turn"] < 0.1  # an untrained model never stops by itself …
    assert facts["random:demo-pretrain"]["length"] > 23  # … and runs to max_new_tokens (24)
    assert facts["demo-sft"]["ends_turn"] > 0.9  # SFT taught the turn format


def test_demo_eval_shows_the_retrieval_baseline_beside_each_model(report, demo_runs):
    """`+ rag` rows on the same items, recall@k of the gold documents per task, and item files
    naming each answer's source documents and the passages shown."""
    assert report["models"] == ["random:demo-pretrain", "demo-pretrain", "demo-sft-plain", "demo-sft-plain + rag",
                                "demo-sft", "demo-sft + rag", "demo-dpo", "demo-grpo"]
    for task in ("held-out-facts", "held-out-two-hop"):
        assert report["tasks"][task]["demo-sft + rag"]["n"] == report["tasks"][task]["demo-sft"]["n"]
    assert "held-out-facts-3shot-plain" not in report["retrieval"]  # few-shot tasks are closed-book only
    one, two = report["retrieval"]["held-out-facts"], report["retrieval"]["held-out-two-hop"]
    print("recall@1:", one["recall_at_k"], two["recall_at_k"], "readers:", one["readers"])
    assert one["recall_at_k"] >= 0.9 and one["k"] == 1  # a question names its entity: BM25 finds its page
    assert two["recall_at_k"] < one["recall_at_k"]  # the team's page is not named by the question
    reader = one["readers"]["demo-sft + rag"]
    assert reader["retrieved"] + reader["missed"] == 190 and reader["score_when_retrieved"] is not None
    items = [json.loads(line) for line in (demo_runs / "demo-eval" / "report" / "items" / "held-out-facts.jsonl")
             .read_text().splitlines()]
    rag = [r for r in items if r["model"] == "demo-sft + rag"]
    assert len(rag) == 190 and all(r["source_docs"] and r["passages"] and "gold_retrieved" in r for r in rag)
    assert all(r["prompt"].endswith("Question: " + r["question"]) for r in rag)
    closed = [r for r in items if r["model"] == "demo-sft"]
    assert [r["question"] if "question" in r else r["prompt"] for r in rag] == [r["prompt"] for r in closed]
    assert "Retrieval (BM25)" in (demo_runs / "demo-eval" / "report" / "report.md").read_text()


def test_demo_eval_report_files(demo_runs):
    out = demo_runs / "demo-eval" / "report"
    for name in ("results.json", "report.md", "report.html", "scores.png", "curves.png",
                 "items/held-out-facts.jsonl", "items/held-out-facts-3shot-plain.jsonl", "items/held-out-two-hop.jsonl",
                 "items/lm-eval_demo_facts_mc.jsonl"):
        assert (out / name).stat().st_size > 0, name
    md = (out / "report.md").read_text()
    assert "Ranking" in md and "Bradley–Terry" in md and "95%" in md and "![scores.png](scores.png)" in md
    items = [json.loads(line) for line in (out / "items/held-out-facts.jsonl").read_text().splitlines()]
    assert len(items) == 8 * 190 and {"model", "prompt", "answer", "output", "score", "line"} <= set(items[0])
    m = read_json(demo_runs / "demo-eval" / "manifest.json")
    assert set(m["parents"]) == {"demo-pretrain", "demo-sft", "demo-sft-plain", "demo-dpo", "demo-grpo", "demo-rm",
                                 "demo-corpus"}
    assert m["generation_backend"] == ["hf"]  # the demo asks for HF (vLLM: the test below)


def test_forge_compare_vllm_and_hf_answer_alike(ray_cluster, demo_runs, demo_data):
    answers = {}
    for backend in ("vllm", "hf"):
        result = forge("compare", "demo-pretrain", "demo-grpo", "--task",
                       f"facts={demo_data / 'eval.jsonl'}:contains_answer", "--name", f"cmp-{backend}",
                       "--backend", backend, "--storage", str(demo_runs), env={"RAY_ADDRESS": ray_cluster["gcs"]})
        assert result.returncode == 0, result.stderr[-2000:]
        assert "report:" in result.stdout and "demo-grpo" in result.stdout
        rows = (demo_runs / f"cmp-{backend}" / "report" / "items" / "facts.jsonl").read_text().splitlines()
        answers[backend] = [(r["model"], r["output"]) for r in map(json.loads, rows)]
    assert answers["vllm"] == answers["hf"]  # greedy through either engine: the same answers


def test_arena_votes_reach_the_human_judge_and_rubric_judge_runs(ray_connected, demo_runs, demo_data):
    from forge_ray.runs import Storage, record_vote

    store = Storage(str(demo_runs))
    for vote in ("b", "b", "b", "tie"):
        record_vote(store, "demo-pretrain", "demo-sft", "Who leads Team Otter?", vote)
    info = api.compare(["demo-pretrain", "demo-sft"], [{"name": "facts", "path": str(demo_data / "eval.jsonl"),
                                                        "scorer": "contains_answer", "limit": 6}],
                       name="cmp-judges", judges=["reference", "human", "rubric"], rubric_model="demo-sft",
                       backend="hf", storage=str(demo_runs), show_progress=False)
    assert info.status == "succeeded"
    pairwise = read_json(demo_runs / "cmp-judges" / "report" / "results.json")["pairwise"]
    [human] = [r for r in pairwise["human"] if r["task"] == "all"]
    assert (human["wins"], human["ties"], human["losses"], human["n"]) == (0, 1, 3, 4)
    [rubric] = [r for r in pairwise["rubric"] if r["task"] == "facts"]
    assert rubric["n"] == 6 and rubric["wins"] + rubric["ties"] + rubric["losses"] == 6
