"""Strict loading of nested dataclasses from plain dicts, and JSON Schema export.

Why our own loader instead of pydantic: the error a user sees is the product here. Every
problem is reported with its dotted path (``train.micro_batch_size``), what was expected,
and for an unknown key the closest valid key; all problems in a spec are collected and
reported at once, so a user fixes a spec in one round instead of one error per run.

Fields declare help text and numeric bounds through :func:`opt`; the same metadata feeds
validation and the JSON Schema, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

_MISSING = dataclasses.MISSING

_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def opt(default: Any = _MISSING, help: str = "", *, ge=None, gt=None, le=None, lt=None, default_factory=_MISSING,
        key: str | None = None):
    """A dataclass field with help text and optional numeric bounds. ``key``: the spec's
    name for it where that is not a Python name (``async`` for a field ``async_``)."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "key": key}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: typing.cast(Any, type(value))(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class Problem:
    """One thing wrong with a spec: where (dotted path), what, and how to fix it."""

    path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = self.path or "<spec>"
        text = f"{where}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class SpecError(ValueError):
    """Raised with every problem found in a spec, not only the first."""

    def __init__(self, problems: list[Problem], source: str = ""):
        self.problems = problems
        self.source = source
        head = f"invalid spec{f' {source}' if source else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in problems))


def spec_key(f: dataclasses.Field) -> str:
    """The name a spec file uses for field ``f``."""
    return f.metadata.get("key") or f.name


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of {_type_name(get_args(tp)[1])}"
    return getattr(tp, "__name__", str(tp))


class _Loader:
    """Walks a raw value against a type, collecting problems instead of stopping."""

    def __init__(self, resolve_kind):
        self.problems: list[Problem] = []
        self.resolve_kind = resolve_kind  # kind name -> dataclass, for polymorphic lists

    def fail(self, path: str, message: str, hint: str = "") -> None:
        self.problems.append(Problem(path, message, hint))

    def load(self, tp: Any, value: Any, path: str, meta: dict | None = None) -> Any:
        origin = get_origin(tp)
        if tp is Any:
            return value
        if origin in (Union, types.UnionType):
            return self._union(tp, value, path, meta)
        if value is None:
            self.fail(path, f"must be {_type_name(tp)}, got null")
            return None
        if dataclasses.is_dataclass(tp):
            return self.load_dataclass(tp, value, path)
        if isinstance(tp, type) and getattr(tp, "__forge_polymorphic__", False):
            return self._polymorphic(value, path)
        if origin is Literal:
            if value not in get_args(tp):
                close = difflib.get_close_matches(str(value), [str(a) for a in get_args(tp)], n=1)
                self.fail(path, f"must be one of {_type_name(tp)}, got {value!r}",
                          f"did you mean {close[0]!r}?" if close else "")
            return value
        if origin is list:
            if not isinstance(value, list):
                self.fail(path, f"must be a {_type_name(tp)}, got {type(value).__name__}")
                return value
            return [self.load(get_args(tp)[0], v, _join(path, i)) for i, v in enumerate(value)]
        if origin is dict:
            if not isinstance(value, dict):
                self.fail(path, f"must be a {_type_name(tp)}, got {type(value).__name__}")
                return value
            return {str(k): self.load(get_args(tp)[1], v, _join(path, str(k))) for k, v in value.items()}
        return self._scalar(tp, value, path, meta or {})

    def _union(self, tp, value, path, meta):
        options = get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            self.fail(path, f"must be {_type_name(tp)}, got null")
            return None
        non_null = [o for o in options if o is not type(None)]
        if len(non_null) == 1:
            return self.load(non_null[0], value, path, meta)
        for option in non_null:  # first option that loads cleanly wins
            trial = _Loader(self.resolve_kind)
            result = trial.load(option, value, path, meta)
            if not trial.problems:
                return result
        self.fail(path, f"must be {_type_name(tp)}, got {value!r}")
        return value

    def _scalar(self, tp, value, path, meta):
        if type(value).__name__ == "FromEnv":  # an env var's text: a number where a number is due
            value = str(value)
            if tp in (int, float, bool):
                import yaml

                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError:
                    pass
        if tp is float and isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 5e-5 (no dot) as a string; it is a number here
        ok = (
            (tp is bool and isinstance(value, bool))
            or (tp is int and isinstance(value, int) and not isinstance(value, bool))
            or (tp is float and isinstance(value, (int, float)) and not isinstance(value, bool))
            or (tp is str and isinstance(value, str))
        )
        if not ok:
            self.fail(path, f"must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
            return value
        if tp is float:
            value = float(value)
        if tp in (int, float):
            for key, test, word in (("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
                                    ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")):
                bound = meta.get(key)
                if bound is not None and not test(value, bound):
                    self.fail(path, f"must be {word} {bound}, got {value}")
        return value

    def _polymorphic(self, value, path):
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping with a 'kind', got {type(value).__name__}")
            return value
        kind = value.get("kind")
        cls = self.resolve_kind(kind)
        if cls is None:
            return value
        return self.load_dataclass(cls, value, path)

    def load_dataclass(self, cls, value, path):
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping, got {type(value).__name__} {value!r}")
            return None
        expand = getattr(cls, "expand_raw", None)  # shorthands (an RL recipe) filled in before typing
        if callable(expand):
            value = expand(value)
        fields = {spec_key(f): f for f in dataclasses.fields(cls) if f.init}
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, raw in value.items():
            if key not in fields:
                close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
                where = f"in {path}" if path else "at the top level"
                self.fail(_join(path, str(key)), f"unknown key {key!r} {where}",
                          f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(sorted(fields))}")
                continue
            f = fields[key]
            kwargs[f.name] = self.load(hints[f.name], raw, _join(path, key), dict(f.metadata))
        for key, f in fields.items():
            if f.name not in kwargs and f.default is _MISSING and f.default_factory is _MISSING:
                self.fail(_join(path, key), "is required", f.metadata.get("help", ""))
                kwargs[f.name] = None  # placeholder so cross-field checks still report their problems
        obj = cls(**kwargs)
        check = getattr(obj, "check", None)
        if callable(check):
            try:
                for sub, message, hint in check():
                    self.fail(_join(path, sub) if sub else path, message, hint)
            except (TypeError, AttributeError):  # a check tripping over an already-reported problem
                pass
        return obj


def load_dataclass(cls: type, data: dict, resolve_kind=lambda kind: None, source: str = "") -> Any:
    """Build ``cls`` from ``data`` or raise :class:`SpecError` listing every problem."""
    loader = _Loader(resolve_kind)
    obj = loader.load_dataclass(cls, data, "")
    if loader.problems:
        raise SpecError(loader.problems, source)
    return obj


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain JSON/YAML-ready data."""
    if dataclasses.is_dataclass(obj):
        return {spec_key(f): to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def json_schema(tp: Any, definitions: dict, polymorphic: dict[str, type] | None = None) -> dict:
    """JSON Schema (draft 2020-12) for a type; dataclasses go into ``definitions``."""
    origin = get_origin(tp)
    if tp is Any:
        return {}
    if tp is type(None):
        return {"type": "null"}
    if isinstance(tp, type) and getattr(tp, "__forge_polymorphic__", False):
        return {"oneOf": [json_schema(c, definitions, polymorphic) for c in (polymorphic or {}).values()]}
    if dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in definitions:
            definitions[name] = {}  # placeholder against recursion
            hints = typing.get_type_hints(tp)
            props, required = {}, []
            for f in dataclasses.fields(tp):
                sub = json_schema(hints[f.name], definitions, polymorphic)
                meta = f.metadata
                if meta.get("help"):
                    sub["description"] = meta["help"]
                for key, word in (("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum"), ("lt", "exclusiveMaximum")):
                    if meta.get(key) is not None:
                        sub[word] = meta[key]
                if f.default is not _MISSING:
                    sub["default"] = to_dict(f.default)
                elif f.default_factory is not _MISSING:
                    sub["default"] = to_dict(f.default_factory())
                else:
                    required.append(spec_key(f))
                props[spec_key(f)] = sub
            definitions[name] = {"type": "object", "properties": props, "required": required,
                                 "additionalProperties": False, "description": (tp.__doc__ or "").strip().split("\n")[0]}
        return {"$ref": f"#/$defs/{name}"}
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if origin in (Union, types.UnionType):
        return {"anyOf": [json_schema(a, definitions, polymorphic) for a in get_args(tp)]}
    if origin is list:
        return {"type": "array", "items": json_schema(get_args(tp)[0], definitions, polymorphic)}
    if origin is dict:
        return {"type": "object", "additionalProperties": json_schema(get_args(tp)[1], definitions, polymorphic)}
    return {"type": {bool: "boolean", int: "integer", float: "number", str: "string"}[tp]}
