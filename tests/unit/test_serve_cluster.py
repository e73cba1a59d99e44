"""`forge serve --replicas`: the replica argument, the key check on every route of Ray's
OpenAI router, and the refusal to deploy onto a Ray that would end with the command."""

from __future__ import annotations

import inspect

import pytest

from forge_ray import serve_cluster, serve_keys


def test_replicas_are_a_count_or_autoscaling_bounds():
    assert serve_cluster.parse_replicas("2") == (2, 2)
    assert serve_cluster.parse_replicas(3) == (3, 3)
    assert serve_cluster.parse_replicas("1:4") == (1, 4)
    for bad in ("0", "2:1", "two", "1:x", ""):
        with pytest.raises(ValueError, match="--replicas"):
            serve_cluster.parse_replicas(bad)


def test_every_router_route_checks_the_key_first():
    from fastapi import HTTPException
    from ray.serve.llm.ingress import OpenAiIngress
    from starlette.requests import Request

    from forge_ray.compat.ray_serve import router_endpoints

    names = router_endpoints(OpenAiIngress)
    assert {"models", "completions", "chat"} <= set(names)
    for name in names:  # FastAPI builds the route from this signature: types resolved, raw request present
        sig = inspect.signature(getattr(serve_cluster.KeyedOpenAiIngress, name))
        assert sig.parameters["request"].annotation is Request
        assert all(not isinstance(p.annotation, str) for p in sig.parameters.values())

    router = object.__new__(serve_cluster.KeyedOpenAiIngress)
    router._key_digest = serve_keys.digest("k3y")

    def request(auth: str | None) -> Request:
        headers = [(b"authorization", auth.encode())] if auth else []
        return Request({"type": "http", "headers": headers, "method": "GET", "path": "/v1/models"})

    router._check_key(request("Bearer k3y"))
    for auth in (None, "Bearer wrong", "k3y", "Basic k3y"):
        with pytest.raises(HTTPException) as refused:
            router._check_key(request(auth))
        assert refused.value.status_code == 401
    router._key_digest = None  # no key configured (loopback): every request passes
    router._check_key(request(None))


def test_a_private_ray_is_refused_by_name():
    with pytest.raises(ValueError, match="running Ray cluster"):
        serve_cluster._connect("local")
