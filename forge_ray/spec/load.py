"""Read a spec file (YAML or JSON), expand ``${VAR:-default}``, apply ``--set`` overrides,
and build the typed stage dataclass — or fail with every problem named by its key path.

Order matters: overrides are applied to the raw mapping *before* typing, so a bad override
value gets the same precise error as a bad value in the file.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from forge_ray.spec.stages import STAGES, StageSpec
from forge_ray.spec.typed import Problem, SpecError, json_schema, load_dataclass, to_dict

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, path: str = "", problems: list[Problem] | None = None, env=None) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a nested structure. A value
    that is nothing but one reference is a :class:`FromEnv`: an int, float or bool field reads
    it as that type (``max_steps: ${STEPS:-400}`` is the number 400), a str field as text."""
    env = os.environ if env is None else env
    problems = [] if problems is None else problems
    if isinstance(value, dict):
        return {k: expand_env(v, f"{path}.{k}" if path else str(k), problems, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{path}[{i}]", problems, env) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(Problem(path, f"environment variable {name} is not set and has no default",
                                f"set {name} or write ${{{name}:-default}}"))
        return match.group(0)

    expanded = _VAR.sub(sub, value)
    return FromEnv(expanded) if _VAR.fullmatch(value.strip()) and expanded != value else expanded


class FromEnv(str):
    """A value that was one ``${VAR}`` reference: the typed loader reads it as the number or
    boolean it spells where the field wants one (an environment variable is always text)."""


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """``train.lr=3e-4`` → (["train", "lr"], 3e-4); list items by index: ``stages.1.name=x``."""
    if "=" not in text:
        raise SpecError([Problem("--set", f"{text!r} is not KEY=VALUE", "e.g. --set optim.lr=3e-4")])
    key, raw = text.split("=", 1)
    if not key.strip():
        raise SpecError([Problem("--set", f"{text!r} has an empty key", "")])
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in key.strip().split(".")]
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set each ``KEY=VALUE`` into a copy of ``raw``; nested mappings are created as needed."""
    data = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            nxt = parts[i + 1]
            if isinstance(node, list):
                if not isinstance(part, int) or part >= len(node):
                    raise SpecError([Problem(".".join(map(str, parts[: i + 1])), "no such list item", f"--set {text}")])
                node = node[part]
            else:
                node = node.setdefault(str(part), [] if isinstance(nxt, int) else {})
        last = parts[-1]
        if isinstance(node, list):
            if not isinstance(last, int) or last >= len(node):
                raise SpecError([Problem(".".join(map(str, parts)), "no such list item", f"--set {text}")])
            node[last] = value
        else:
            node[str(last)] = value
    return data


def _line_index(node, path: str = "", out: dict | None = None) -> dict[str, int]:
    """Dotted key path → 1-based line, from a composed YAML node tree (for error messages)."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            sub = f"{path}.{key_node.value}" if path else str(key_node.value)
            out[sub] = key_node.start_mark.line + 1
            _line_index(value_node, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = f"{path}[{i}]"
            out[sub] = item.start_mark.line + 1
            _line_index(item, sub, out)
    return out


_LAST_PART = re.compile(r"(\.[^.\[]+|\[\d+\])$")


def _override_path(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        out = f"{out}[{part}]" if isinstance(part, int) else (f"{out}.{part}" if out else part)
    return out


def _with_lines(error: SpecError, lines: dict[str, int], source: str, overrides: list[str]) -> SpecError:
    """The same problems, each prefixed with where its key came from: ``file:line`` or ``--set``."""
    from_cli = {_override_path(parse_override(o)[0]): o for o in overrides}
    out = []
    for p in error.problems:
        if p.path in from_cli:
            out.append(Problem(p.path, f"--set {from_cli[p.path]}: {p.message}", p.hint))
            continue
        key, line = p.path, None
        while key and line is None:  # the key itself, else its nearest parent
            line = lines.get(key)
            parent = _LAST_PART.sub("", key)
            key = parent if parent != key else ""  # a top-level key has no parent
        out.append(Problem(p.path, (f"{source}:{line}: " if line else "") + p.message, p.hint))
    return SpecError(out, source)


def read_raw(path: str | Path) -> dict:
    """The mapping in a YAML or JSON file, with the file named in any error."""
    p = Path(path)
    if not p.exists():
        raise SpecError([Problem("", f"spec file {str(p)!r} does not exist", "check the path")], str(p))
    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else f"line {getattr(exc, 'lineno', '?')}"
        raise SpecError([Problem("", f"{p}:{where.split()[-1]}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: "
                                     f"{getattr(exc, 'problem', None) or exc}", "")], str(p)) from None
    if not isinstance(data, dict):
        raise SpecError([Problem("", f"{p} must hold a mapping with 'kind' and 'name'", "")], str(p))
    return data


def resolve_kind(kind: Any) -> type[StageSpec] | None:
    return STAGES.get(kind) if isinstance(kind, str) else None


def build_spec(raw: dict, source: str = "", env=None) -> StageSpec:
    """Typed spec from a raw mapping (env expansion included); raises :class:`SpecError`."""
    problems: list[Problem] = []
    data = expand_env(raw, "", problems, env)
    problems.extend(_kind_problems(data, ""))
    if problems:
        raise SpecError(problems, source)
    return load_dataclass(STAGES[data["kind"]], data, resolve_kind, source)


def _kind_problems(data: dict, path: str) -> list[Problem]:
    out = []
    kind = data.get("kind")
    where = f"{path}.kind" if path else "kind"
    if kind is None:
        out.append(Problem(where, "is required", f"one of: {', '.join(STAGES)}"))
    elif kind not in STAGES:
        close = difflib.get_close_matches(str(kind), list(STAGES), n=1)
        out.append(Problem(where, f"unknown kind {kind!r}", f"did you mean {close[0]!r}?" if close else
                           f"one of: {', '.join(STAGES)}"))
    for i, stage in enumerate(data.get("stages") or []) if kind == "pipeline" else []:
        if isinstance(stage, dict):
            out.extend(_kind_problems(stage, f"stages[{i}]"))
    return out


def load_spec(path: str | Path, overrides: list[str] | None = None, env=None) -> StageSpec:
    """Load, expand, override and type-check a spec file."""
    raw = read_raw(path)
    merged = apply_overrides(raw, overrides or [])
    try:
        return build_spec(merged, str(path), env)
    except SpecError as exc:
        lines: dict[str, int] = {}
        if Path(path).suffix != ".json":
            lines = _line_index(yaml.compose(Path(path).read_text(encoding="utf-8")))
        raise _with_lines(exc, lines, str(path), overrides or []) from None


def spec_to_dict(spec: StageSpec) -> dict:
    return to_dict(spec)


def spec_to_yaml(spec: StageSpec) -> str:
    """The spec as stored in its run (``spec.yaml``): secrets taken from the environment are
    written as their ``${VAR}`` reference (``forge_ray.spec.redact``)."""
    from forge_ray.spec.redact import redact

    return yaml.safe_dump(redact(to_dict(spec)), sort_keys=False, allow_unicode=True)


def schema(kind: str | None = None) -> dict:
    """JSON Schema for one kind, or for any spec (a ``oneOf`` over all kinds)."""
    defs: dict = {}
    if kind is not None:
        if kind not in STAGES:
            raise SpecError([Problem("kind", f"unknown kind {kind!r}", f"one of: {', '.join(STAGES)}")])
        top = json_schema(STAGES[kind], defs, STAGES)
        defs[STAGES[kind].__name__]["properties"]["kind"] = {"const": kind, "description": "stage kind"}
    else:
        top = {"oneOf": [json_schema(cls, defs, STAGES) for cls in STAGES.values()]}
    for k, cls in STAGES.items():
        if cls.__name__ in defs:
            defs[cls.__name__]["properties"]["kind"] = {"const": k, "description": "stage kind"}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": f"forge-ray {kind or 'spec'}",
            **top, "$defs": defs}


yaml.SafeDumper.add_representer(FromEnv, lambda dumper, value: dumper.represent_str(str(value)))  # e.g. inside Any
