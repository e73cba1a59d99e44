"""Verifiable rewards as plain functions: ``(prompts, completions, **columns) -> list[float]``.

``columns`` are the prompt file's other fields, one list per field, aligned with
``prompts`` (e.g. ``answer=[...]``). Every function is usable on its own:

    >>> exact_match(["Who leads Team Otter?"], ["Mira Dolan"], answer=["mira dolan"])
    [0.0]
    >>> normalized_match(["Who leads Team Otter?"], ["Mira  Dolan."], answer=["mira dolan"])
    [1.0]
    >>> contains(["Who leads Team Otter?"], ["It is Mira Dolan, I think"], answer=["mira dolan"])
    [1.0]
    >>> numeric_match(["2+2?"], ["The answer is 4.0"], answer=["4"])
    [1.0]
    >>> regex_match(["id?"], ["AB-1234"], pattern=[r"^[A-Z]{2}-\\d{4}$"])
    [1.0]
    >>> json_valid(["give json"], ['{"a": 1}'], schema=[{"type": "object", "required": ["a"]}])
    [1.0]
    >>> length_penalty(["q"], ["x" * 30], max_chars=20)
    [-0.5]
"""

from __future__ import annotations

import json
import re
from typing import Any


def normalize(text: str) -> str:
    """Lower case, punctuation (except ``:`` and ``-``) dropped, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s:-]", "", str(text).lower())).strip()


def _first_line(text: str) -> str:
    return text.strip().split("\n")[0]


def exact_match(prompts: list[str], completions: list[str], answer: list[Any], **_) -> list[float]:
    """1 when the first line, stripped of surrounding whitespace, is the answer exactly."""
    return [float(_first_line(c).strip() == str(a).strip()) for c, a in zip(completions, answer)]


def normalized_match(prompts: list[str], completions: list[str], answer: list[Any], **_) -> list[float]:
    """1 when the normalised first line equals the normalised answer (case, punctuation, spaces)."""
    return [float(normalize(_first_line(c)) == normalize(a)) for c, a in zip(completions, answer)]


def contains(prompts: list[str], completions: list[str], answer: list[Any], **_) -> list[float]:
    """1 when the normalised answer occurs anywhere in the normalised completion."""
    return [float(normalize(a) in normalize(c)) for c, a in zip(completions, answer)]


def contains_answer(prompts: list[str], completions: list[str], answer: list[Any], **_) -> list[float]:
    """1 when the answer appears, as whole words, in the first line ("The part number of X is AB-1234.")."""
    out = []
    for c, a in zip(completions, answer):
        pattern = rf"(^|\s){re.escape(normalize(a))}($|\s)"
        out.append(float(re.search(pattern, normalize(_first_line(c))) is not None))
    return out


_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _last_number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def numeric_match(prompts: list[str], completions: list[str], answer: list[Any], rel_tol: float = 1e-6,
                  abs_tol: float = 0.0, **_) -> list[float]:
    """1 when the last number in the completion equals the answer within ``abs_tol`` or
    ``rel_tol`` of it (``1,000`` = ``1000.0``)."""
    out = []
    for c, a in zip(completions, answer):
        got, want = _last_number(c), _last_number(str(a))
        ok = got is not None and want is not None and abs(got - want) <= max(abs_tol, rel_tol * max(1.0, abs(want)))
        out.append(float(ok))
    return out


def regex_match(prompts: list[str], completions: list[str], pattern: list[str] | str | None = None,
                answer: list[Any] | None = None, **_) -> list[float]:
    """1 when ``pattern`` (one per row, or one for all) is found in the stripped completion.
    A pattern may use ``{answer}``, replaced by the row's answer, escaped (``^{answer}\\b``)."""
    if pattern is None:
        raise ValueError("regex_match needs a pattern (a column, or scorer_args: {pattern: ...})")
    patterns = [pattern] * len(completions) if isinstance(pattern, str) else pattern
    answers = answer or [""] * len(completions)
    return [float(re.search(p.replace("{answer}", re.escape(str(a))), c.strip()) is not None)
            for c, p, a in zip(completions, patterns, answers)]


def json_valid(prompts: list[str], completions: list[str], schema: list[dict] | dict | None = None,
               **_) -> list[float]:
    """1 when the completion parses as JSON (and validates against ``schema`` when given)."""
    import jsonschema

    schemas = [schema] * len(completions) if schema is None or isinstance(schema, dict) else schema
    out = []
    for c, s in zip(completions, schemas):
        try:
            value = json.loads(c.strip())
            if s:
                jsonschema.validate(value, s if isinstance(s, dict) else json.loads(s))
            out.append(1.0)
        except (ValueError, jsonschema.ValidationError, jsonschema.SchemaError):
            out.append(0.0)
    return out


def length_penalty(prompts: list[str], completions: list[str], max_chars: int = 200, **_) -> list[float]:
    """``−(excess / max_chars)`` for completions longer than ``max_chars``, else 0."""
    return [-max(0, len(c) - max_chars) / max_chars for c in completions]
