"""Cleaning primitives: PII placeholders, MinHash accuracy, LSH banding, union-find."""

from __future__ import annotations

import random

import numpy as np
import pytest

from forge_ray.data import clean

PII = {
    "alice.smith@example.co.uk": "<EMAIL>",
    "+44 20 7946 0958": "<PHONE>",
    "(415) 555-0132": "<PHONE>",
    "415-555-0132": "<PHONE>",
    "10.20.30.40": "<IP_ADDRESS>",
    "4111 1111 1111 1111": "<CREDIT_CARD>",
    "5500-0000-0000-0004": "<CREDIT_CARD>",
    "sk-live-4eC39HqLyjWDarjtT1zdp7dc": "<API_KEY>",
    "AKIAIOSFODNN7EXAMPLE": "<API_KEY>",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789": "<API_KEY>",
}
ORDINARY = [
    "Part DV-3480 was released in 2019 and weighs 12 kg.",
    "On 2021-03-04 the team shipped version 1.2.3 to 1,250 customers.",
    "Call the function with timeout=30 and retries=5; see RFC 7231 section 6.5.",
    "The order 1234 5678 is not a card number (fails Luhn) and stays.",
    "def f(x):\n    return x * 1000000 + 42  # ids like 1234567890123 stay\n",
]


@pytest.mark.parametrize("value,placeholder", PII.items())
def test_planted_pii_is_replaced_with_typed_placeholder(value, placeholder):
    text = f"Contact: {value}. Thanks!"
    out, counts = clean.scrub_pii(text)
    assert out == f"Contact: {placeholder}. Thanks!"
    assert counts == {placeholder.strip("<>"): 1}


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_untouched(text):
    assert clean.scrub_pii(text) == (text, {})


def test_secret_assignment_keeps_the_name():
    out, counts = clean.scrub_pii('db_password = "hunter2hunter2"\nAPI_KEY: abcd1234efgh5678')
    assert out == 'db_password = "<SECRET>"\nAPI_KEY: <SECRET>' and counts == {"SECRET": 2}


def test_minhash_estimates_jaccard_without_bias():
    params = clean.minhash_params(128, seed=0)
    vocab = [f"w{i}" for i in range(40)]
    errors = []
    for trial in range(40):
        rng = random.Random(trial)
        words = [rng.choice(vocab) for _ in range(150)]
        edited = list(words)
        for i in rng.sample(range(150), rng.randint(3, 30)):
            edited[i] = "EDIT"
        a, b = " ".join(words), " ".join(edited)
        true = len(clean.shingles(a, 3) & clean.shingles(b, 3)) / len(clean.shingles(a, 3) | clean.shingles(b, 3))
        errors.append(clean.estimated_jaccard(clean.minhash(a, 3, params), clean.minhash(b, 3, params)) - true)
    assert abs(np.mean(errors)) < 0.02 and np.std(errors) < 0.07  # binomial sd at 128 perms is ≤ 0.044


@pytest.mark.parametrize("threshold", [0.5, 0.6, 0.7, 0.8, 0.9])
def test_lsh_banding_keeps_recall_at_the_threshold_with_fewest_candidates(threshold):
    bands, rows = clean.lsh_params(threshold, 128)
    assert bands * rows == 128
    p = lambda s, b=bands, r=rows: 1 - (1 - s**r) ** b  # noqa: E731
    assert p(threshold) >= 0.95
    longer = [r for r in (1, 2, 4, 8, 16, 32, 64, 128) if r > rows]
    assert all(1 - (1 - threshold**r) ** (128 // r) < 0.95 for r in longer)  # more rows would lose recall


def test_normalised_hash_ignores_case_and_spacing():
    assert clean.content_hash("Hello   World\n") == clean.content_hash("hello world")
    assert clean.content_hash("hello world") != clean.content_hash("hello there world")


def test_union_find_keeps_the_smallest_id_per_group():
    uf = clean.UnionFind()
    for a, b in [("d3", "d1"), ("d4", "d3"), ("d7", "d9")]:
        uf.union(a, b)
    assert uf.removed() == {"d3", "d4", "d9"}


def test_eval_ngrams_use_whole_short_fields_but_not_tiny_ones(tmp_path):
    import json

    from forge_ray.data.pipeline import eval_ngrams

    long_q = " ".join(f"w{i}" for i in range(20))
    path = tmp_path / "eval.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (
        {"prompt": long_q, "answer": "42"},
        {"prompt": "one two three four five six seven eight nine", "answer": "x"},
        {"prompt": "too short to matter", "answer": "y"})) + "\n")
    grams = eval_ngrams([str(path)], 13)
    assert len(grams[13]) == 20 - 13 + 1
    assert grams[9] == {"one two three four five six seven eight nine"}
    assert set(grams) == {13, 9}


def test_the_split_follows_content_not_the_file_a_document_came_from():
    """A run's Parquet files are named afresh on every write: a split keyed on ``doc_id``
    (which names the file) moved documents between train and validation on each rerun."""
    from forge_ray.data import stage as data_stage
    from forge_ray.data.clean import is_heldout
    from forge_ray.tokenizer import train as tokenizer_train

    rows = [{"text": f"Team {i} is led by person {i}.", "payload": ""} for i in range(4000)]
    first = [is_heldout({**r, "doc_id": f"000:aaa_000000-0.parquet:{i:09d}"}, 0.1, 0) for i, r in enumerate(rows)]
    again = [is_heldout({**r, "doc_id": f"000:bbb_000000-0.parquet:{i:09d}"}, 0.1, 0) for i, r in enumerate(rows)]
    assert first == again and 0.08 < sum(first) / len(rows) < 0.12
    assert first != [is_heldout(r, 0.1, 1) for r in rows]  # the seed still chooses
    assert [tokenizer_train.is_heldout(r, 0.1, 0) for r in rows] == first  # the tokenizer splits by the same rule
    assert [data_stage.is_heldout(r, 0.1, 0) for r in rows] == first  # and so does the data stage
    chat = {"text": "", "payload": '{"messages": []}'}
    assert is_heldout(chat, 0.5, 0) == is_heldout({**chat, "text": "rendered"}, 0.5, 0)  # payload decides
