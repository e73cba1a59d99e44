"""Prepared data found again by what it was prepared from, so a second training run on the
same corpus starts training instead of re-cleaning and re-tokenising it.

A training stage with raw ``data`` sources prepares them as its own ``<name>-data`` run. The
key of a preparation is everything its output depends on: the data spec without its name,
the sources' content fingerprint (relative path, size and a hash of each file's first MiB,
as in the run's lineage) and, for local files, their paths and modification times (an edit
past the first MiB is seen too), and the tokenizer's files by content (its path differs per
run and per fetch). A succeeded ``data`` run in the same storage with the same key holds the
same rows (preparation is ordered and seeded), so the training run reads that one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from forge_ray.data.sources import SourceFile, expand_source, fingerprint
from forge_ray.runs import Storage
from forge_ray.spec.stages import DataStage


def source_files(spec: DataStage) -> list[SourceFile]:
    """Every file the spec's (resolved) sources name."""
    return [sf for i, s in enumerate(spec.sources) for sf in expand_source(s, i)]


def _tokenizer_digest(path: str | None) -> str:
    if not path:
        return "none"
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path)}\0".encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


def preparation_key(spec: DataStage, files: list[SourceFile], tokenizer_dir: str | None,
                    sources_fingerprint: str | None = None) -> str:
    """What a preparation's output depends on (``spec``'s sources resolved; ``tokenizer_dir``:
    its tokenizer fetched into a local directory, None without one; ``sources_fingerprint``:
    :func:`fingerprint` of ``files`` when the caller has it already, so they are read once)."""
    from forge_ray.spec.load import spec_to_yaml

    nameless = dataclasses.replace(spec, name="prepared", tokenizer="sha256:" + _tokenizer_digest(tokenizer_dir))
    h = hashlib.sha256(spec_to_yaml(nameless).encode())
    h.update((sources_fingerprint or fingerprint(files)).encode())
    for sf in sorted(files, key=lambda f: f.path):  # a local file edited since is prepared anew, whatever changed
        if "://" not in sf.path:
            h.update(f"{sf.path}\0{os.stat(sf.path).st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def find_prepared(storage: Storage, key: str) -> str | None:
    """The newest succeeded ``data`` run in ``storage`` prepared with ``key``, if any."""
    for manifest in storage.list_runs():
        if (manifest.get("kind") == "data" and manifest.get("status") == "succeeded"
                and manifest.get("fingerprints", {}).get("prepared") == key):
            return manifest["name"]
    return None
