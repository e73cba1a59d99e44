"""The ``tokenizer`` stage: stream the corpus through Ray Data, train BPE, save, report."""

from __future__ import annotations

import logging

from forge_ray.data.sources import expand_source, fingerprint, raise_on_error_rows, source_dataset
from forge_ray.runner import Context, StageResult
from forge_ray.runs import RunDir
from forge_ray.spec.stages import TokenizerStage

log = logging.getLogger("forge_ray.tokenizer")


def run(spec: TokenizerStage, run: RunDir, ctx: Context) -> StageResult:
    from forge_ray.tokenizer.train import train_tokenizer

    files = [sf for i, s in enumerate(spec.sources) for sf in expand_source(s, i)]  # fails early on bad paths
    run.update(fingerprints={"sources": fingerprint(files)}, input_files=len(files))
    ctx.ensure_ray()
    import ray.data

    ray.data.DataContext.get_current().execution_options.preserve_order = True  # deterministic merges
    docs = raise_on_error_rows(source_dataset(spec.sources).iter_rows())
    with ctx.progress("tokenizer: reading documents", unit="doc") as bar, run.local_dir("tokenizer") as out:
        metrics = train_tokenizer(spec, docs, out, progress=lambda n: bar.update(1))
    log.info("tokenizer: %d docs, vocab %d, %.2f bytes/token on held-out text", metrics["train_docs"],
             metrics["vocab_size"], metrics.get("heldout_bytes_per_token", float("nan")))
    run.log_metrics(0, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    return StageResult(metrics=metrics, outputs={"tokenizer": "tokenizer"})
