"""An OpenAI-compatible endpoint as a model under evaluation (``http://host:port/v1#model``):
the model a team rents today, or one ``forge serve`` runs, asked the same task items as the
local models — through the chat API for chat-style tasks, the completions API for plain
ones, greedy. Only the items go to the endpoint; it is the user's choice which URL to name.
Generative tasks only: an endpoint has no log-likelihoods we can trust to match ours.

Keys: ``$FORGE_ENDPOINT_API_KEY`` goes only to the base URLs the operator lists in
``$FORGE_ENDPOINT_URLS`` (comma-separated, e.g. ``http://10.0.0.5:8000/v1``); any other URL a
user types into the arena, an eval spec or an agent's call is asked without a key, so a typed
``http://attacker/v1#m`` never receives it (:func:`endpoint_key`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

KEY_ENV = "FORGE_ENDPOINT_API_KEY"
URLS_ENV = "FORGE_ENDPOINT_URLS"


def is_endpoint(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


def split_ref(ref: str) -> tuple[str, str]:
    """``http://h:p/v1#name`` → (base URL, model name)."""
    url, sep, name = ref.partition("#")
    if not sep or not name:
        raise ValueError(f"endpoint {ref!r}: name the model after '#', e.g. http://127.0.0.1:8000/v1#demo-sft")
    return url, name


def canonical_url(url: str) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, path) of an endpoint's base URL, or None for one that cannot be
    matched safely (credentials, a query or a fragment in it, no host, another scheme)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.username or parts.password \
            or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port, parts.path.rstrip("/")


def endpoint_key(ref: str) -> str | None:
    """The key to send to endpoint ``ref`` (``URL#model`` or a base URL): ``$FORGE_ENDPOINT_API_KEY``
    when the base URL is exactly one of ``$FORGE_ENDPOINT_URLS``, else None."""
    key = os.environ.get(KEY_ENV)
    target = canonical_url(ref.partition("#")[0])
    if not key or target is None:
        return None
    allowed = {canonical_url(u) for u in os.environ.get(URLS_ENV, "").split(",") if u.strip()}
    return key if target in allowed - {None} else None


def _refused(url: str, api_key: str | None) -> PermissionError:
    if api_key:
        return PermissionError(f"endpoint {url} refused the key (401)")
    why = (f"it is not one of ${URLS_ENV}, the only URLs ${KEY_ENV} is sent to" if os.environ.get(KEY_ENV)
           else f"no ${KEY_ENV} is set")
    return PermissionError(f"endpoint {url} wants an API key (401); none was sent because {why}")


class EndpointModel:
    """The interface :func:`forge_ray.eval.tasks.run_task` uses, over HTTP."""

    def __init__(self, ref: str, api_key: str | None = None, concurrency: int = 8, timeout_s: float = 120,
                 temperature: float = 0.0):
        from openai import OpenAI

        self.url, self.name = split_ref(ref)
        self.api_key = api_key
        self.client = OpenAI(base_url=self.url, api_key=api_key or "none", timeout=timeout_s, max_retries=2)
        self.concurrency = concurrency
        self.temperature = temperature  # 0: greedy (evaluation); a teacher samples

    def prompt_ids(self, prompt: str, shots=(), style: str = "auto"):
        """Not token ids here: the request to send (chat messages, or plain ``Q: … A:`` text)."""
        if style == "plain":
            return ("plain", "".join(f"Q: {q}\nA: {a}\n\n" for q, a in shots) + f"Q: {prompt}\nA:")
        turns = []
        for q, a in shots:
            turns += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return ("chat", turns + [{"role": "user", "content": prompt}])

    def _ask(self, request, max_new_tokens: int) -> str:
        kind, body = request
        if kind == "chat":
            r = self.client.chat.completions.create(model=self.name, messages=body, max_tokens=max_new_tokens,
                                                    temperature=self.temperature)
            return r.choices[0].message.content or ""
        r = self.client.completions.create(model=self.name, prompt=body, max_tokens=max_new_tokens,
                                           temperature=self.temperature)
        return r.choices[0].text

    def generate(self, prompts: list, max_new_tokens: int = 32) -> list[str]:
        import openai

        try:
            with ThreadPoolExecutor(self.concurrency) as pool:
                return list(pool.map(lambda p: self._ask(p, max_new_tokens), prompts))
        except openai.AuthenticationError:
            raise _refused(self.url, self.api_key) from None

    def decode(self, text: str, style: str = "auto") -> str:
        return text.strip().split("\n")[0] if style == "plain" else text.strip()


def stream_endpoint(ref: str, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0,
                    api_key: str | None = None):
    """The arena's side of an endpoint: one chat answer, streamed (the text so far per chunk)."""
    import openai

    url, name = split_ref(ref)
    client = openai.OpenAI(base_url=url, api_key=api_key or "none", timeout=120, max_retries=1)
    try:
        stream = client.chat.completions.create(model=name, messages=[{"role": "user", "content": prompt}],
                                                max_tokens=max_new_tokens, temperature=temperature, stream=True)
    except openai.AuthenticationError:
        raise _refused(url, api_key) from None
    text = ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            yield text.strip()


def evaluate_endpoint(ref: str, tasks: list[dict], api_key: str | None = None, prepared: dict | None = None) -> dict:
    """Like :func:`forge_ray.eval.evaluate.evaluate_model`, for an endpoint (``prepared``: the
    retrieval baseline's rows, passages in front, instead of the task files)."""
    import time

    from forge_ray.eval.tasks import load_rows, run_task
    from forge_ray.spec.stages import TaskSpec

    t0 = time.perf_counter()
    model = EndpointModel(ref, api_key)
    out: dict = {"tasks": {}, "perplexity": None, "backend": "endpoint"}
    for task_dict in tasks:
        task = TaskSpec(**task_dict)
        if prepared is not None and task.name not in prepared:
            continue
        shots, rows = ([tuple(s) for s in prepared[task.name][0]], prepared[task.name][1]) if prepared is not None \
            else load_rows(task)
        out["tasks"][task.name] = run_task(model, task, shots, rows)
    out["seconds"] = time.perf_counter() - t0
    return out
