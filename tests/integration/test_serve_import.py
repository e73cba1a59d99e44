"""Bring your own model, serve what you trained: an HF directory imported "as if foreign"
continues pre-training on the demo corpus with validation loss falling from its starting
value; `forge serve` answers the `openai` client (chat and completions) with the same greedy
text as `transformers`, refuses requests without its key — as one local vLLM server, and as
two vLLM replicas on Ray Serve in the session's cluster; an eval pits the served endpoint
against local runs and its answers equal the local model's."""

from __future__ import annotations

import json
import os

import pytest
import torch

from forge_ray import api
from tests.conftest import _free_port, forge, read_json

pytestmark = pytest.mark.slow
KEY = "test-key-123"


def test_imported_model_continues_pretraining(ray_cluster, demo_runs, demo_data, tmp_path):
    """…with the vocabulary extended by two domain names: they become single tokens, their
    rows start from their pieces, and validation loss still falls from the starting value."""
    import shutil

    from transformers import AutoConfig, AutoTokenizer

    foreign = tmp_path / "their-model"  # an HF directory from elsewhere: no run, no lineage
    shutil.copytree(demo_runs / "demo-sft" / "model", foreign)
    out = forge("import", str(foreign), "--name", "imported-base", "--storage", str(demo_runs))
    assert out.returncode == 0, out.stderr[-2000:]
    new = ["Team Otter", "Team Lynx"]
    spec = {"kind": "pretrain", "name": "continued", "tokenizer": "imported-base", "init_from": "imported-base",
            "data": [{"path": str(demo_data / "docs")}],
            "new_tokens": new, "optim": {"lr": 1e-3, "warmup_steps": 2},
            "train": {"max_steps": 20, "micro_batch_size": 4, "seq_len": 128, "eval_every": 10, "eval_batches": 4,
                      "checkpoint_every": 0}, "resources": {"num_workers": 1}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = forge("run", str(tmp_path / "spec.json"), "--storage", str(demo_runs), env={"RAY_ADDRESS": ray_cluster["gcs"]})
    assert out.returncode == 0, out.stderr[-3000:]
    m = read_json(demo_runs / "continued" / "manifest.json")
    assert "imported-base" in m["parents"]
    start, end = m["metrics"]["start_val_loss"], m["metrics"]["val_loss"]
    print(f"continued pre-training from the imported model: val loss {start:.3f} → {end:.3f}")
    assert end < start - 0.05, (start, end)
    assert all(n > 1 for n in m["new_tokens"].values()) and sorted(m["new_tokens"]) == sorted(new)
    tok = AutoTokenizer.from_pretrained(demo_runs / "continued" / "model")
    old = AutoTokenizer.from_pretrained(foreign)
    assert len(tok) == len(old) + 2 and [len(tok(t, add_special_tokens=False)["input_ids"]) for t in new] == [1, 1]
    assert AutoConfig.from_pretrained(demo_runs / "continued" / "model").vocab_size == len(tok)


@pytest.fixture(scope="module")
def served(demo_runs):
    port = _free_port()
    refused = forge("serve", "demo-sft", "--host", "0.0.0.0", "--storage", str(demo_runs))
    assert refused.returncode == 2 and "API key" in refused.stderr
    on_cmdline = forge("serve", "demo-sft", "--api-key", KEY, "--storage", str(demo_runs))
    assert on_cmdline.returncode == 2 and "--api-key-file" in on_cmdline.stderr  # never a key in `ps`
    out = forge("serve", "demo-sft", "--port", str(port), "--storage", str(demo_runs),
                env={"FORGE_SERVE_API_KEY": KEY}, timeout=600)  # measured 24 s on a clean clone  # measured 24 s on a clean clone
    assert out.returncode == 0, out.stderr[-3000:]
    yield f"http://127.0.0.1:{port}/v1"
    stop = forge("serve", "--stop", "demo-sft", "--storage", str(demo_runs))
    assert stop.returncode == 0


def assert_answers_like_transformers(url: str, model_dir, name: str = "demo-sft") -> None:
    """The endpoint at ``url`` lists only ``name``, refuses a wrong key, and its greedy
    completion and chat answers are the text `transformers` generates from the export."""
    import openai
    from transformers import AutoModelForCausalLM, AutoTokenizer

    client = openai.OpenAI(base_url=url, api_key=KEY)
    assert [m.id for m in client.models.list().data] == [name]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="wrong").models.list()

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True).eval()
    end_ids = [tok.convert_tokens_to_ids("<|end|>"), tok.eos_token_id]

    def hf_greedy(ids, n=12, stops=()):
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                                 eos_token_id=list(stops) or None, pad_token_id=tok.pad_token_id)
        return tok.decode(out[0, len(ids):], skip_special_tokens=True)

    prompt = "Q: Which team owns Vepeinon?\nA:"
    got = client.completions.create(model=name, prompt=prompt, max_tokens=12, temperature=0.0)
    assert got.choices[0].text == hf_greedy(tok(prompt)["input_ids"], stops=end_ids)  # the exported generation config
    question = [{"role": "user", "content": "Who leads Team Otter?"}]
    chat = client.chat.completions.create(model=name, messages=question, max_tokens=24, temperature=0.0)
    ids = tok.apply_chat_template(question, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert chat.choices[0].message.content.strip() == hf_greedy(ids, n=24, stops=end_ids).strip()


def test_served_model_answers_openai_clients_like_transformers(served, demo_runs):
    assert_answers_like_transformers(served, demo_runs / "demo-sft" / "model")


def test_every_route_of_the_served_model_needs_the_key(served, demo_runs):
    """Every route the server has (its OpenAPI list, read with the key, plus the pages that list
    leaves out) refuses a request without the key, a wrong key and a bare key; nothing on disk
    holds the key or a digest of it."""
    import urllib.error
    import urllib.request

    base = served.removesuffix("/v1")

    def call(method: str, path: str, auth: str | None) -> int:
        req = urllib.request.Request(base + path, method=method, data=b"{}" if method != "GET" else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": auth} if auth else {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    with urllib.request.urlopen(urllib.request.Request(base + "/openapi.json", headers={
            "Authorization": f"Bearer {KEY}"}), timeout=30) as r:
        listed = json.load(r)["paths"]
    routes = {(m.upper(), p) for p, ops in listed.items() for m in ops if "{" not in p}
    routes |= {("GET", p) for p in ("/docs", "/redoc", "/openapi.json", "/metrics")}
    assert {("POST", "/invocations"), ("POST", "/tokenize"), ("POST", "/v1/chat/completions")} <= routes
    open_routes = [(m, p, auth) for m, p in sorted(routes) for auth in (None, "Bearer wrong", KEY)
                   if call(m, p, auth) != 401]
    assert not open_routes, open_routes
    assert call("GET", "/health", f"Bearer {KEY}") == 200
    record = (demo_runs / "serve" / "demo-sft.json").read_text()
    assert KEY not in record and "sha256" not in record and json.loads(record)["api_key"] is True


def test_replicas_on_ray_serve_answer_like_transformers(served, ray_connected, demo_runs):
    """`forge serve --replicas 2` on the session's cluster: two vLLM replicas behind Ray's
    OpenAI router, every route keyed; `--stop` removes the application and its route. (The
    DPO model, as demo-sft is being served by the single server: a run is served once.)"""
    import urllib.error
    import urllib.request

    from forge_ray import serve, serve_cluster
    from forge_ray.runs import Storage

    env = {"RAY_ADDRESS": ray_connected["gcs"]}
    twice = forge("serve", "demo-sft", "--replicas", "2", "--storage", str(demo_runs), env=env)
    assert twice.returncode == 2 and f"already served at {served}" in twice.stderr

    port = _free_port()
    out = forge("serve", "demo-dpo", "--replicas", "2", "--port", str(port),
                "--storage", str(demo_runs), env={**env, "FORGE_SERVE_API_KEY": KEY}, timeout=600)  # measured 75 s
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 replica(s) on Ray Serve" in out.stdout
    url = f"http://127.0.0.1:{port}/demo-dpo/v1"
    try:
        info = next(i for i in serve.running(Storage(str(demo_runs))) if i["run"] == "demo-dpo")
        assert info["url"] == url and info["replicas"] == {"min": 2, "max": 2}
        assert serve_cluster.replica_states(info)["LLMServer:demo-dpo"] == {"RUNNING": 2}
        assert_answers_like_transformers(url, demo_runs / "demo-dpo" / "model", name="demo-dpo")
        with pytest.raises(urllib.error.HTTPError) as unkeyed:  # Ray's other routes are keyed too
            urllib.request.urlopen(urllib.request.Request(
                url.removesuffix("/v1") + "/tokenize", data=b'{"model": "demo-dpo", "prompt": "hi"}',
                headers={"Content-Type": "application/json"}), timeout=30)
        assert unkeyed.value.code == 401
    finally:
        stop = forge("serve", "--stop", "demo-dpo", "--storage", str(demo_runs), env=env)
    assert stop.returncode == 0, stop.stderr[-2000:]
    assert "forge-demo-dpo" in stop.stdout
    with pytest.raises(urllib.error.HTTPError) as gone:
        urllib.request.urlopen(url + "/models", timeout=30)
    assert gone.value.code == 404


def test_eval_compares_the_endpoint_with_local_runs(served, ray_connected, demo_runs, demo_data, monkeypatch):
    monkeypatch.setenv("FORGE_ENDPOINT_API_KEY", KEY)
    monkeypatch.setenv("FORGE_ENDPOINT_URLS", served)  # the key goes to listed endpoints only
    endpoint = f"{served}#demo-sft"
    info = api.compare([endpoint, "demo-sft", "demo-pretrain"],
                       [{"name": "facts", "path": str(demo_data / "eval.jsonl"), "scorer": "contains_answer",
                         "max_new_tokens": 24}], name="cmp-endpoint", backend="hf", storage=str(demo_runs),
                       show_progress=False, modes={endpoint: "both", "demo-sft": "both"},
                       retrieval={"documents": [{"path": str(demo_data / "docs"), "exclude": ["faq.md"]}]})
    assert info.status == "succeeded"
    results = read_json(demo_runs / "cmp-endpoint" / "report" / "results.json")
    assert results["backends"][endpoint] == "endpoint"
    rows = [json.loads(line) for line in (demo_runs / "cmp-endpoint" / "report" / "items" / "facts.jsonl")
            .read_text().splitlines()]
    served_answers = [r["output"] for r in rows if r["model"] == endpoint]
    local_answers = [r["output"] for r in rows if r["model"] == "demo-sft"]
    assert len(served_answers) == 190 and served_answers == local_answers  # the same model, served or local
    # and with the same passages in front: the retrieval baseline works for an endpoint as for a run
    served_rag = [r["output"] for r in rows if r["model"] == f"{endpoint} + rag"]
    assert len(served_rag) == 190 and served_rag == [r["output"] for r in rows if r["model"] == "demo-sft + rag"]
    assert results["tasks"]["facts"][endpoint]["score"] == results["tasks"]["facts"]["demo-sft"]["score"]
    assert os.environ["FORGE_ENDPOINT_API_KEY"] not in (demo_runs / "cmp-endpoint" / "manifest.json").read_text()


def test_the_arena_talks_to_a_served_endpoint_like_to_the_local_run(served, demo_runs, monkeypatch):
    """The UI arena's model side (``api.generate``): an endpoint streams the same greedy answer
    as the local run, and the endpoint `forge serve` started is offered beside the runs."""
    monkeypatch.setenv("FORGE_ENDPOINT_API_KEY", KEY)
    monkeypatch.setenv("FORGE_ENDPOINT_URLS", served)  # the key goes to listed endpoints only
    endpoint = f"{served}#demo-sft"
    assert endpoint in api.chat_models(str(demo_runs)) and "demo-sft" in api.chat_models(str(demo_runs))
    question = "Who leads Team Otter?"
    remote = list(api.generate(endpoint, question, max_new_tokens=24, storage=str(demo_runs)))
    local = list(api.generate("demo-sft", question, max_new_tokens=24, storage=str(demo_runs)))
    assert len(remote) > 1 and remote[-1] == local[-1] and remote[-1]  # streamed, and the same answer



def _teacher_spec(tmp_path, name: str, teacher: str, demo_data, tasks=("qa", "paraphrase")) -> str:
    """An augment stage over a few product pages whose teacher is ``teacher``: the built-in QA
    prompt (a tiny model cannot follow it: its output is counted as unparseable), and a
    paraphrase prompt the demo's SFT model answers (the part number — from the passage, or from
    memory, wrongly: how often depends on the trained model, so the originals are kept and the
    corpus is never empty)."""
    import yaml

    spec = {"kind": "augment", "name": name, "sources": [{"path": str(demo_data / "docs" / "products")}],
            "multiplicity": 1, "permute": {"copies": 0},
            "teacher": {"model": teacher, "tasks": list(tasks), "max_documents": 8, "max_new_tokens": 24,
                        "temperature": 0.0,
                        "prompts": {"paraphrase": "{chunk}\n\nQuestion: What is the part number of {entity}?"}}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def check_teacher_corpus(run, demo_data) -> dict:
    """Shared by the endpoint and the in-cluster teacher tests: every rejection counted, every
    kept item grounded in the span of the document it names."""
    import pyarrow.parquet as pq

    from forge_ray.knowledge.teacher import invented

    report = read_json(run / "report" / "report.json")
    qa, para = report["strategies"]["teacher_qa"], report["strategies"]["teacher_paraphrase"]
    assert qa["produced"] == 8 and qa["unparseable"] + qa["ungrounded"] == 8 and qa["kept"] == 0
    # every answer is counted once: kept, or rejected for a reason (a wrong part number is an
    # invented code: ungrounded); how many are kept is the trained model's reading, not asserted
    print(f"teacher paraphrases kept {para['kept']} of 8: {para}")
    assert para["produced"] == 8
    assert para["kept"] + para["ungrounded"] + para["unparseable"] + para["duplicates"] == 8
    table = [r for f in sorted((run / "corpus").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    rows = [r for r in table if r["strategy"] == "teacher_paraphrase"]
    assert len(rows) == para["kept"] and len(table) == para["kept"] + report["strategies"]["original"]["kept"]
    for r in rows:
        source = (demo_data / "docs" / "products" / r["source_doc"]).read_text()
        assert 0 <= r["span_start"] < r["span_end"] <= len(source)
        assert invented(r["text"], source[r["span_start"]:r["span_end"]]) == []  # nothing the passage lacks
    return report


def test_augment_with_the_served_model_as_a_teacher(served, ray_cluster, demo_runs, demo_data, tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_ENDPOINT_API_KEY", KEY)
    monkeypatch.setenv("FORGE_ENDPOINT_URLS", served)
    env = {"RAY_ADDRESS": ray_cluster["gcs"]}
    spec = _teacher_spec(tmp_path, "teacher-endpoint", f"{served}#demo-sft", demo_data)
    result = forge("run", spec, "--storage", str(demo_runs), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    check_teacher_corpus(demo_runs / "teacher-endpoint", demo_data)
    assert KEY not in (demo_runs / "teacher-endpoint" / "spec.yaml").read_text()
    # the same endpoint without its key listed for it (a 401), and an endpoint nobody listens at:
    # each fails at once naming the URL, and writes no corpus
    monkeypatch.delenv("FORGE_ENDPOINT_URLS")
    refused = forge("run", _teacher_spec(tmp_path, "teacher-401", f"{served}#demo-sft", demo_data),
                    "--storage", str(demo_runs), env=env)
    assert refused.returncode == 2 and f"endpoint {served} wants an API key (401)" in refused.stderr, refused.stderr
    down = f"http://127.0.0.1:{_free_port()}/v1"
    unreachable = forge("run", _teacher_spec(tmp_path, "teacher-down", f"{down}#demo-sft", demo_data),
                        "--storage", str(demo_runs), env=env)
    assert unreachable.returncode == 2 and f"teacher endpoint {down} is unreachable" in unreachable.stderr
    for name in ("teacher-401", "teacher-down"):
        assert not (demo_runs / name / "corpus").exists()
