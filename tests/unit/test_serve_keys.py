"""The serving key on every route of the single-server backend: vLLM's real app, built as
`forge serve` builds it (our middleware through vLLM's ``--middleware``), every route it has
called without the key; and the digest the server holds instead of the key."""

from __future__ import annotations

import pytest

from forge_ray import serve_keys


def test_the_digest_is_salted_and_checks_only_the_key():
    a, b = serve_keys.digest("k3y"), serve_keys.digest("k3y")
    assert a != b and "k3y" not in a  # two deployments of one key share nothing
    assert serve_keys.key_matches("k3y", a) and serve_keys.key_matches("k3y", b)
    assert not serve_keys.key_matches("k3y ", a) and not serve_keys.key_matches("", a)
    assert not serve_keys.key_matches("k3y", "sha256$" + a.split("$", 1)[1])  # another scheme is refused
    assert serve_keys.bearer_matches("Bearer k3y", a) and serve_keys.bearer_matches("bearer  k3y", a)
    for header in (None, "", "k3y", "Basic k3y", "Bearer wrong"):
        assert not serve_keys.bearer_matches(header, a)


def test_the_middleware_will_not_start_without_a_digest(monkeypatch):
    monkeypatch.delenv(serve_keys.DIGEST_ENV, raising=False)
    with pytest.raises(RuntimeError, match=serve_keys.DIGEST_ENV):
        serve_keys.RequireKeyOnEveryRoute(app=None)


def _paths(app) -> list[tuple[str, str]]:
    """(method, path) for every route of the app, mounts and websockets included."""
    from starlette.routing import Mount, Route, WebSocketRoute

    out = []
    for route in app.routes:
        path = route.path.replace("{", "").replace("}", "") or "/"
        if isinstance(route, WebSocketRoute):
            out.append(("WS", path))
        elif isinstance(route, Mount):
            out.append(("GET", path.rstrip("/") + "/"))
        elif isinstance(route, Route):
            out += [(m, path) for m in sorted(route.methods or {"GET"}) if m != "HEAD"]
    return out


def test_every_route_of_the_vllm_app_refuses_a_request_without_the_key(monkeypatch):
    pytest.importorskip("vllm")
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    monkeypatch.setenv(serve_keys.DIGEST_ENV, serve_keys.digest("k3y"))
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(
        ["--middleware", "forge_ray.serve_keys.RequireKeyOnEveryRoute"])
    app = build_app(args, supported_tasks=("generate",))
    routes = _paths(app)
    named = {p for _, p in routes}
    # the routes a security review found open behind vLLM's own key, among everything checked
    assert {"/invocations", "/tokenize", "/detokenize", "/metrics/", "/docs", "/v1/completions",
            "/v1/chat/completions", "/v1/models", "/health"} <= named, sorted(named)
    client = TestClient(app, raise_server_exceptions=False)
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "k3y"}):
            if method == "WS":
                with pytest.raises(WebSocketDisconnect):
                    with client.websocket_connect(path, headers=headers):
                        pass
                continue
            response = client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers, response.status_code)
    # with the key, the middleware lets the request through to vLLM's own handler
    assert client.get("/openapi.json", headers={"Authorization": "Bearer k3y"}).status_code == 200
