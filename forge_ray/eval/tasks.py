"""Task suites from JSONL files, scored by name. One scorer interface with RL: a scorer is
a reward function ``(prompts, completions, **columns) -> list[float]`` — every built-in
reward (``exact_match``, ``normalized_match``, ``contains``, ``contains_answer``,
``numeric_match``, ``regex_match``, ``json_valid``, ``code_tests`` …) or a user's own by
``module:function`` — plus ``choice_loglik``: multiple choice by the log-likelihood each
choice gets as the answer (no generation).

A task row: ``{"prompt": ..., "answer": ...}`` (any other fields reach the scorer as
columns, e.g. ``pattern`` or ``tests``), or ``{"prompt": ..., "choices": [...], "answer":
index-or-text}``. The first ``few_shot`` rows are the worked examples, not scored.
An image task gives every row an ``image`` (a path relative to the task file): its prompt is
a question about that image (named ``prompt``, or ``question`` as in the ``vlm`` stage's VQA
files), answered by vision-language models (``forge_ray.vlm.answer``).
"""

from __future__ import annotations

import json
from pathlib import Path

from forge_ray.allowed_paths import require_allowed
from forge_ray.spec.stages import TaskSpec

ALIASES = {"regex": "regex_match", "numeric": "numeric_match"}
#: row fields copied into every result (item files): the question's kind, where its fact comes
#: from, and — with retrieval — the question alone, the passages shown and whether they held the fact
SHOWN_FIELDS = ("type", "hops", "source_docs", "question", "passages", "gold_retrieved")


class TaskError(ValueError):
    """A task file row that cannot be scored (the message names file:line)."""


def load_rows(task: TaskSpec) -> tuple[list[tuple[str, str]], list[dict]]:
    """Few-shot ``(question, answer)`` pairs and the scored rows (each with ``line``)."""
    path = Path(task.path)
    if not path.is_file():
        raise TaskError(f"task {task.name!r}: {path} does not exist")
    require_allowed(str(path), f"task {task.name!r} file")
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskError(f"{path}:{line_no}: not JSON ({exc.msg})") from exc
        if isinstance(row, dict) and "prompt" not in row and "image" in row and "question" in row:
            row = {"prompt": row.pop("question"), **row}  # the VQA files the vlm stage reads
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise TaskError(f"{path}:{line_no}: needs a string 'prompt'")
        if "answer" not in row and "choices" not in row and task.scorer not in ("json_valid", "length_penalty"):
            raise TaskError(f"{path}:{line_no}: needs 'answer' (or 'choices' with an answer)")
        if task.scorer == "choice_loglik":
            _choice_index(row, f"{path}:{line_no}")
        if "image" in row:
            _check_image(row["image"], path, line_no)
        if rows and ("image" in row) != ("image" in rows[0]):
            raise TaskError(f"{path}:{line_no}: every row of a task has an 'image', or none does "
                            f"(line {rows[0]['line']} {'has' if 'image' in rows[0] else 'has none'})")
        rows.append({**row, "line": line_no})
    shots = [(r["prompt"], _answer_text(r)) for r in rows[:task.few_shot]]
    scored = rows[task.few_shot:]
    return shots, scored[:task.limit] if task.limit else scored


def has_images(task: TaskSpec) -> bool:
    """Whether the task's rows ask about images (read from its first row)."""
    for line in Path(task.path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            return "image" in json.loads(line)
    return False


def _check_image(image, path: Path, line_no: int) -> None:
    if not isinstance(image, str) or not image:
        raise TaskError(f"{path}:{line_no}: 'image' must be a path to an image file")
    if not (path.parent / image).is_file():
        raise TaskError(f"{path}:{line_no}: image {image!r} not found (paths are relative to {path.parent})")


def _answer_text(row: dict) -> str:
    if "choices" in row:
        return str(row["choices"][_choice_index(row, "")])
    return str(row.get("answer", ""))


def _choice_index(row: dict, where: str) -> int:
    choices, answer = row.get("choices"), row.get("answer")
    if not isinstance(choices, list) or len(choices) < 2:
        raise TaskError(f"{where}: choice_loglik needs 'choices' (a list of at least 2)")
    if isinstance(answer, int) and 0 <= answer < len(choices):
        return answer
    if answer in choices:
        return choices.index(answer)
    raise TaskError(f"{where}: answer {answer!r} is neither an index nor one of the choices")


def scorer(name: str):
    from forge_ray.rl import rewards

    return rewards.load(ALIASES.get(name, name))


def run_task(model, task: TaskSpec, shots: list[tuple[str, str]], rows: list[dict],
             generate=None) -> list[dict]:
    """Per-row results ``{line, prompt, answer, output, score}`` of one model on one task.
    ``generate(prompt_ids, max_new_tokens) -> token ids`` defaults to the model's own."""
    prompts = [model.prompt_ids(r["prompt"], shots, task.style) for r in rows]
    context = getattr(getattr(getattr(model, "model", None), "config", None), "max_position_embeddings", None)
    if isinstance(context, int) and task.scorer != "choice_loglik":
        # a prompt longer than the model's context (a question behind long passages) keeps its end:
        # the question and the turn that asks for the answer
        prompts = [p[-(context - task.max_new_tokens):] for p in prompts]
    if task.scorer == "choice_loglik":
        return _multiple_choice(model, rows, prompts)
    outputs = (generate or model.generate)(prompts, task.max_new_tokens)
    results = score_rows(task, rows, [model.decode(o, task.style) for o in outputs])
    end_ids = getattr(model, "end_ids", None)  # token-level models: did the answer end its turn?
    if end_ids is not None:
        for result, tokens in zip(results, outputs):
            result["ends_turn"] = bool(tokens) and tokens[-1] in end_ids
            result["length"] = len(tokens) - result["ends_turn"]
    return results


def run_image_task(answerer, task: TaskSpec, rows: list[dict]) -> list[dict]:
    """Per-row results of a vision-language model (:class:`~forge_ray.vlm.answer.VLMAnswerer`)
    on a task: questions with their images (or alone, for a text task), greedy answers."""
    if task.scorer == "choice_loglik" or task.few_shot:
        raise TaskError(f"task {task.name!r}: vision-language models are scored on generated answers "
                        "(no choice_loglik, no few_shot)")
    images = [r["image"] for r in rows] if rows and "image" in rows[0] else None
    texts = answerer.answer([r["prompt"] for r in rows], images, root=Path(task.path).parent,
                            max_new_tokens=task.max_new_tokens)
    return score_rows(task, rows, texts)


def score_rows(task: TaskSpec, rows: list[dict], texts: list[str]) -> list[dict]:
    """Score the outputs with the task's scorer (RL's reward interface); one result per row."""
    columns = {k: [r.get(k) for r in rows] for k in {k for r in rows for k in r} - {"prompt", "line"}}
    scores = scorer(task.scorer)([r["prompt"] for r in rows], texts, **columns, **task.scorer_args)
    return [{"line": r["line"], "prompt": r["prompt"], "answer": r.get("answer"), "output": t, "score": float(s),
             **{k: r[k] for k in SHOWN_FIELDS if k in r}} for r, t, s in zip(rows, texts, scores)]


def _multiple_choice(model, rows: list[dict], prompts: list[list[int]]) -> list[dict]:
    contexts, conts, owner = [], [], []
    for i, (row, ctx) in enumerate(zip(rows, prompts)):
        for choice in row["choices"]:
            contexts.append(ctx)
            conts.append(list(model.tok(str(choice), add_special_tokens=False)["input_ids"]))
            owner.append(i)
    ll = model.loglik(contexts, conts)
    out = []
    for i, row in enumerate(rows):
        mine = [s for s, o in zip(ll, owner) if o == i]
        pick = max(range(len(mine)), key=mine.__getitem__)
        right = _choice_index(row, "")
        out.append({"line": row["line"], "prompt": row["prompt"], "answer": row["choices"][right],
                    "output": row["choices"][pick], "score": float(pick == right), "logliks": mine})
    return out
