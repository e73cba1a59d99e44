"""The data stage end to end on Ray Data: quarantine, dedup precision/recall, PII, packing,
SFT masks, determinism, and resumable streaming of what it wrote."""

from __future__ import annotations

import itertools
import json
import random
import shutil

import pyarrow.parquet as pq
import pytest

from forge_ray import api
from forge_ray.data.stream import PackedStream, dataset_files
from tests.conftest import forge, read_json

pytestmark = pytest.mark.slow
WORDS = ("alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega river stone cloud field metal glass "
         "north south paper light engine valve pump filter sensor cable board panel frame wheel gear shaft motor "
         "spring brake clutch drive chain belt screw bolt nut washer rivet clamp hinge lever pulley").split()
PII_LINES = ["Write to jane.roe@example.org about the pump.", "Call +1 415-555-0199 for the valve.",
             "Gateway at 192.168.10.20 serves the board.", "Token sk-live-9fK2mQ7xLp3Rt8Vw1Zy4 leaked."]


def _doc(rng: random.Random, n: int = 120) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _edit(rng: random.Random, text: str, fraction: float = 0.05) -> str:
    words = text.split()
    for i in rng.sample(range(len(words)), max(1, int(len(words) * fraction))):
        words[i] = rng.choice(WORDS).upper()
    return " ".join(words)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A corpus with known unique docs, exact/near duplicates, PII, and bad lines."""
    root = tmp_path_factory.mktemp("planted")
    rng = random.Random(7)
    unique = [_doc(rng) for _ in range(120)]
    rows = [{"text": t} for t in unique]
    exact = [{"text": "  " + unique[i].upper() + "\n"} for i in range(0, 20)]  # case/space variants
    near = [{"text": _edit(rng, unique[i])} for i in range(20, 60)]  # 5% of words changed
    pii = [{"text": line} for line in PII_LINES]
    eval_q = "Which gear ratio does the north engine use when the river pump runs at full load overnight?"
    (root / "eval.jsonl").write_text(json.dumps({"prompt": eval_q, "answer": "7:3"}) + "\n")
    leaked = [{"text": "Forum copy: " + eval_q + " Answer: 7:3."}]  # an eval question leaked into training data
    good = rows + pii + exact + near + leaked
    lines = [json.dumps(r) for r in good]
    bad_at = {30: '{"text": "truncated', 55: '{"body": "missing field"}', 80: '{"text": 42}'}
    for line_no in sorted(bad_at):  # 1-based line numbers in the final file
        lines.insert(line_no - 1, bad_at[line_no])
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    (root / "latin1.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    (root / "empty.jsonl").write_bytes(b"")
    n_planted = len(exact) + len(near)
    return {"root": root, "bad": bad_at, "leaked": leaked[0]["text"], "n_unique": len(unique), "n_exact": len(exact), "n_near": len(near),
            "n_planted": n_planted, "n_good": len(good)}


def _spec(planted, name, **extra):
    root = planted["root"]
    return {"kind": "data", "name": name, "on_error": "skip", "max_bad_fraction": 0.1, "seq_len": 64,
            "clean": {"shingle_size": 3, "minhash_threshold": 0.6, "decontaminate": [str(root / "eval.jsonl")]},
            "sources": [{"path": str(root / "corpus.jsonl")}, {"path": str(root / "latin1.jsonl")},
                        {"path": str(root / "empty.jsonl")}], **extra}


@pytest.fixture(scope="module")
def prepared(ray_connected, planted, tokenizer_dir, tmp_path_factory):
    storage = tmp_path_factory.mktemp("data-runs")
    info = api.run(_spec(planted, "planted", tokenizer=str(tokenizer_dir)), storage=str(storage), show_progress=False)
    return {"info": info, "dir": storage / "planted", "storage": storage}


@pytest.fixture(scope="module")
def tokenizer_dir(ray_connected, demo_data, tmp_path_factory):
    storage = tmp_path_factory.mktemp("tok")
    api.run({"kind": "tokenizer", "name": "tok", "vocab_size": 1024,
             "sources": [{"path": str(demo_data / "docs")}, {"path": str(demo_data / "sft.jsonl"), "format": "chat"}]},
            storage=str(storage), show_progress=False)
    return storage / "tok" / "tokenizer"


def test_quarantine_holds_exactly_the_bad_rows(prepared, planted):
    q = [json.loads(line) for line in (prepared["dir"] / "quarantine.jsonl").read_text().splitlines()]
    got = {(r["file"].rsplit("/", 1)[-1], r["line"]) for r in q}
    want = {("corpus.jsonl", n) for n in planted["bad"]} | {("latin1.jsonl", 2), ("empty.jsonl", None)}
    assert got == want
    problems = {(r["file"].rsplit("/", 1)[-1], r["line"]): r["problem"] for r in q}
    assert "malformed JSON" in problems[("corpus.jsonl", 30)]
    assert "missing field 'text'" in problems[("corpus.jsonl", 55)]
    assert "must be a string, got int" in problems[("corpus.jsonl", 80)]
    assert "invalid UTF-8" in problems[("latin1.jsonl", 2)] and "empty" in problems[("empty.jsonl", None)]
    m = read_json(prepared["dir"] / "manifest.json")
    assert m["metrics"]["quarantined"] == len(want) == 5
    assert m["metrics"]["docs_in"] == planted["n_good"] + 1 + len(want)  # + the good latin1 line


def test_dedup_removes_planted_duplicates_with_high_precision_and_recall(prepared, planted):
    report = json.loads((prepared["dir"] / "report" / "report.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    exact_removed = steps["exact_dedup"]["details"]["removed"]
    near_removed = steps["near_dedup"]["details"]["removed"]
    assert exact_removed == planted["n_exact"]
    kept = {json.loads(line)["text"] for line in _kept_texts(prepared["dir"])}
    # a planted near-duplicate was removed iff its edited text is gone
    rng_texts = [json.loads(line)["text"] for line in (planted["root"] / "corpus.jsonl").read_text().splitlines()
                 if line.startswith('{"text": "') and line.endswith('"}')]
    near_texts = [t for t in rng_texts if any(w.isupper() for w in t.split()) and not t.startswith("  ")]
    removed_near = sum(t not in kept for t in near_texts)
    recall = removed_near / planted["n_near"]
    precision = removed_near / max(near_removed, 1)
    print(f"near-dup removal: recall {recall:.3f}, precision {precision:.3f}")
    assert recall >= 0.9 and precision >= 0.95
    assert len(kept) == planted["n_unique"] + len(PII_LINES) + 1 + (planted["n_near"] - removed_near)


def test_decontamination_drops_documents_sharing_long_ngrams_with_eval(prepared, planted):
    texts = pq.read_table(prepared["dir"] / "docs").column("text").to_pylist()
    assert planted["leaked"] not in texts
    assert read_json(prepared["dir"] / "manifest.json")["metrics"]["decontaminate_removed"] == 1


def _kept_texts(run_dir):
    """The cleaned documents, recovered from the packed rows' source documents (docs dataset)."""
    return [json.dumps({"text": t}) for t in pq.read_table(run_dir / "docs").column("text").to_pylist()]


def test_pii_is_scrubbed_in_the_output(prepared):
    texts = pq.read_table(prepared["dir"] / "docs").column("text").to_pylist()
    joined = "\n".join(texts)
    for secret in ("jane.roe@example.org", "415-555-0199", "192.168.10.20", "sk-live-9fK2mQ7xLp3Rt8Vw1Zy4"):
        assert secret not in joined
    for placeholder in ("<EMAIL>", "<PHONE>", "<IP_ADDRESS>", "<API_KEY>"):
        assert placeholder in joined
    assert read_json(prepared["dir"] / "manifest.json")["metrics"]["pii_replaced"] == 4


def test_packed_rows_hold_every_token_once(prepared, tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    texts = pq.read_table(prepared["dir"] / "docs").column("text").to_pylist()
    expected = [t for text in texts for t in tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]]
    table = pq.read_table(dataset_files(prepared["dir"] / "dataset"))
    got = [t for ids, mask in zip(table.column("input_ids").to_pylist(), table.column("loss_mask").to_pylist())
           for t, m in zip(ids, mask) if m]
    assert got == expected
    assert all(len(ids) == 64 for ids in table.column("input_ids").to_pylist())
    assert read_json(prepared["dir"] / "manifest.json")["metrics"]["tokens"] == len(expected)


def test_report_files(prepared):
    report = prepared["dir"] / "report"
    assert (report / "lengths.png").stat().st_size > 1000
    md = (report / "report.md").read_text()
    assert "| near_dedup |" in md and "Top sources" in md


def test_same_seed_gives_identical_dataset(ray_connected, prepared, planted, tokenizer_dir):
    api.run(_spec(planted, "planted-again", tokenizer=str(tokenizer_dir)), storage=str(prepared["storage"]),
            show_progress=False)
    a = pq.read_table(dataset_files(prepared["dir"] / "dataset"))
    b = pq.read_table(dataset_files(prepared["storage"] / "planted-again" / "dataset"))
    assert a.equals(b)


def test_stream_of_prepared_data_resumes_exactly(prepared):
    files = dataset_files(prepared["dir"] / "dataset")
    full = [b["input_ids"].tolist() for b in itertools.islice(iter(PackedStream(files, batch_size=4, seed=1)), 12)]
    first = PackedStream(files, batch_size=4, seed=1)
    head = [b["input_ids"].tolist() for b in itertools.islice(iter(first), 5)]
    again = PackedStream(files, batch_size=4, seed=1)
    again.load_state_dict(first.state_dict())
    tail = [b["input_ids"].tolist() for b in itertools.islice(iter(again), 7)]
    assert head + tail == full


def test_sft_layout_masks_exactly_the_assistant_spans(ray_connected, demo_data, tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    spec = {"kind": "data", "name": "sft-data", "tokenizer": str(tokenizer_dir), "seq_len": 64,
            "clean": {"near_dedup": False},
            "sources": [{"path": str(demo_data / "sft.jsonl"), "format": "chat"}]}
    api.run(spec, storage=str(tmp_path), show_progress=False)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    table = pq.read_table(dataset_files(tmp_path / "sft-data" / "dataset"))
    answers = []
    for ids, mask, seg in zip(*(table.column(c).to_pylist() for c in ("input_ids", "loss_mask", "segment_ids"))):
        for s in sorted(set(seg) - {0}):
            answers.append(tok.decode([t for t, m, g in zip(ids, mask, seg) if m and g == s]))
    chats = [json.loads(line) for line in (demo_data / "sft.jsonl").read_text().splitlines()]
    assert sorted(answers) == sorted(c["messages"][1]["content"] + "<|end|>" for c in chats)


def test_weighted_mix_is_reproducible_and_proportional(ray_connected, tmp_path):
    for name, n in (("a", 50), ("b", 200)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": f"{name} doc {i}"}) + "\n"
                                                        for i in range(n)))
    spec = {"kind": "data", "name": "mix1", "mix_total": 400, "seed": 5,
            "clean": {"exact_dedup": False, "near_dedup": False, "pii": False},
            "sources": [{"path": str(tmp_path / "a.jsonl"), "weight": 3}, {"path": str(tmp_path / "b.jsonl")}]}
    api.run(spec, storage=str(tmp_path / "runs"), show_progress=False)
    api.run({**spec, "name": "mix2"}, storage=str(tmp_path / "runs"), show_progress=False)
    one = pq.read_table(tmp_path / "runs" / "mix1" / "docs").column("text").to_pylist()
    two = pq.read_table(tmp_path / "runs" / "mix2" / "docs").column("text").to_pylist()
    assert one == two
    share_a = sum(t.startswith("a ") for t in one) / len(one)
    assert 330 <= len(one) <= 470 and 0.65 <= share_a <= 0.85  # 3:1 by weight; source a is repeated ~6x
    per = read_json(tmp_path / "runs" / "mix1" / "manifest.json")
    assert per["status"] == "succeeded"


def test_truncated_line_fails_with_exit_2_naming_file_and_line(ray_cluster, demo_data, tokenizer_dir, tmp_path):
    corpus = shutil.copytree(demo_data, tmp_path / "corpus")
    lines = (corpus / "sft.jsonl").read_text().splitlines()
    lines[6] = lines[6][: len(lines[6]) // 2]
    (corpus / "sft.jsonl").write_text("\n".join(lines) + "\n")
    result = forge("run", "jobs/configs/tiny/data.yaml", "--storage", str(tmp_path / "runs"),
                   "--set", f"tokenizer={tokenizer_dir}",
                   env={"FORGE_DEMO_DATA": str(corpus), "RAY_ADDRESS": ray_cluster["gcs"]})
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{corpus / 'sft.jsonl'}:7" in result.stderr and "malformed JSON" in result.stderr
