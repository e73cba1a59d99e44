"""An OpenAI-compatible endpoint as a model under evaluation (``http://host:port/v1#model``):
the model a team rents today, or one ``forge serve`` runs, asked the same task items as the
local models — through the chat API for chat-style tasks, the completions API for plain
ones, greedy. Only the items go to the endpoint; it is the user's choice which URL to name.
Generative tasks only: an endpoint has no log-likelihoods we can trust to match ours."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


def is_endpoint(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


def split_ref(ref: str) -> tuple[str, str]:
    """``http://h:p/v1#name`` → (base URL, model name)."""
    url, sep, name = ref.partition("#")
    if not sep or not name:
        raise ValueError(f"endpoint {ref!r}: name the model after '#', e.g. http://127.0.0.1:8000/v1#demo-sft")
    return url, name


class EndpointModel:
    """The interface :func:`forge_ray.eval.tasks.run_task` uses, over HTTP."""

    def __init__(self, ref: str, api_key: str | None = None, concurrency: int = 8, timeout_s: float = 120):
        from openai import OpenAI

        self.url, self.name = split_ref(ref)
        self.client = OpenAI(base_url=self.url, api_key=api_key or "none", timeout=timeout_s, max_retries=2)
        self.concurrency = concurrency

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
                                                    temperature=0.0)
            return r.choices[0].message.content or ""
        r = self.client.completions.create(model=self.name, prompt=body, max_tokens=max_new_tokens, temperature=0.0)
        return r.choices[0].text

    def generate(self, prompts: list, max_new_tokens: int = 32) -> list[str]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda p: self._ask(p, max_new_tokens), prompts))

    def decode(self, text: str, style: str = "auto") -> str:
        return text.strip().split("\n")[0] if style == "plain" else text.strip()


def stream_endpoint(ref: str, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0,
                    api_key: str | None = None):
    """The arena's side of an endpoint: one chat answer, streamed (the text so far per chunk)."""
    from openai import OpenAI

    url, name = split_ref(ref)
    client = OpenAI(base_url=url, api_key=api_key or "none", timeout=120, max_retries=1)
    stream = client.chat.completions.create(model=name, messages=[{"role": "user", "content": prompt}],
                                            max_tokens=max_new_tokens, temperature=temperature, stream=True)
    text = ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            yield text.strip()


def evaluate_endpoint(ref: str, tasks: list[dict], api_key: str | None = None) -> dict:
    """Like :func:`forge_ray.eval.evaluate.evaluate_model`, for an endpoint."""
    import time

    from forge_ray.eval.tasks import load_rows, run_task
    from forge_ray.spec.stages import TaskSpec

    t0 = time.perf_counter()
    model = EndpointModel(ref, api_key)
    out: dict = {"tasks": {}, "perplexity": None, "backend": "endpoint"}
    for task_dict in tasks:
        task = TaskSpec(**task_dict)
        shots, rows = load_rows(task)
        out["tasks"][task.name] = run_task(model, task, shots, rows)
    out["seconds"] = time.perf_counter() - t0
    return out
