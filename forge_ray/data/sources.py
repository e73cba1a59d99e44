"""Reading sources into rows, with errors that name the file and the line.

A source (:class:`~forge_ray.spec.sections.SourceSpec`) expands to a list of files; each
file is parsed in our own code (not Ray Data's readers) so that a malformed line reports
``file:line: problem`` instead of a block-level parser error, and nothing is skipped
without being counted. :func:`text_dataset` wraps the same parser in a Ray Data pipeline
so that reading runs in parallel on the cluster and streams.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pyarrow.fs as pafs

from forge_ray.allowed_paths import require_allowed
from forge_ray.spec.sections import SourceSpec

_EXT_TYPES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
LANGUAGES = {".py": "python", ".md": "markdown", ".rst": "rst", ".txt": "text", ".yaml": "yaml", ".yml": "yaml",
             ".json": "json", ".c": "c", ".h": "c", ".js": "javascript", ".ts": "typescript", ".go": "go",
             ".rs": "rust", ".java": "java", ".sql": "sql", ".sh": "shell", ".toml": "toml"}


class DataError(ValueError):
    """Bad input data, located: ``file``, ``line`` (1-based, or row index for tables)."""

    def __init__(self, file: str, line: int | None, problem: str, hint: str = ""):
        self.file, self.line, self.problem, self.hint = file, line, problem, hint
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {problem}" + (f" ({hint})" if hint else ""))

    def __reduce__(self):  # survive pickling across Ray workers with all fields
        return DataError, (self.file, self.line, self.problem, self.hint)


def _fs(path: str) -> tuple[pafs.FileSystem, str]:
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    from pathlib import Path

    return pafs.LocalFileSystem(), str(Path(path).expanduser().resolve())


def _matches(rel: str, patterns: list[str]) -> bool:
    # "**/*.md" should also match "a.md" at the top of the tree
    return any(fnmatch.fnmatch(rel, p) or (p.startswith("**/") and fnmatch.fnmatch(rel, p[3:])) for p in patterns)


@dataclass(frozen=True)
class SourceFile:
    """One file of a source, with what is needed to parse it."""

    path: str  # as the filesystem knows it
    rel: str  # relative to the source root, for metadata
    type: str  # jsonl | json | parquet | csv | text
    format: str
    field: str
    source_index: int


def expand_source(spec: SourceSpec, index: int = 0) -> list[SourceFile]:
    """The files a source names, sorted; a missing path or an empty match is an error."""
    fs, path = _fs(spec.path)
    has_glob = any(ch in spec.path for ch in "*?[")
    if has_glob:
        root = path.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0]
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
        files = [(i.path, i.path[len(root) + 1:]) for i in infos
                 if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, path)]
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise DataError(spec.path, None, "path does not exist", "check the source's path")
        if info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            files = [(i.path, i.path[len(path) + 1:]) for i in infos if i.type == pafs.FileType.File]
            files = [(p, r) for p, r in files
                     if _matches(r, spec.include) and not _matches(r, spec.exclude)]
        else:
            files = [(path, PurePosixPath(path).name)]
    if not files:
        raise DataError(spec.path, None, "no files match", f"include={spec.include} exclude={spec.exclude}")
    out = []
    for p, rel in sorted(files):
        if not spec.run:  # an earlier run's corpus lies in the storage root, which Storage itself confines
            require_allowed(p if "://" not in spec.path else spec.path.split("://")[0] + "://" + p, "source file")
        ext = PurePosixPath(p).suffix.lower()
        ftype = spec.type if spec.type != "auto" else _EXT_TYPES.get(ext, "text")
        out.append(SourceFile(p, rel, ftype, spec.format, spec.field, index))
    return out


def fingerprint(files: list[SourceFile], head_bytes: int = 1 << 20) -> str:
    """Content fingerprint of input files for lineage: relative path, size and a hash of the
    first MiB of each. Regenerating identical files gives the same fingerprint (mtime is
    ignored); reading whole multi-GB corpora just to fingerprint them is avoided."""
    h = hashlib.sha256()
    for sf in sorted(files, key=lambda f: f.path):
        fs, p = _fs(sf.path)
        info = fs.get_file_info(p)
        with fs.open_input_stream(p) as f:
            head = f.read(head_bytes)
        h.update(f"{sf.rel}\0{info.size}\0{hashlib.sha256(head).hexdigest()}\n".encode())
    return h.hexdigest()[:16]


def _read_bytes(path: str) -> bytes:
    if "://" not in path:  # local: plain open() is several times cheaper per small file
        with open(path, "rb") as f:
            return f.read()
    fs, p = _fs(path)
    with fs.open_input_stream(p) as f:
        return f.read()


def iter_records(sf: SourceFile) -> Iterator[tuple[int | None, dict | DataError]]:
    """(line or row number, record or the DataError for that line) for every record of a file.

    A bad line does not stop the file: it is yielded as a DataError so that the caller can
    fail on it or quarantine exactly that line. A file that cannot be read at all (empty,
    not UTF-8 text, unparsable table) yields a single error."""
    data = _read_bytes(sf.path)
    if not data.strip():
        yield None, DataError(sf.path, None, "file is empty")
        return
    if sf.type == "text":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            yield line, DataError(sf.path, line, f"invalid UTF-8 at byte {exc.start}", "re-encode the file as UTF-8")
            return
        yield 1, {"text": text}
    elif sf.type == "jsonl":
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield number, DataError(sf.path, number, f"invalid UTF-8 at column {exc.start + 1}",
                                        "re-encode the file as UTF-8")
                continue
            except json.JSONDecodeError as exc:
                yield number, DataError(sf.path, number, f"malformed JSON: {exc.msg} at column {exc.colno}")
                continue
            if not isinstance(record, dict):
                yield number, DataError(sf.path, number, f"expected a JSON object, got {type(record).__name__}")
                continue
            yield number, record
    elif sf.type == "json":
        try:
            records = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            yield None, DataError(sf.path, data[: exc.start].count(b"\n") + 1, "invalid UTF-8")
            return
        except json.JSONDecodeError as exc:
            yield exc.lineno, DataError(sf.path, exc.lineno, f"malformed JSON: {exc.msg}")
            return
        if not isinstance(records, list):
            yield None, DataError(sf.path, None, "a .json source must hold a list of objects", "or use .jsonl")
            return
        for i, record in enumerate(records):
            ok = isinstance(record, dict)
            yield i, record if ok else DataError(sf.path, i, f"item {i}: expected an object, got {type(record).__name__}")
    else:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(io.BytesIO(data)) if sf.type == "parquet" else pacsv.read_csv(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001 - any parser failure is a data problem of this file
            yield None, DataError(sf.path, None, f"cannot read as {sf.type}: {exc}")
            return
        for i, record in enumerate(table.to_pylist()):
            yield i + (2 if sf.type == "csv" else 0), record  # csv: line 1 is the header


def document_rows(sf: SourceFile) -> Iterator[dict[str, Any]]:
    """Normalised rows of a file; bad records become error rows carrying file, line, problem."""
    from forge_ray.data.formats import RecordError, normalize

    base_dir = sf.path.rsplit("/", 1)[0]
    meta = json.dumps({"path": sf.rel, "language": LANGUAGES.get(PurePosixPath(sf.rel).suffix.lower(), "text")})
    for line, rec in iter_records(sf):
        # zero-padded so that ids sort in reading order (dedup keeps the first occurrence)
        number = -1 if line is None else line
        row = {"doc_id": f"{sf.source_index:03d}:{sf.rel}:{number:09d}", "source": sf.source_index, "file": sf.path,
               "line": number, "text": "", "payload": "", "meta": meta, "error": ""}
        if isinstance(rec, DataError):
            row["error"] = json.dumps([rec.problem, rec.hint])
        else:
            try:
                text, payload = normalize(rec, "text" if sf.type == "text" else sf.format,
                                          "text" if sf.type == "text" else sf.field, base_dir)
                row["text"] = text
                row["payload"] = json.dumps(_jsonable(payload), ensure_ascii=False) if payload else ""
            except RecordError as exc:
                row["error"] = json.dumps([exc.problem, exc.hint])
        yield row


def _jsonable(payload: dict) -> dict:
    import base64

    return {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in payload.items()}


def row_error(row: dict) -> DataError | None:
    if not row["error"]:
        return None
    problem, hint = json.loads(row["error"])
    return DataError(row["file"], row["line"] if row["line"] >= 0 else None, problem, hint)


def raise_on_error_rows(rows: Iterator[dict]) -> Iterator[dict]:
    """Pass rows through; raise :class:`DataError` at the first error row."""
    for row in rows:
        error = row_error(row)
        if error is not None:
            raise error
        yield row


def iter_texts(sources: list[SourceSpec]) -> Iterator[dict[str, Any]]:
    """Every document's row in a deterministic order, single process; raises on bad rows."""
    for i, spec in enumerate(sources):
        for sf in expand_source(spec, i):
            yield from raise_on_error_rows(document_rows(sf))


ROW_COLUMNS = ("doc_id", "source", "file", "line", "text", "payload", "meta", "error")


def _files_to_rows(batch: dict) -> dict[str, list]:
    """A batch of file descriptors → the columns of all their rows (columnar: no per-row dicts
    cross into Arrow)."""
    out: dict[str, list] = {c: [] for c in ROW_COLUMNS}
    for desc in batch["file"]:
        for row in document_rows(SourceFile(**json.loads(desc))):
            for c in ROW_COLUMNS:
                out[c].append(row[c])
    return out


def source_dataset(sources: list[SourceSpec]):
    """A Ray Data dataset of normalised rows (error rows included), one read task per file."""
    import ray

    files = [sf for i, spec in enumerate(sources) for sf in expand_source(spec, i)]
    items = [{"file": json.dumps(sf.__dict__)} for sf in files]
    # a few read tasks per CPU: enough parallelism, without a task per small file
    cpus = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else 1
    blocks = max(1, min(len(items), 4 * cpus))
    return ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        _files_to_rows, batch_size=None, batch_format="numpy")
