"""Row schemas per format: validate a raw record and normalise it.

Each format turns a record into ``(text, payload)``: ``text`` is the plain-text view used
by tokenizer training, cleaning and decontamination; ``payload`` holds the structured
fields a trainer needs (messages, prompt/chosen/rejected, …). A record that does not fit
raises :class:`~forge_ray.data.sources.DataError` naming the file, the line and the field.
"""

from __future__ import annotations

import os
from typing import Any

ROLES = ("system", "user", "assistant")


class RecordError(ValueError):
    """A record-level problem; the caller adds file and line."""

    def __init__(self, problem: str, hint: str = ""):
        self.problem, self.hint = problem, hint
        super().__init__(problem)


def _field(record: dict, key: str, types: tuple, what: str) -> Any:
    if key not in record:
        raise RecordError(f"missing field {key!r}", f"fields present: {sorted(record)}")
    value = record[key]
    if not isinstance(value, types) or isinstance(value, bool):
        raise RecordError(f"field {key!r} must be {what}, got {type(value).__name__}")
    return value


def _text(record: dict, field: str) -> tuple[str, dict]:
    return _field(record, field, (str,), "a string"), {}


def _chat(record: dict, field: str) -> tuple[str, dict]:
    messages = _field(record, "messages", (list,), "a list of {role, content}")
    if not messages:
        raise RecordError("field 'messages' is empty")
    clean = []
    for j, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RecordError(f"messages[{j}] must be an object, got {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise RecordError(f"messages[{j}].role must be one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise RecordError(f"messages[{j}].content must be a string, got {type(content).__name__}")
        clean.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in clean):
        raise RecordError("conversation has no assistant message", "SFT trains on assistant turns")
    return "\n".join(m["content"] for m in clean), {"messages": clean}


def _preference(record: dict, field: str) -> tuple[str, dict]:
    p = {k: _field(record, k, (str,), "a string") for k in ("prompt", "chosen", "rejected")}
    if p["chosen"] == p["rejected"]:
        raise RecordError("'chosen' and 'rejected' are identical", "a preference pair needs two different answers")
    return "\n".join(p.values()), p


def _prompt_answer(record: dict, field: str) -> tuple[str, dict]:
    prompt = _field(record, "prompt", (str,), "a string")
    answer = _field(record, "answer", (str, int, float), "a string or number")
    extra = {k: v for k, v in record.items() if k not in ("prompt", "answer") and isinstance(v, (str, int, float))}
    return f"{prompt}\n{answer}", {"prompt": prompt, "answer": str(answer), **extra}


def _image_text(record: dict, field: str, base_dir: str = "") -> tuple[str, dict]:
    text = _field(record, field if field != "text" else "text", (str,), "a string")
    image = record.get("image")
    if isinstance(image, str):
        path = image if os.path.isabs(image) or "://" in image else os.path.join(base_dir, image)
        if "://" not in path and not os.path.exists(path):
            raise RecordError(f"image file {image!r} does not exist", f"paths are relative to {base_dir or '.'}")
        return text, {"image_path": path}
    if isinstance(image, (bytes, bytearray)):
        return text, {"image_bytes": bytes(image)}
    raise RecordError("field 'image' must be a path or bytes", f"got {type(image).__name__}")


FORMATS = {"text": _text, "chat": _chat, "preference": _preference, "prompt_answer": _prompt_answer,
           "image_text": _image_text}


def normalize(record: dict, fmt: str, field: str = "text", base_dir: str = "") -> tuple[str, dict]:
    """``(text, payload)`` for a record in format ``fmt``; raises :class:`RecordError`."""
    if fmt == "image_text":
        return _image_text(record, field, base_dir)
    return FORMATS[fmt](record, field)
