"""The demo company's entities and facts: one seeded generator, the single source of truth for
every file the demo corpus writes (documents, records tables, questions).

Why generated: nothing may be downloaded at run time, and a pipeline test needs ground truth.
Names are made of random syllables, so no fact can be known before training on the corpus.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "tr", "pl"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ei"]
_CODAS = ["", "n", "r", "s", "x", "l", "th", "k"]
_CITY_ENDS = ["ford", "vale", "mouth", "bridge", "haven", "wick", "stead", "port"]
_ANIMALS = ["Falcon", "Otter", "Heron", "Badger", "Lynx", "Marten", "Osprey", "Bison", "Raven", "Stoat", "Wren",
            "Ibex", "Kestrel", "Puffin", "Marmot", "Gecko", "Jackal", "Condor", "Walrus", "Tapir", "Mink", "Egret",
            "Coyote", "Dingo"]
_ROLES = ["engineer", "analyst", "technician", "designer", "operator", "researcher"]
_STATUSES = ["active", "legacy", "pilot"]
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
    founded: int


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


def word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)).capitalize()


def _unique(rng: random.Random, n: int, make, taken: set[str] | None = None) -> list[str]:
    out: list[str] = []
    seen = set(taken or ())
    while len(out) < n:
        w = make(rng)
        if w not in seen:
            out.append(w)
            seen.add(w)
    return out


def make_facts(seed: int, n_products: int = 240, n_teams: int = 20, held_out_fraction: float = 0.25) -> dict:
    """All entities and facts for a seed. A quarter of the products and of the teams are
    *held out*: no post-training data mentions them, so questions about them are answered only
    from what pre-training stored."""
    if n_teams > len(_ANIMALS):
        raise ValueError(f"at most {len(_ANIMALS)} teams")
    rng = random.Random(seed)
    company = word(rng, 2) + " Systems"
    first = _unique(rng, 3 * n_teams, lambda r: word(r, 2))
    last = _unique(rng, 3 * n_teams, lambda r: word(r, 2))
    animals = rng.sample(_ANIMALS, n_teams)
    cities = _unique(rng, n_teams, lambda r: word(r, 1) + r.choice(_CITY_ENDS))
    people = [Person(f"{first[i]} {last[i]}", f"Team {animals[i % n_teams]}", rng.choice(_ROLES))
              for i in range(3 * n_teams)]
    teams = [Team(f"Team {animals[i]}", people[i].name, cities[i], f"#{animals[i].lower()}-ops",
                  rng.randint(1995, 2020)) for i in range(n_teams)]
    taken = set(first) | set(last) | set(cities)
    names = _unique(rng, n_products, lambda r: word(r, 2) + r.choice(["", "ix", "on", "a"]), taken)
    letters = "ABCDEFGHKMNPRSTVXZ"
    parts = _unique(rng, n_products, lambda r: f"{r.choice(letters)}{r.choice(letters)}-{r.randint(1000, 9999)}")
    products = [Product(names[i], parts[i], rng.randint(2000, 2025), rng.choice(teams).name, rng.randint(2, 90),
                        rng.choice(_STATUSES)) for i in range(n_products)]
    term_words = rng.sample([(c, o) for c in _COLOURS for o in _OBJECTS], len(_MEANINGS))
    meanings = rng.sample(_MEANINGS, len(_MEANINGS))
    terms = [Term(f"{c} {o}", m) for (c, o), m in zip(term_words, meanings)]
    held_products = rng.sample([p.name for p in products], max(1, round(n_products * held_out_fraction)))
    held_teams = rng.sample([t.name for t in teams], max(1, round(n_teams * held_out_fraction)))
    return {"seed": seed, "company": company, "teams": [asdict(t) for t in teams],
            "people": [asdict(p) for p in people], "products": [asdict(p) for p in products],
            "terms": [asdict(t) for t in terms], "held_out_products": sorted(held_products),
            "held_out_teams": sorted(held_teams)}
