"""Which files a spec may make the platform read.

A spec may come from a web form, an agent or a colleague, and what a run reads is stored in it
(a corpus ends up in its shards, the UI shows it to every user). On a shared deployment the
operator sets ``FORGE_ALLOWED_DATA_ROOTS`` (``os.pathsep``-separated local directories or URI
prefixes such as ``s3://bucket/corpora``): every data source, task file, image, harness
directory, decontamination file, local model or tokenizer directory and import path must then
resolve — after symlinks, file by file — under one of them, or the spec is refused before
anything starts. Unset (single-user use), any path the user can read is allowed, except that a
``..`` component is refused unless the resolved path lies under ``FORGE_ALLOWED_PATHS``.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOTS_ENV = "FORGE_ALLOWED_DATA_ROOTS"
DOTDOT_ENV = "FORGE_ALLOWED_PATHS"


def _split(value: str) -> list[str]:
    return [p.strip() for p in value.split(os.pathsep) if p.strip()]


def data_roots() -> list[str]:
    return _split(os.environ.get(ROOTS_ENV, ""))


def _under(path: str, prefixes: list[str]) -> bool:
    if "://" in path:
        return any(path == p.rstrip("/") or path.startswith(p.rstrip("/") + "/") for p in prefixes if "://" in p)
    resolved = os.path.realpath(path)
    for prefix in prefixes:
        if "://" in prefix:
            continue
        root = os.path.realpath(prefix)
        if resolved == root or resolved.startswith(root.rstrip(os.sep) + os.sep):
            return True
    return False


def _glob_base(path: str) -> str:
    """The part of a glob before its first wildcard (what the glob can reach at most)."""
    cut = min([i for i in (path.find(c) for c in "*?[") if i >= 0], default=len(path))
    return path[:cut].rsplit("/", 1)[0] if cut < len(path) else path


def path_problem(path: str) -> tuple[str, str] | None:
    """``(message, hint)`` when a spec may not name ``path``, else None."""
    roots = data_roots()
    if roots:
        if _under(_glob_base(path), roots):
            return None
        return (f"{path!r} is outside the allowed data roots ({os.pathsep.join(roots)})",
                f"put the data under one of them, or ask the operator to add its directory to {ROOTS_ENV}")
    if ".." not in Path(path.split("://", 1)[-1]).parts or _under(path, _split(os.environ.get(DOTDOT_ENV, ""))):
        return None
    return (f"{path!r} climbs out of its directory with '..'",
            f"give the path without '..' (absolute is fine), or allow its prefix in {DOTDOT_ENV}")


class PathNotAllowed(PermissionError):
    """A file outside ``FORGE_ALLOWED_DATA_ROOTS`` (e.g. reached through a symlink or a glob)."""


def require_allowed(path: str, what: str = "path") -> None:
    """At read time, file by file: a symlink inside a root that points outside is caught here."""
    roots = data_roots()
    if roots and not _under(str(path), roots):
        real = os.path.realpath(path) if "://" not in str(path) else str(path)
        shown = f"{path} (a link to {real})" if real != os.path.abspath(path) else str(path)
        raise PathNotAllowed(f"{what} {shown} is outside the allowed data roots ({os.pathsep.join(roots)}, "
                             f"${ROOTS_ENV}); refusing to read it")
