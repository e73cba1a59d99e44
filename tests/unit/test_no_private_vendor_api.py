"""No module outside ``forge_ray/compat/`` reaches into a vendor's private names: an
underscored attribute the platform did not define itself, or an import through an underscored
module (``ray.llm._internal…``, ``torch._dynamo``). Such uses belong in ``forge_ray/compat/``,
where each is pinned to the version it was checked against."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(REPO / "forge_ray").rglob("*.py"), *(REPO / "jobs").rglob("*.py")])
COMPAT = REPO / "forge_ray" / "compat"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _own_private_names() -> set[str]:
    """Underscored names the platform itself defines: functions, classes, module and class
    names, and attributes it sets on its own objects (``self._x = …``)."""
    own: set[str] = set()
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
    return {n for n in own if _private(n)}


def _local_module(path: Path, name: str) -> bool:
    """A helper module beside the importing file (``jobs/_entry.py``)."""
    return (path.parent / f"{name.split('.')[0]}.py").exists()


def violations(paths: list[Path]) -> list[str]:
    own = _own_private_names()
    found = []
    for path in paths:
        if COMPAT in path.parents:
            continue
        where = path.relative_to(REPO) if REPO in path.parents else path.name
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
            elif isinstance(node, ast.ImportFrom) and not (node.module or "").startswith(("forge_ray", "tests")):
                dotted = [*(node.module or "").split("."), *(a.name for a in node.names)]
                if node.level == 0 and any(map(_private, dotted)) and not _local_module(path, node.module or ""):
                    found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if any(map(_private, alias.name.split("."))) and not _local_module(path, alias.name):
                        found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_private_vendor_name_outside_compat():
    found = violations(SOURCES)
    assert not found, "private vendor APIs outside forge_ray/compat/ (move each behind a compat function):\n" + \
        "\n".join(found)


def test_the_check_finds_what_it_is_for(tmp_path):
    """The scan itself: each kind of private use is reported with its line; the platform's own
    underscored helpers and ``self._x`` are not."""
    probe = tmp_path / "probe.py"
    probe.write_text("import torch._dynamo\n"
                     "from ray.llm._internal.serve import x\n"
                     "from ray.serve import _private_thing\n"
                     "state = engine._zero3_consolidated_16bit_state_dict()\n"
                     "address = client._vendor_only_name\n"
                     "ok = self._own + cls._own\n")
    found = violations([probe])
    assert sorted(f.split(":")[1] for f in found) == ["1", "2", "3", "4", "5"], found
    assert "probe.py:5: client._vendor_only_name" in found
