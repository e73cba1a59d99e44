"""Run directories: ``<storage>/<name>/{spec.yaml, manifest.json, metrics.jsonl, model/, …}``.

The storage root is any ``pyarrow.fs`` URI (a local path, ``s3://…``, ``gs://…``), so the
same code writes to a laptop disk or to a cluster's shared storage. ``manifest.json`` is
the lineage record every later stage, the UI and agents read; it is rewritten atomically
(write to a temporary name, then move) so a reader never sees half a manifest.

A run name that exists is resumed when its spec is unchanged and refused when it changed:
nothing is ever silently overwritten.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from forge_ray.spec.base import RUN_NAME

STATUSES = ("queued", "running", "succeeded", "failed")


def storage_root(explicit: str | None = None) -> str:
    """``--storage``, else ``FORGE_STORAGE``, else ``./forge_runs``."""
    return explicit or os.environ.get("FORGE_STORAGE") or "./forge_runs"


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), str(Path(root).expanduser().resolve())


class RunNameError(ValueError):
    """A run name that is not a plain name under the storage root: ``../x``, ``/abs``,
    ``a/../../b``, or a name whose directory is a symlink out of the root."""


class RunExistsError(ValueError):
    """A run of this name exists with a different spec."""


@dataclass
class RunError:
    """Why a run failed, in a form a program can act on."""

    kind: str
    message: str
    hint: str = ""


class Storage:
    """The storage root: lists and opens runs."""

    def __init__(self, root: str | None = None):
        self.uri = storage_root(root)
        self.fs, self.base = _filesystem(self.uri)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def checked_name(self, name: str) -> str:
        """``name`` when it is one plain component whose directory (after symlinks, on local
        storage) lies inside the root; otherwise :class:`RunNameError`. Every face (CLI, API,
        UI, MCP, arena) reaches a run through :meth:`run`, so this is the one place that decides."""
        if not isinstance(name, str) or not RUN_NAME.match(name):
            raise RunNameError(f"{name!r} is not a run name: letters, digits, '-', '_' or '.', starting with a "
                               "letter or digit, ≤100 chars (no '/', no '..')")
        if self.is_local:
            root = os.path.realpath(self.base)
            real = os.path.realpath(os.path.join(self.base, name))
            if real == root or os.path.commonpath([root, real]) != root:
                raise RunNameError(f"run {name!r} leads out of the storage root {self.base} (a symlink to {real})")
        return name

    def run(self, name: str) -> RunDir:
        return RunDir(self, self.checked_name(name))

    def exists(self, name: str) -> bool:
        """Whether ``name`` is a run here (a name that cannot be one, or leads out of the root, is not)."""
        try:
            name = self.checked_name(name)
        except RunNameError:
            return False
        return self.fs.get_file_info(f"{self.base}/{name}/manifest.json").type == pafs.FileType.File

    def list_runs(self) -> list[dict]:
        """Every run's manifest, newest first."""
        info = self.fs.get_file_info(self.base)
        if info.type != pafs.FileType.Directory:
            return []
        manifests = []
        for entry in self.fs.get_file_info(pafs.FileSelector(self.base)):
            if entry.type == pafs.FileType.Directory and self.exists(entry.base_name):
                with contextlib.suppress(Exception):
                    manifests.append(self.run(entry.base_name).manifest())
        return sorted(manifests, key=lambda m: m.get("created_at", ""), reverse=True)


class RunDir:
    """One run's directory and its manifest."""

    def __init__(self, storage: Storage, name: str):
        self.storage, self.name = storage, name
        self.fs = storage.fs
        self.path = f"{storage.base}/{name}"

    # ------------------------------------------------------------------ files

    def file(self, rel: str) -> str:
        return f"{self.path}/{rel}"

    def exists(self, rel: str = "manifest.json") -> bool:
        return self.fs.get_file_info(self.file(rel)).type != pafs.FileType.NotFound

    def read_text(self, rel: str) -> str:
        with self.fs.open_input_stream(self.file(rel)) as f:
            return f.read().decode("utf-8")

    def write_text(self, rel: str, text: str) -> None:
        """Atomic write: a reader sees the old file or the new one, never a mix."""
        self.write_bytes(rel, text.encode("utf-8"))

    def write_bytes(self, rel: str, data: bytes) -> None:
        target = self.file(rel)
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
        except OSError:
            with contextlib.suppress(OSError):
                self.fs.delete_file(tmp)
            raise
        self.fs.move(tmp, target)

    # A full disk must not also swallow the record of why the run failed: each run keeps a
    # little space in reserve while it runs and frees it just before writing its failure.
    RESERVE, RESERVE_BYTES = ".forge_space_reserve", 256 * 1024

    def _reserve_space(self) -> None:
        if self.storage.is_local:
            with contextlib.suppress(OSError), open(self.file(self.RESERVE), "wb") as f:
                f.write(b"\0" * self.RESERVE_BYTES)

    def _release_space(self) -> None:
        with contextlib.suppress(OSError):
            self.fs.delete_file(self.file(self.RESERVE))

    def append_line(self, rel: str, text: str) -> None:
        target = self.file(rel)
        self.fs.create_dir(self.path, recursive=True)
        if self.storage.is_local:
            with open(target, "ab+") as f:
                _drop_torn_tail(f)
                f.write((text.rstrip("\n") + "\n").encode("utf-8"))
        else:  # object stores cannot append: rewrite (metrics files stay small)
            old = self.read_text(rel) if self.exists(rel) else ""
            self.write_text(rel, old + text.rstrip("\n") + "\n")

    @contextlib.contextmanager
    def local_dir(self, rel: str) -> Iterator[Path]:
        """A local directory to write an output into; it appears at ``rel`` only on success.

        Locally it is a hidden sibling renamed into place; on remote storage a temporary
        directory uploaded at the end. Either way a failed stage leaves no half output."""
        if self.storage.is_local:
            final = Path(self.file(rel))
            tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
            tmp.mkdir(parents=True)
            try:
                yield tmp
                if final.exists():
                    shutil.rmtree(final)
                tmp.rename(final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return
        tmp = Path(tempfile.mkdtemp(prefix="forge-out-"))
        try:
            yield tmp
            pafs.copy_files(str(tmp), self.file(rel), source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=self.fs)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @contextlib.contextmanager
    def fetch_dir(self, rel: str) -> Iterator[Path]:
        """A local copy of a directory of this run (the directory itself on local storage)."""
        if self.storage.is_local:
            yield Path(self.file(rel))
            return
        tmp = Path(tempfile.mkdtemp(prefix="forge-in-"))
        try:
            pafs.copy_files(self.file(rel), str(tmp), source_filesystem=self.fs,
                            destination_filesystem=pafs.LocalFileSystem())
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------ manifest

    def manifest(self) -> dict:
        return json.loads(self.read_text("manifest.json"))

    def update(self, **fields: Any) -> dict:
        manifest = self.manifest() if self.exists() else {}
        manifest.update(fields)
        self.write_text("manifest.json", json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        return manifest

    def spec_matches(self, spec_yaml: str) -> bool:
        return self.manifest().get("spec_sha256") == _sha(spec_yaml)

    def create_or_resume(self, kind: str, spec_yaml: str, parents: list[str],
                         fingerprints: dict[str, str] | None = None, status: str = "running",
                         job_id: str | None = None) -> dict:
        """Start (or resume) this run; refuse when the name exists with another spec."""
        digest = _sha(spec_yaml)
        if self.exists():
            manifest = self.manifest()
            if manifest.get("spec_sha256") != digest and kind == "pipeline" and manifest.get("kind") == "pipeline":
                # a pipeline only orchestrates: each stage run still refuses its own changed spec;
                # the old pipeline spec is kept next to the new one, and the change is recorded
                self.write_text(f"spec.{manifest.get('attempts', 1)}.yaml", self.read_text("spec.yaml"))
                self.write_text("spec.yaml", spec_yaml)
                manifest = self.update(spec_sha256=digest, spec_changed_at=now())
            if manifest.get("spec_sha256") != digest and self.failed_before_producing(manifest):
                # a config error stopped it before anything was trained or written: the corrected
                # spec takes its place (the old one is kept beside it)
                self.write_text(f"spec.{manifest.get('attempts', 1)}.yaml", self.read_text("spec.yaml"))
                self.write_text("spec.yaml", spec_yaml)
                manifest = self.update(spec_sha256=digest, spec_changed_at=now(), parents=parents)
            if manifest.get("spec_sha256") != digest:
                raise RunExistsError(
                    f"run {self.name!r} already exists in {self.storage.uri} with a different spec; "
                    f"refusing to overwrite it (compare {self.file('spec.yaml')}). "
                    "Choose another name (--set name=…) or delete that run directory.")
            if manifest.get("status") == "queued":  # the submission's own start: the same attempt
                fields = {"status": status, "started_at": now()}
            else:
                fields = {"status": status, "resumed_at": now(), "attempts": manifest.get("attempts", 1) + 1}
            if job_id:
                fields["job_id"] = job_id
            manifest = self.update(**fields)
        else:
            self.write_text("spec.yaml", spec_yaml)
            manifest = self.update(
                name=self.name, kind=kind, status=status, parents=parents, spec_sha256=digest,
                fingerprints=fingerprints or {}, created_at=now(), started_at=now() if status == "running" else None,
                ended_at=None, metrics={}, outputs={}, error=None, job_id=job_id, attempts=1,
            )
        if status == "running":
            self._reserve_space()
        return manifest

    def failed_before_producing(self, manifest: dict | None = None) -> bool:
        """Failed, with no outputs and no checkpoint: nothing a changed spec could mix with."""
        manifest = self.manifest() if manifest is None else manifest
        if manifest.get("status") != "failed" or manifest.get("outputs"):
            return False
        for sub in ("train", "checkpoints", "model"):
            infos = self.fs.get_file_info(pafs.FileSelector(self.file(sub), recursive=True, allow_not_found=True))
            if any(i.type == pafs.FileType.File and (sub != "train" or _is_checkpoint_file(i.path)) for i in infos):
                return False
        return True

    def start(self) -> dict:
        return self.update(status="running", started_at=now(), ended_at=None, error=None)

    def succeed(self, metrics: dict[str, Any] | None = None, outputs: dict[str, str] | None = None) -> dict:
        self._release_space()
        manifest = self.manifest()
        return self.update(status="succeeded", ended_at=now(), error=None,
                           metrics={**manifest.get("metrics", {}), **(metrics or {})},
                           outputs={**manifest.get("outputs", {}), **(outputs or {})})

    def fail(self, error: RunError) -> dict:
        self._release_space()
        return self.update(status="failed", ended_at=now(), error=error.__dict__)

    # ------------------------------------------------------------------ metrics

    def log_metrics(self, step: int, **metrics: Any) -> None:
        """One line of ``metrics.jsonl``: ``step`` plus metrics under the documented names."""
        self.append_line("metrics.jsonl", json.dumps({"step": step, **metrics, "time": now()}))

    def metrics(self) -> list[dict]:
        """Every metrics record; a last line cut short (a crash, a full disk) is not one."""
        if not self.exists("metrics.jsonl"):
            return []
        rows = []
        for line in self.read_text("metrics.jsonl").splitlines():
            if line.strip():
                with contextlib.suppress(ValueError):
                    rows.append(json.loads(line))
        return rows


def _drop_torn_tail(f) -> None:
    """Before appending to a line-per-record file: if a crash or a full disk left its last line
    without its newline, cut that fragment off, so the next record is not glued onto it."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    if not size:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    f.seek(0)
    f.truncate(f.read().rfind(b"\n") + 1)
    f.seek(0, os.SEEK_END)


def _is_checkpoint_file(path: str) -> bool:
    """A file inside one of Ray Train's ``checkpoint_<time>`` directories (not its snapshot list)."""
    return any(part.startswith("checkpoint_") and not part.endswith(".json") for part in path.split("/")[:-1])


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


ARENA = "arena"  # under the storage root, beside the runs: votes cast in the UI arena


def record_vote(storage: Storage, model_a: str, model_b: str, prompt: str, vote: str, **extra: Any) -> dict:
    """Append one arena vote (``a``, ``b``, ``tie`` or ``both_bad``); evaluations with the
    ``human`` judge count them."""
    if vote not in ("a", "b", "tie", "both_bad"):
        raise ValueError(f"vote must be a, b, tie or both_bad, not {vote!r}")
    row = {"model_a": model_a, "model_b": model_b, "prompt": prompt, "vote": vote, "at": now(), **extra}
    storage.run(ARENA).append_line("votes.jsonl", json.dumps(row, ensure_ascii=False))
    return row


def arena_votes(storage: Storage) -> list[str]:
    arena = storage.run(ARENA)
    return arena.read_text("votes.jsonl").splitlines() if arena.exists("votes.jsonl") else []
