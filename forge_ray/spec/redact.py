"""Secrets never land in run files: a value that came from an environment variable named like a
secret (``*_KEY``, ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``*CREDENTIAL*``, ``*AUTH*``) is
written back as its ``${VAR}`` reference wherever a spec is stored or shipped (``spec.yaml``,
the manifest's spec hash, a job's entrypoint). The job that runs the spec gets the variable
through its runtime environment and expands it again; storage never holds the value."""

from __future__ import annotations

import os
import re
from typing import Any

SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.IGNORECASE)
#: names of settings *about* secrets (where one lives, which mode), not secrets themselves
NOT_A_SECRET = re.compile(r"(_PATH|_FILE|_DIR|_SOCK|_MODE|_PROVIDER|_BACKEND|_URLS?)$", re.IGNORECASE)
MIN_LEN = 8  # shorter values would match ordinary text


def _looks_secret(value: str) -> bool:
    """Long enough, not a path, not a plain word: what keys and tokens look like."""
    return len(value) >= MIN_LEN and not value.startswith(("/", "~", ".")) and not value.isalpha()


def secret_values(env=None) -> dict[str, str]:
    """``{value: NAME}`` of the environment's secret-named variables, longest value first."""
    env = os.environ if env is None else env
    found = {v: k for k, v in env.items()
             if SECRET_NAME.search(k) and not NOT_A_SECRET.search(k) and _looks_secret(v)}
    return dict(sorted(found.items(), key=lambda kv: -len(kv[0])))


def redact(value: Any, env=None, used: set[str] | None = None) -> Any:
    """``value`` (a nested spec dict) with each secret value replaced by ``${NAME}``; the names
    replaced are added to ``used``."""
    secrets = secret_values(env)
    used = set() if used is None else used

    def walk(v):
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, str):
            for secret, name in secrets.items():
                if secret in v:
                    v = v.replace(secret, "${" + name + "}")
                    used.add(name)
        return v

    return walk(value)
