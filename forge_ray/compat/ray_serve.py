"""Ray Serve LLM internals used by ``forge serve --cluster`` (:mod:`forge_ray.serve_cluster`)."""

from __future__ import annotations

CHECKED = {"ray": "2.60"}


def router_endpoints(ingress_cls: type) -> list[str]:
    """The names of the routes Ray's OpenAI router serves (``/v1/models``, completions, chat,
    embeddings, tokenize, …) that ``ingress_cls`` defines: each must carry the API-key check.
    Ray keeps the list in ``ray.llm._internal``; a new route in a later Ray would otherwise be
    served without a key."""
    from ray.llm._internal.serve.core.ingress.ingress import DEFAULT_ENDPOINTS

    return [name for name in DEFAULT_ENDPOINTS if hasattr(ingress_cls, name)]


def http_options():
    """The options Serve's proxy really runs with (host, port). ``serve.start`` keeps the first
    caller's options, and Ray 2.60 has no public accessor to read them back."""
    from ray.serve import context

    return context._get_global_client().http_config
