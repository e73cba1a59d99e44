"""A generated "company knowledge base" whose facts are learnable and checkable — written the
way real documents are: **each fact stated once**, in prose with pronouns and short references,
some facts only in a records table, some only on a team page.

What it holds (``forge demo-data DIR --seed S``):

- ``docs/``: a page per product (release year, part number, owner — once each), a page per team
  (lead, location — once each), a glossary, incident reports, a code file, and an FAQ page
  answering questions about the *training* entities in plain text (questions being answered, seen
  in pre-training, make stored facts extractable — Allen-Zhu & Li, arXiv 2309.14316);
- ``records/products.csv`` and ``records/teams.csv``: the tables an organisation keeps beside its
  prose (the product sheet's weight and status are only there; the team sheet's founding year);
- ``sft.jsonl``/``prefs.jsonl``/``rl_prompts.jsonl``: chats, preference pairs and RL prompts about
  the training entities only;
- ``eval.jsonl``: one-document questions about the *held-out* entities; ``eval_two_hop.jsonl``:
  questions that need two documents (the team that owns a product is on the product's page, that
  team's city only on the team's page). Every eval row names its gold ``source_docs``.

A model answers held-out questions only if it stored the documents' facts in a form it can
extract and SFT taught it to answer. The same seed gives byte-identical files; another seed,
other facts.

Run: ``forge demo-data ./forge_runs/demo-data --seed 0``
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

from forge_ray.demo.facts import make_facts


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# ------------------------------------------------------------------ documents


def product_page(p: dict) -> str:
    return f"products/{p['name'].lower()}.md"


def team_page(team: str) -> str:
    return f"teams/{team.split()[-1].lower()}.md"


def _product_doc(p: dict, facts: dict, rng: random.Random) -> str:
    """Each fact once; later sentences refer to the product as "it" or "the product"."""
    name, status = p["name"], p["status"]
    opening = rng.choice([
        f"{name} is {_a(status)} {status} product of {facts['company']}, first released in {p['year']}.",
        f"{name} is one of the {status} products of {facts['company']}; it came out in {p['year']}.",
        f"Released in {p['year']}, {name} is {_a(status)} {status} product of {facts['company']}.",
    ])
    part = rng.choice([f"It carries part number {p['part_number']}.",
                       f"Its part number is {p['part_number']}.",
                       f"The product is ordered under part number {p['part_number']}."])
    owner = rng.choice([f"The product is owned by {p['team']}.",
                        f"It is maintained by {p['team']}, which owns it.",
                        f"Ownership lies with {p['team']}."])
    extra = rng.choice(["Spare parts are kept in the central store.", "A maintenance guide is available on request.",
                        "Firmware updates are published every quarter.", "It is sold in several regions."])
    return f"# {name}\n\n{opening} {part}\n\n{owner} {extra}\n"


def _team_doc(t: dict, facts: dict, rng: random.Random) -> str:
    members = [p for p in facts["people"] if p["team"] == t["name"]]
    lead = rng.choice([f"{t['name']} is led by {t['lead']}.", f"The lead of {t['name']} is {t['lead']}."])
    place = rng.choice([f"They are based in {t['location']}.", f"The team works from {t['location']}.",
                        f"Its office is in {t['location']}."])
    text = [f"# {t['name']}", "", f"{lead} {place}", "", "## Members", ""]
    text += [f"- {m['name']}, {m['role']}" for m in members]
    return "\n".join(text) + "\n"


def _glossary(facts: dict) -> str:
    text = [f"# {facts['company']} glossary", ""]
    for t in facts["terms"]:
        text.append(f"**{t['term']}**: {t['meaning']}.\n")
    return "\n".join(text)


def _code_file(facts: dict) -> str:
    return (f'"""Shipping helpers of {facts["company"]} (generated)."""\n\n\n'
            "def weight_class(weight_kg: int) -> str:\n"
            '    """Parcels up to 20 kg ship as light freight, heavier ones as pallet freight."""\n'
            '    return "light" if weight_kg <= 20 else "pallet"\n')


def _incident(i: int, facts: dict, rng: random.Random) -> str:
    p = rng.choice(facts["products"])
    person = rng.choice(facts["people"])
    day = f"{rng.randint(2019, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return (f"# Incident INC-{1000 + i}\n\nOn {day}, {person['name']} ({person['role']}) reported a fault in "
            f"{p['name']}. The fault was fixed and the report was closed.\n")


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _records(facts: dict) -> dict[str, str]:
    """The product sheet and the team sheet: one row per entity."""
    products = [{"product": p["name"], "part_number": p["part_number"], "owner": p["team"],
                 "weight_kg": p["weight_kg"], "status": p["status"]} for p in facts["products"]]
    teams = [{"team": t["name"], "channel": t["channel"], "founded": t["founded"]} for t in facts["teams"]]
    return {"records/products.csv": _csv(products), "records/teams.csv": _csv(teams)}


# ------------------------------------------------------------------ questions

def _faq(train_q: list[dict], facts: dict, rng: random.Random) -> str:
    """The internal FAQ page: every phrasing of every *training* question, as plain text.

    Why: a base model only answers questions about facts it read in prose if its corpus also
    showed it questions being answered (knowledge is stored but not extractable otherwise;
    Allen-Zhu & Li, "Physics of Language Models 3.1"). The FAQ is plain text, not the chat
    template, so pre-training teaches the facts and the habit of answering, while SFT still
    has to teach the assistant format."""
    pairs = [(phrasing, q["answer"]) for q in train_q for phrasing in q["phrasings"]]
    rng.shuffle(pairs)
    return f"# {facts['company']} FAQ\n\n" + "".join(f"Q: {q}\nA: {a}\n\n" for q, a in pairs)




_SENTENCES = {  # how an assistant answers: the fact restated as a sentence
    "part_number": "The part number of {entity} is {answer}.",
    "owner": "{entity} is owned by {answer}.",
    "year": "{entity} was released in {answer}.",
    "lead": "{entity} is led by {answer}.",
    "location": "{entity} is based in {answer}.",
    "owner_location": "{entity} is owned by {via}, which is based in {answer}.",
}


def sentence(q: dict, answer: str | None = None) -> str:
    """The full-sentence answer to a question (optionally with another, wrong, answer); a
    two-document answer names the intermediate entity first, as a person would reason."""
    return _SENTENCES[q["type"]].format(entity=q["entity"], answer=q["answer"] if answer is None else answer,
                                        via=q.get("via", ""))


def questions(facts: dict) -> list[dict]:
    """Every (question, answer) pair, tagged with its entity, its gold source documents (paths
    under ``docs/`` or ``records/``), and how many documents it needs (``hops``)."""
    qs = []
    teams = {t["name"]: t for t in facts["teams"]}
    for p in facts["products"]:
        n, page = p["name"], "docs/" + product_page(p)
        qs += [
            {"entity": n, "type": "part_number", "answer": p["part_number"], "source_docs": [page], "hops": 1,
             "phrasings": [f"What is the part number of {n}?", f"Which part number does {n} have?",
                           f"Give the part number for {n}."]},
            {"entity": n, "type": "owner", "answer": p["team"], "source_docs": [page], "hops": 1,
             "phrasings": [f"Which team owns {n}?", f"Who is responsible for {n}?", f"Which team should I ask about {n}?"]},
            {"entity": n, "type": "year", "answer": str(p["year"]), "source_docs": [page], "hops": 1,
             "phrasings": [f"In which year was {n} released?", f"When was {n} released?", f"What is the release year of {n}?"]},
            {"entity": n, "type": "owner_location", "answer": teams[p["team"]]["location"], "via": p["team"],
             "source_docs": [page, "docs/" + team_page(p["team"])], "hops": 2,
             "phrasings": [f"In which city is the team that owns {n} based?", f"Where is the team behind {n} located?",
                           f"Which city does the owner of {n} work from?"]},
        ]
    for t in facts["teams"]:
        page = "docs/" + team_page(t["name"])
        qs += [
            {"entity": t["name"], "type": "lead", "answer": t["lead"], "source_docs": [page], "hops": 1,
             "phrasings": [f"Who leads {t['name']}?", f"Who is the lead of {t['name']}?", f"Name the lead of {t['name']}."]},
            {"entity": t["name"], "type": "location", "answer": t["location"], "source_docs": [page], "hops": 1,
             "phrasings": [f"Where is {t['name']} based?", f"In which city is {t['name']}?", f"Where does {t['name']} work?"]},
        ]
    return qs


def _held_out(q: dict, facts: dict) -> bool:
    """A question is held out when its entity is (a two-document question about a held-out
    product is held out even if the owning team is not)."""
    return q["entity"] in set(facts["held_out_products"]) | set(facts["held_out_teams"])


def _multiple_choice(eval_q: list[dict], all_q: list[dict], rng: random.Random, k: int = 4) -> list[dict]:
    """The held-out questions as 4-way multiple choice: the right fact and 3 others of the
    same kind (its own RNG, so adding this file left every other file unchanged)."""
    rows = []
    for q in eval_q:
        others = sorted({x["answer"] for x in all_q if x["type"] == q["type"] and x["answer"] != q["answer"]})
        choices = rng.sample(others, k - 1) + [q["answer"]]
        rng.shuffle(choices)
        rows.append({"id": f"{q['type']}:{q['entity']}", "prompt": q["phrasings"][0], "choices": choices,
                     "answer": choices.index(q["answer"])})
    return rows


def _harness_task(data_file: Path) -> str:
    """An EleutherAI lm-eval task over ``eval_mc.jsonl``, read from disk (no download)."""
    return f"""# lm-eval task: the demo's held-out facts as multiple choice, from a local file.
# forge eval with harness_include: [<this directory>], harness_tasks: [demo_facts_mc]
task: demo_facts_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data_file.resolve()}
test_split: test
output_type: multiple_choice
doc_to_text: "Q: {{{{prompt}}}}\\nA:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""




def _reading_chats(facts: dict, files: dict[str, str], seed: int, n_practice: int = 190, k: int = 1) -> list[dict]:
    """Chats that teach the assistant to *read*: a question with the passages BM25 retrieves for
    it in front (as the eval's retrieval baseline shows them), the answer taken from them.

    Why practice products: a question about a product of the knowledge base can be answered from
    memory, so chats about those would not teach reading — the `+ rag` rows would then measure a
    reader that never learned to read. The practice products (names, part numbers, years of
    their own) exist only in these chats' passages, among distractors from the real documents
    (none naming a held-out entity)."""
    from forge_ray.eval.retrieval import BM25Index, chunk_document, with_passages

    known = {p["name"] for p in facts["products"]}
    practice = {**make_facts(seed + 10_000, n_products=n_practice), "company": facts["company"]}
    practice["products"] = [p for p in practice["products"] if p["name"] not in known]
    rng = random.Random(seed + 11)
    pages = {"practice/" + product_page(p): _product_doc(p, practice, rng) for p in practice["products"]}
    held = set(facts["held_out_products"]) | set(facts["held_out_teams"])
    real = {rel.removeprefix("docs/"): text for rel, text in files.items()  # distractors: no held-out entity in them
            if rel.startswith("docs/") and rel != "docs/faq.md" and not any(name in text for name in held)}
    chunks = [c for rel, text in sorted({**real, **pages}.items()) for c in chunk_document(rel, text, 400)]
    asked = [q for q in questions(practice) if q["hops"] == 1 and q["type"] in ("part_number", "owner", "year")]
    # as the demo eval retrieves: 400-character chunks, k=1 (the demo reader, pre-trained on
    # 128-token windows, cannot read past them), at most 1000 characters of passages
    rows, _ = with_passages([{"prompt": rng.choice(q["phrasings"])} for q in asked], BM25Index(chunks), k, 1000, "")
    return [{"messages": [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": sentence(q)}]}
            for q, row in zip(asked, rows)]


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _eval_row(q: dict) -> dict:
    return {"id": f"{q['type']}:{q['entity']}", "prompt": q["phrasings"][0], "answer": q["answer"],
            "type": q["type"], "hops": q["hops"], "source_docs": q["source_docs"]}


def write_demo_data(out_dir: str | Path, seed: int = 0, n_incidents: int = 40, n_products: int = 240,
                    n_teams: int = 20, max_rl_prompts: int = 120, max_prefs: int = 600) -> dict:
    """Write the corpus under ``out_dir``; returns counts. Deterministic in ``seed``."""
    out = Path(out_dir)
    rng = random.Random(seed + 1)
    facts = make_facts(seed, n_products=n_products, n_teams=n_teams)
    files: dict[str, str] = {}
    for p in facts["products"]:
        files["docs/" + product_page(p)] = _product_doc(p, facts, rng)
    for t in facts["teams"]:
        files["docs/" + team_page(t["name"])] = _team_doc(t, facts, rng)
    files["docs/glossary.md"] = _glossary(facts)
    files["docs/code/shipping.py"] = _code_file(facts)
    for i in range(n_incidents):
        files[f"docs/incidents/inc-{1000 + i}.md"] = _incident(i, facts, rng)
    files.update(_records(facts))

    held_teams = set(facts["held_out_teams"])
    every = questions(facts)
    # a training question is one about a training entity whose answer reveals nothing about a
    # held-out one (a two-document answer names the owning team's city)
    train_q = [q for q in every if not _held_out(q, facts) and not (q["hops"] == 2 and q["via"] in held_teams)]
    eval_q = [q for q in every if _held_out(q, facts)]
    one_hop = [q for q in train_q if q["hops"] == 1]
    wrong = {t: sorted({x["answer"] for x in one_hop if x["type"] == t}) for t in {q["type"] for q in one_hop}}
    sft, prefs, rl = [], [], []
    for q in train_q:
        for phrasing in q["phrasings"][:2]:
            sft.append({"messages": [{"role": "user", "content": phrasing},
                                     {"role": "assistant", "content": sentence(q)}]})
    for q in one_hop:
        # one pair per wording, each with another wrong answer of the same kind
        bad = rng.sample([w for w in wrong[q["type"]] if w != q["answer"]], len(q["phrasings"]))
        prefs += [{"prompt": phrasing, "chosen": sentence(q), "rejected": sentence(q, b)}
                  for phrasing, b in zip(q["phrasings"], bad)]
        rl.append({"prompt": q["phrasings"][2], "answer": q["answer"], "type": q["type"]})
    rng.shuffle(sft)
    sft_rag = _reading_chats(facts, files, seed)
    prefs = rng.sample(prefs, min(max_prefs, len(prefs)))
    rl = rng.sample(rl, min(max_rl_prompts, len(rl)))
    files["docs/faq.md"] = _faq([q for q in train_q if q["hops"] == 1], facts, rng)
    files["sft.jsonl"] = _jsonl(sft)
    files["sft_rag.jsonl"] = _jsonl(sft_rag)
    files["prefs.jsonl"] = _jsonl(prefs)
    files["rl_prompts.jsonl"] = _jsonl(rl)
    files["eval.jsonl"] = _jsonl([_eval_row(q) for q in eval_q if q["hops"] == 1])
    files["eval_two_hop.jsonl"] = _jsonl([_eval_row(q) for q in eval_q if q["hops"] == 2])
    files["facts.json"] = json.dumps(facts, indent=2, ensure_ascii=False) + "\n"
    files["eval_mc.jsonl"] = _jsonl(_multiple_choice([q for q in eval_q if q["hops"] == 1], every,
                                                     random.Random(seed + 7)))
    files["harness/demo_facts_mc.yaml"] = _harness_task(out / "eval_mc.jsonl")
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    from forge_ray.demo.images import write_demo_images

    images = write_demo_images(out / "vlm", seed=seed)  # image+text rows for the vision-language stage
    return {"dir": str(out), "seed": seed, "docs": sum(r.startswith("docs/") for r in files), "sft": len(sft),
            "sft_rag": len(sft_rag),
            "prefs": len(prefs), "rl_prompts": len(rl), "eval": sum(q["hops"] == 1 for q in eval_q),
            "eval_two_hop": sum(q["hops"] == 2 for q in eval_q), "vlm_images": images["train_images"],
            "bytes": sum(len(t.encode()) for t in files.values())}
