"""The endpoint key goes only to the base URLs the operator listed: a real local HTTP server
(an OpenAI-style chat stream) records the headers the arena's and the eval's requests carry."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from forge_ray import api
from forge_ray.eval.endpoint import EndpointModel, endpoint_key

KEY = "s3cret-endpoint-key"


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str | None] = []
    wants_key: str | None = None

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        auth = self.headers.get("Authorization")
        type(self).seen.append(auth)
        if self.wants_key and auth != f"Bearer {self.wants_key}":
            body = b'{"error": {"message": "invalid key", "type": "auth"}}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                 "choices": [{"index": 0, "delta": {"content": "hello"}, "finish_reason": None}]}
        body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    _Recorder.seen, _Recorder.wants_key = [], None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_a_typed_url_that_is_not_listed_gets_no_key(server, monkeypatch):
    monkeypatch.setenv("FORGE_ENDPOINT_API_KEY", KEY)
    monkeypatch.delenv("FORGE_ENDPOINT_URLS", raising=False)
    assert list(api.generate(f"{server}#m", "hi", max_new_tokens=4)) == ["hello"]
    monkeypatch.setenv("FORGE_ENDPOINT_URLS", "http://10.0.0.5:8000/v1")
    assert list(api.generate(f"{server}#m", "hi", max_new_tokens=4)) == ["hello"]
    assert _Recorder.seen == ["Bearer none", "Bearer none"]  # the client's placeholder, never the key


def test_a_listed_url_gets_the_key_in_the_arena_and_the_eval(server, monkeypatch):
    monkeypatch.setenv("FORGE_ENDPOINT_API_KEY", KEY)
    monkeypatch.setenv("FORGE_ENDPOINT_URLS", f"http://10.0.0.5:8000/v1, {server}/")
    _Recorder.wants_key = KEY
    assert list(api.generate(f"{server}#m", "hi", max_new_tokens=4)) == ["hello"]
    model = EndpointModel(f"{server}#m", endpoint_key(f"{server}#m"))
    assert model.api_key == KEY and _Recorder.seen == [f"Bearer {KEY}"]


def test_a_keyed_endpoint_that_got_no_key_says_why(server, monkeypatch):
    monkeypatch.setenv("FORGE_ENDPOINT_API_KEY", KEY)
    monkeypatch.delenv("FORGE_ENDPOINT_URLS", raising=False)
    _Recorder.wants_key = KEY
    with pytest.raises(PermissionError, match="FORGE_ENDPOINT_URLS"):
        list(api.generate(f"{server}#m", "hi", max_new_tokens=4))


@pytest.mark.parametrize("lookalike", [
    "http://127.0.0.1:8000/v1.evil.example",       # a longer path
    "http://127.0.0.1:8000/v1/../../other",        # another path
    "http://127.0.0.1:8000@evil.example/v1",       # credentials: the host is evil.example
    "http://evil.example/?u=http://127.0.0.1:8000/v1",
    "https://127.0.0.1:8000/v1",                   # another scheme
    "http://127.0.0.1:8001/v1",                    # another port
    "http://127.0.0.1.evil.example:8000/v1",       # another host
    "ftp://127.0.0.1:8000/v1",
])
def test_lookalike_urls_get_no_key(lookalike, monkeypatch):
    monkeypatch.setenv("FORGE_ENDPOINT_API_KEY", KEY)
    monkeypatch.setenv("FORGE_ENDPOINT_URLS", "http://127.0.0.1:8000/v1")
    assert endpoint_key("http://127.0.0.1:8000/v1#m") == KEY
    assert endpoint_key("HTTP://127.0.0.1:8000/v1/#m") == KEY  # the same URL, written another way
    assert endpoint_key(f"{lookalike}#m") is None
