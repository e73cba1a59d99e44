"""Tokenize+pack throughput: forge-ray's Ray Data path vs a plain single-process loop.

Both paths read the same files, use the same tokenizer and the same packing function; the
ratio (Ray Data tokens/s ÷ plain tokens/s) is what this prints. Absolute numbers depend
on the machine; the ratio says what Ray Data costs or buys at this scale and core count.

CPU:       python bench/data_throughput.py [--corpus PATH] [--copies 40]
One GPU:   the same (tokenisation is CPU work)
Cluster:   RAY_ADDRESS=HEAD:6379 python bench/data_throughput.py --corpus s3://bucket/corpus
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def build_corpus(args, work: Path) -> Path:
    """Copies of the demo docs (or of --corpus) so that the run takes a few seconds."""
    src = Path(args.corpus) if args.corpus else None
    if src is None:
        from forge_ray.demo.corpus import write_demo_data

        write_demo_data(work / "demo", seed=0)
        src = work / "demo" / "docs"
    out = work / "corpus"
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    for c in range(args.copies):
        for f in files:
            dst = out / f"copy{c:03d}" / f.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dst)
    return out


def plain_loop(corpus: Path, tok_dir: Path, seq_len: int) -> tuple[int, float]:
    from transformers import AutoTokenizer

    from forge_ray.data.pack import PackStats, pack_documents

    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(tok_dir)
    texts = [p.read_text(encoding="utf-8") for p in sorted(corpus.rglob("*")) if p.is_file()]
    stats = PackStats()
    for i in range(0, len(texts), 1024):
        ids = tok(texts[i:i + 1024], add_special_tokens=False)["input_ids"]
        pack_documents([x + [tok.eos_token_id] for x in ids], seq_len, tok.pad_token_id, stats)
    return stats.tokens, time.perf_counter() - start


def ray_data_path(corpus: Path, tok_dir: Path, seq_len: int) -> tuple[int, float]:
    import ray.data

    from forge_ray.data.pack import TokenizeBatch
    from forge_ray.data.sources import source_dataset
    from forge_ray.spec.sections import SourceSpec

    start = time.perf_counter()
    ds = source_dataset([SourceSpec(path=str(corpus), include=["**/*"])])
    packed = ds.map_batches(TokenizeBatch, fn_constructor_kwargs={"tokenizer_dir": str(tok_dir), "layout": "pretrain",
                                                                  "seq_len": seq_len},
                            batch_size=1024, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, int(ray.cluster_resources()
                                                                                              ["CPU"]))))
    tokens = 0
    for batch in packed.iter_batches(batch_format="numpy", batch_size=4096):
        tokens += sum(int(m.sum()) for m in batch["loss_mask"])
    return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", help="text file or directory (default: the generated demo docs)")
    parser.add_argument("--copies", type=int, default=40, help="copies of the corpus to process")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=2048)
    args = parser.parse_args()

    import ray

    from forge_ray.data.sources import iter_texts
    from forge_ray.spec import build_spec
    from forge_ray.tokenizer.train import train_tokenizer

    work = Path(tempfile.mkdtemp(prefix="forge-bench-"))
    try:
        corpus = build_corpus(args, work)
        spec = build_spec({"kind": "tokenizer", "name": "bench", "vocab_size": args.vocab,
                           "sources": [{"path": str(corpus), "include": ["**/*"]}]})
        train_tokenizer(spec, iter_texts(spec.sources), work / "tok")
        size_mb = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file()) / 1e6
        ray.init(logging_level="ERROR")
        ray_data_path(corpus, work / "tok", args.seq_len)  # warm-up: actor start, imports
        base_tokens, base_s = plain_loop(corpus, work / "tok", args.seq_len)
        ray_tokens, ray_s = ray_data_path(corpus, work / "tok", args.seq_len)
        assert ray_tokens == base_tokens, (ray_tokens, base_tokens)
        cpus = int(ray.cluster_resources()["CPU"])
        print(f"corpus: {size_mb:.1f} MB, {base_tokens:,} tokens, seq_len {args.seq_len}, {cpus} CPUs")
        print(f"plain single-process loop : {base_tokens / base_s:12,.0f} tokens/s")
        print(f"forge-ray Ray Data path   : {ray_tokens / ray_s:12,.0f} tokens/s")
        print(f"ratio (Ray Data / plain)  : {base_s / ray_s:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
