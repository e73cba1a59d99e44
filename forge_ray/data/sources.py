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
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Iterator

import pyarrow.fs as pafs

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
    fs, p = _fs(path)
    with fs.open_input_stream(p) as f:
        return f.read()


def iter_records(sf: SourceFile) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line or row number, record) for every record of a file; raises :class:`DataError`."""
    data = _read_bytes(sf.path)
    if not data.strip():
        raise DataError(sf.path, None, "file is empty")
    if sf.type in ("jsonl", "json", "text"):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise DataError(sf.path, line, f"invalid UTF-8 at byte {exc.start}", "re-encode the file as UTF-8") from None
    if sf.type == "text":
        yield 1, {"text": text, "path": sf.rel, "language": LANGUAGES.get(PurePosixPath(sf.rel).suffix.lower(), "text")}
    elif sf.type == "jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(sf.path, number, f"malformed JSON: {exc.msg} at column {exc.colno}") from None
            if not isinstance(record, dict):
                raise DataError(sf.path, number, f"expected a JSON object, got {type(record).__name__}")
            yield number, record
    elif sf.type == "json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(sf.path, exc.lineno, f"malformed JSON: {exc.msg}") from None
        if not isinstance(records, list):
            raise DataError(sf.path, None, "a .json source must hold a list of objects", "or use .jsonl")
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise DataError(sf.path, i, f"item {i}: expected an object, got {type(record).__name__}")
            yield i, record
    else:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data)) if sf.type == "parquet" else pacsv.read_csv(io.BytesIO(data))
        for i, record in enumerate(table.to_pylist()):
            yield i + (2 if sf.type == "csv" else 0), record  # csv: line 1 is the header


def text_of(record: dict, sf: SourceFile, line: int) -> str:
    """The training text of a record in the source's format (for tokenizers and pre-training)."""
    fmt = sf.format
    if fmt == "text":
        key = "text" if sf.type == "text" else sf.field
        return _typed(record, key, str, sf, line)
    if fmt == "chat":
        messages = _typed(record, "messages", list, sf, line)
        parts = []
        for j, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str):
                raise DataError(sf.path, line, f"messages[{j}] needs a string 'content'")
            parts.append(m["content"])
        return "\n".join(parts)
    if fmt == "preference":
        return "\n".join(_typed(record, k, str, sf, line) for k in ("prompt", "chosen", "rejected"))
    if fmt == "prompt_answer":
        return "\n".join(str(_typed(record, k, (str, int, float), sf, line)) for k in ("prompt", "answer"))
    return _typed(record, "text", str, sf, line)  # image_text: the caption


def _typed(record: dict, key: str, types, sf: SourceFile, line: int):
    if key not in record:
        raise DataError(sf.path, line, f"missing field {key!r}", f"fields present: {sorted(record)}")
    value = record[key]
    if not isinstance(value, types) or isinstance(value, bool):
        want = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
        raise DataError(sf.path, line, f"field {key!r} must be {want}, got {type(value).__name__}")
    return value


def iter_texts(sources: list[SourceSpec]) -> Iterator[dict[str, Any]]:
    """Every document's text with its origin, in a deterministic order (single process)."""
    for i, spec in enumerate(sources):
        for sf in expand_source(spec, i):
            for line, record in iter_records(sf):
                yield {"text": text_of(record, sf, line), "file": sf.path, "line": line, "source": i}


def _file_texts(row: dict) -> list[dict]:
    """Documents of one file. A bad record becomes an *error row* (not an exception) so it
    crosses Ray intact with its file and line, and the consumer decides: fail or quarantine."""
    sf = SourceFile(**json.loads(row["file"]))
    out = []
    try:
        for line, rec in iter_records(sf):
            out.append({"text": text_of(rec, sf, line), "file": sf.path, "line": line, "source": sf.source_index,
                        "error": ""})
    except DataError as exc:
        out.append({"text": "", "file": exc.file, "line": exc.line if exc.line is not None else -1,
                    "source": sf.source_index, "error": json.dumps([exc.problem, exc.hint])})
    return out


def text_dataset(sources: list[SourceSpec]):
    """A Ray Data dataset of documents (text + origin + error), read in parallel, one task per file."""
    import ray.data

    files = [sf for i, spec in enumerate(sources) for sf in expand_source(spec, i)]
    items = [{"file": json.dumps(sf.__dict__)} for sf in files]
    return ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 64))).flat_map(_file_texts)


def raise_on_error_rows(rows: Iterator[dict]) -> Iterator[dict]:
    """Pass documents through; raise :class:`DataError` at the first error row."""
    for row in rows:
        if row["error"]:
            problem, hint = json.loads(row["error"])
            raise DataError(row["file"], row["line"] if row["line"] >= 0 else None, problem, hint)
        yield row


def unwrap_data_error(exc: BaseException) -> DataError | None:
    """The :class:`DataError` inside a Ray task/Data exception chain, if there is one."""
    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, DataError):
            return e
        stack.extend([getattr(e, "cause", None), e.__cause__, e.__context__])
    return None
