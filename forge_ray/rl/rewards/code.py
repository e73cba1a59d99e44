"""Reward by running generated code against tests, in a sandboxed subprocess.

The sandbox: a fresh temporary directory as working directory and ``HOME``; ``python -I``
(no user site, no ``PYTHON*`` variables, no current directory on ``sys.path``); an
empty environment; limits on address space, CPU seconds, file size and open files; a
wall-clock timeout that kills the process group; and no network — the process runs in a
new network namespace (``unshare -rn``: only a down loopback) where the kernel allows
unprivileged user namespaces. :func:`sandbox_capabilities` says whether it does; where it
does not, code still runs with every other limit and the capability is reported, not
assumed. It is a guard against accidents and runaway samples, not a security boundary
against a determined attacker — run untrusted code on isolated nodes.

    >>> code_tests(["add"], ["```python\\ndef add(a, b):\\n    return a + b\\n```"],
    ...            tests=["assert add(2, 3) == 5"])
    [1.0]
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)


def extract_code(completion: str) -> str:
    """The first fenced code block, or the whole completion when there is none."""
    m = _FENCE.search(completion)
    return m.group(1) if m else completion


@functools.lru_cache(maxsize=1)
def sandbox_capabilities() -> dict[str, bool]:
    """What this machine's sandbox can enforce (probed once)."""
    no_network = False
    if shutil.which("unshare"):
        try:
            no_network = subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            no_network = False
    return {"no_network": no_network, "resource_limits": sys.platform.startswith("linux")}


@dataclass
class Outcome:
    passed: bool
    reason: str  # "passed", "failed", "timeout", "error: …"
    stderr_tail: str = ""


def _limits(memory_mb: int, cpu_s: int):
    def apply():
        import resource

        os.setsid()  # its own process group: a timeout kills everything it started
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    return apply


def run_with_tests(code: str, tests: str, timeout_s: float = 5.0, memory_mb: int = 512) -> Outcome:
    """Run ``code`` followed by ``tests`` (asserts); passed when the process exits 0."""
    caps = sandbox_capabilities()
    with tempfile.TemporaryDirectory(prefix="forge-sandbox-") as tmp:
        path = os.path.join(tmp, "solution.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(code + "\n\n" + tests + "\n")
        cmd = [sys.executable, "-I", "-B", path]
        if caps["no_network"]:
            cmd = ["unshare", "-rn", *cmd]
        proc = subprocess.Popen(cmd, cwd=tmp, env={"PATH": "/usr/bin:/bin", "HOME": tmp, "LANG": "C.UTF-8"},
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=_limits(memory_mb, int(timeout_s) + 1) if caps["resource_limits"] else None)
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            return Outcome(False, "timeout")
    tail = err.decode("utf-8", "replace")[-500:]
    if proc.returncode == 0:
        return Outcome(True, "passed")
    return Outcome(False, "failed" if "AssertionError" in tail else f"error: exit {proc.returncode}", tail)


def code_tests(prompts: list[str], completions: list[str], tests: list[str], timeout_s: float = 5.0,
               memory_mb: int = 512, **_) -> list[float]:
    """1 when the completion's code passes its row's tests, else 0."""
    return [float(run_with_tests(extract_code(c), t, timeout_s, memory_mb).passed) for c, t in zip(completions, tests)]
