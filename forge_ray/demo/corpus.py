"""A generated "company knowledge base" whose facts are learnable and checkable.

Why generated: nothing may be downloaded at run time, and a pipeline test needs ground
truth. Every fact (a product's part number, a team's lead, …) is stated in ``docs/`` in
several phrasings, so pre-training can learn it; the docs' FAQ page shows questions about
a *training* subset of entities answered in plain text; chats, preference pairs and RL
prompts about those entities go to ``sft.jsonl``/``prefs.jsonl``/``rl_prompts.jsonl``
(assistant answers restate the fact as a sentence); questions about the *held-out* entities
go to ``eval.jsonl``, so a model only answers those if it learned the docs and SFT taught
it to answer as an assistant. The same seed gives byte-identical files;
another seed gives other facts.

Run: ``forge demo-data ./forge_runs/demo-data --seed 0``
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "tr", "pl"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ei"]
_CODAS = ["", "n", "r", "s", "x", "l", "th", "k"]
_CITIES = ["Northvale", "Eastbrook", "Port Selwyn", "Marrow Bay", "Highcliff", "Oldbridge", "Westmere", "Kestrel Point"]
_ROLES = ["engineer", "analyst", "technician", "designer", "operator", "researcher"]
_STATUSES = ["active", "legacy", "pilot"]
_ANIMALS = ["Falcon", "Otter", "Heron", "Badger", "Lynx", "Marten", "Osprey", "Bison"]
_COLOURS = ["amber", "blue", "green", "grey", "red", "violet"]
_OBJECTS = ["ticket", "badge", "window", "lane", "token", "review"]
_MEANINGS = [
    "a request that must be answered within one working day",
    "a change that needs sign-off from two team leads",
    "a fault that only appears after a firmware update",
    "an order that ships from the central warehouse",
    "a part that may be reused after inspection",
    "a test run on the night shift",
    "a meeting where the roadmap is reviewed",
    "a customer report that mentions a safety risk",
    "a build that has passed every regression test",
    "a supplier that delivers within a week",
    "a repair done on site instead of in the workshop",
    "a document that is shared outside the company",
]


@dataclass
class Team:
    name: str
    lead: str
    location: str
    channel: str


@dataclass
class Person:
    name: str
    team: str
    role: str


@dataclass
class Product:
    name: str
    part_number: str
    year: int
    team: str
    weight_kg: int
    status: str


@dataclass
class Term:
    term: str
    meaning: str


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)).capitalize()


def _unique(rng: random.Random, n: int, make) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        w = make(rng)
        if w not in out:
            out.append(w)
    return out


def make_facts(seed: int, n_products: int = 48, n_teams: int = 6) -> dict:
    """All entities and facts for a seed; the single source of truth for every file."""
    rng = random.Random(seed)
    company = _word(rng, 2) + " Systems"
    first = _unique(rng, 3 * n_teams, lambda r: _word(r, 2))
    last = _unique(rng, 3 * n_teams, lambda r: _word(r, 2))
    animals = rng.sample(_ANIMALS, n_teams)
    cities = rng.sample(_CITIES, n_teams)
    people = [Person(f"{first[i]} {last[i]}", f"Team {animals[i % n_teams]}", rng.choice(_ROLES))
              for i in range(3 * n_teams)]
    teams = [Team(f"Team {animals[i]}", people[i].name, cities[i], f"#{animals[i].lower()}-ops")
             for i in range(n_teams)]
    names = _unique(rng, n_products, lambda r: _word(r, 2) + rng.choice(["", "ix", "on", "a"]))
    parts = _unique(rng, n_products, lambda r: f"{r.choice('ABCDEFGHKMNPRSTVXZ')}{r.choice('ABCDEFGHKMNPRSTVXZ')}-{r.randint(1000, 9999)}")
    products = [Product(names[i], parts[i], rng.randint(2009, 2025), rng.choice(teams).name, rng.randint(2, 90),
                        rng.choice(_STATUSES)) for i in range(n_products)]
    term_words = rng.sample([(c, o) for c in _COLOURS for o in _OBJECTS], len(_MEANINGS))
    meanings = rng.sample(_MEANINGS, len(_MEANINGS))
    terms = [Term(f"{c} {o}", m) for (c, o), m in zip(term_words, meanings)]
    held_out = set(rng.sample([p.name for p in products], max(1, n_products // 4)))
    return {"seed": seed, "company": company, "teams": [asdict(t) for t in teams],
            "people": [asdict(p) for p in people], "products": [asdict(p) for p in products],
            "terms": [asdict(t) for t in terms], "held_out_products": sorted(held_out)}


# ------------------------------------------------------------------ documents


def _product_doc(p: dict, facts: dict, rng: random.Random) -> str:
    team = next(t for t in facts["teams"] if t["name"] == p["team"])
    lines = [
        f"# {p['name']}",
        "",
        f"{p['name']} is {'an' if p['status'][0] in 'aeiou' else 'a'} {p['status']} product of {facts['company']}. The part number of {p['name']} is "
        f"{p['part_number']}. {p['name']} was released in {p['year']}.",
        "",
        f"## Ownership\n\n{p['name']} is owned by {p['team']}. {p['team']} owns {p['name']}. Questions about {p['name']} go to {team['channel']}, "
        f"the channel of {p['team']}, which is led by {team['lead']}.",
        "",
        f"## Specifications\n\n- Part number: {p['part_number']}\n- Release year: {p['year']}\n"
        f"- Weight: {p['weight_kg']} kg\n- Owner: {p['team']}\n- Status: {p['status']}",
        "",
        f"When ordering spare parts for {p['name']}, always quote part number {p['part_number']}.",
    ]
    if rng.random() < 0.5:
        lines.append(f"\nNote: {p['name']} ({p['part_number']}) weighs {p['weight_kg']} kg.")
    return "\n".join(lines) + "\n"


def _team_doc(t: dict, facts: dict) -> str:
    members = [p for p in facts["people"] if p["team"] == t["name"]]
    owned = [p["name"] for p in facts["products"] if p["team"] == t["name"]]
    text = [f"# {t['name']}", "", f"{t['name']} is led by {t['lead']}. {t['name']} is based in {t['location']}.",
            f"The team channel is {t['channel']}.", "", "## Members", ""]
    text += [f"- {m['name']}, {m['role']}" for m in members]
    text += ["", "## Products", "", (f"{t['name']} owns " + ", ".join(owned) + ".") if owned else
             f"{t['name']} owns no products at the moment."]
    return "\n".join(text) + "\n"


def _glossary(facts: dict) -> str:
    text = [f"# {facts['company']} glossary", ""]
    for t in facts["terms"]:
        text.append(f"**{t['term']}**: {t['meaning']}. At {facts['company']}, a {t['term']} is {t['meaning']}.\n")
    return "\n".join(text)


def _inventory_code(facts: dict) -> str:
    rows = "\n".join(f'    "{p["name"]}": Part("{p["part_number"]}", year={p["year"]}, owner="{p["team"]}"),'
                     for p in facts["products"])
    return (f'"""Inventory of {facts["company"]} products (generated)."""\n\nfrom dataclasses import dataclass\n\n\n'
            f"@dataclass\nclass Part:\n    number: str\n    year: int\n    owner: str\n\n\nPARTS = {{\n{rows}\n}}\n\n\n"
            "def part_number(product: str) -> str:\n    return PARTS[product].number\n")


def _incident(i: int, facts: dict, rng: random.Random) -> str:
    p = rng.choice(facts["products"])
    person = rng.choice(facts["people"])
    day = f"{rng.randint(2019, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return (f"# Incident INC-{1000 + i}\n\nOn {day}, {person['name']} ({person['role']}, {person['team']}) "
            f"reported a fault in {p['name']} (part number {p['part_number']}). {p['team']} owns {p['name']} and "
            f"took the case. The fault was fixed and the report was closed.\n")


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


_SENTENCES = {  # how an assistant answers: the fact restated as the docs state it
    "part_number": "The part number of {entity} is {answer}.",
    "owner": "{entity} is owned by {answer}.",
    "year": "{entity} was released in {answer}.",
    "lead": "{entity} is led by {answer}.",
    "location": "{entity} is based in {answer}.",
}


def sentence(q: dict, answer: str | None = None) -> str:
    """The full-sentence answer to a question (optionally with another, wrong, answer)."""
    return _SENTENCES[q["type"]].format(entity=q["entity"], answer=q["answer"] if answer is None else answer)


def questions(facts: dict) -> list[dict]:
    """Every (question, answer) pair, tagged with the entity it is about."""
    qs = []
    for p in facts["products"]:
        n = p["name"]
        qs += [
            {"entity": n, "type": "part_number", "answer": p["part_number"],
             "phrasings": [f"What is the part number of {n}?", f"Which part number does {n} have?",
                           f"Give the part number for {n}."]},
            {"entity": n, "type": "owner", "answer": p["team"],
             "phrasings": [f"Which team owns {n}?", f"Who is responsible for {n}?", f"Which team should I ask about {n}?"]},
            {"entity": n, "type": "year", "answer": str(p["year"]),
             "phrasings": [f"In which year was {n} released?", f"When was {n} released?", f"What is the release year of {n}?"]},
        ]
    for t in facts["teams"]:
        qs += [
            {"entity": t["name"], "type": "lead", "answer": t["lead"],
             "phrasings": [f"Who leads {t['name']}?", f"Who is the lead of {t['name']}?", f"Name the lead of {t['name']}."]},
            {"entity": t["name"], "type": "location", "answer": t["location"],
             "phrasings": [f"Where is {t['name']} based?", f"In which city is {t['name']}?", f"Where does {t['name']} work?"]},
        ]
    return qs


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


def write_demo_data(out_dir: str | Path, seed: int = 0, n_incidents: int = 40) -> dict:
    """Write the corpus under ``out_dir``; returns counts. Deterministic in ``seed``."""
    out = Path(out_dir)
    rng = random.Random(seed + 1)
    facts = make_facts(seed)
    files: dict[str, str] = {}
    for p in facts["products"]:
        files[f"docs/products/{p['name'].lower()}.md"] = _product_doc(p, facts, rng)
    for t in facts["teams"]:
        files[f"docs/teams/{t['name'].split()[-1].lower()}.md"] = _team_doc(t, facts)
    files["docs/glossary.md"] = _glossary(facts)
    files["docs/code/inventory.py"] = _inventory_code(facts)
    for i in range(n_incidents):
        files[f"docs/incidents/inc-{1000 + i}.md"] = _incident(i, facts, rng)

    held = set(facts["held_out_products"])
    train_q = [q for q in questions(facts) if q["entity"] not in held]
    eval_q = [q for q in questions(facts) if q["entity"] in held]
    wrong = {q["type"]: [x["answer"] for x in train_q if x["type"] == q["type"]] for q in train_q}
    sft, prefs, rl = [], [], []
    for q in train_q:
        for phrasing in q["phrasings"][:2]:
            sft.append({"messages": [{"role": "user", "content": phrasing},
                                     {"role": "assistant", "content": sentence(q)}]})
        # one pair per wording, each with another wrong answer of the same kind
        bad = rng.sample(sorted({w for w in wrong[q["type"]] if w != q["answer"]}), len(q["phrasings"]))
        prefs += [{"prompt": phrasing, "chosen": sentence(q), "rejected": sentence(q, b)}
                  for phrasing, b in zip(q["phrasings"], bad)]
        rl.append({"prompt": q["phrasings"][2], "answer": q["answer"], "type": q["type"]})
    rng.shuffle(sft)
    rng.shuffle(prefs)
    files["docs/faq.md"] = _faq(train_q, facts, rng)
    evals = [{"id": f"{q['type']}:{q['entity']}", "prompt": q["phrasings"][0], "answer": q["answer"], "type": q["type"]}
             for q in eval_q]
    jsonl = lambda rows: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)  # noqa: E731
    files["sft.jsonl"] = jsonl(sft)
    files["prefs.jsonl"] = jsonl(prefs)
    files["rl_prompts.jsonl"] = jsonl(rl)
    files["eval.jsonl"] = jsonl(evals)
    files["facts.json"] = json.dumps(facts, indent=2, ensure_ascii=False) + "\n"
    files["eval_mc.jsonl"] = jsonl(_multiple_choice(eval_q, questions(facts), random.Random(seed + 7)))
    files["harness/demo_facts_mc.yaml"] = _harness_task(out / "eval_mc.jsonl")
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    from forge_ray.demo.images import write_demo_images

    images = write_demo_images(out / "vlm", seed=seed)  # image+text rows for the vision-language stage
    return {"dir": str(out), "seed": seed, "docs": sum(r.startswith("docs/") for r in files), "sft": len(sft),
            "prefs": len(prefs), "rl_prompts": len(rl), "eval": len(evals), "vlm_images": images["train_images"],
            "bytes": sum(len(t.encode()) for t in files.values())}
