"""Serving API keys: a salted digest to check against, and an ASGI middleware that requires the
key on every route of the single-server backend.

vLLM's own ``--api-key`` guards ``/v1/*`` only: ``/invocations`` (which answers completions and
chats), ``/tokenize``, ``/metrics``, ``/docs`` and the rest stay open. :class:`RequireKeyOnEveryRoute`
is handed to vLLM's server through its public ``--middleware`` option and refuses any HTTP or
WebSocket request without ``Authorization: Bearer KEY`` before it reaches a route, so a route a
later vLLM adds is covered too. Neither the server's environment nor any file under the storage
root holds the key itself: the server gets the salted digest (:func:`digest`), the run's serving
record only whether a key is set.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

#: the environment variable through which the server process receives the salted digest
DIGEST_ENV = "FORGE_SERVE_KEY_DIGEST"
SCHEME = "hmac-sha256"


def digest(key: str, salt: str | None = None) -> str:
    """``hmac-sha256$SALT$HEX``: the key keyed into HMAC-SHA256 with a random salt. API keys
    are long random strings, so a fast keyed hash is enough (no password stretching), and the
    salt keeps two deployments of the same key from sharing a digest."""
    salt = salt or secrets.token_hex(16)
    mac = hmac.new(salt.encode(), key.encode(), hashlib.sha256).hexdigest()
    return f"{SCHEME}${salt}${mac}"


def key_matches(key: str, expected: str) -> bool:
    scheme, _, rest = expected.partition("$")
    salt, _, _ = rest.partition("$")
    if scheme != SCHEME or not salt:
        return False
    return hmac.compare_digest(digest(key, salt), expected)


def bearer_matches(authorization: str | None, expected: str) -> bool:
    """Whether an ``Authorization`` header value carries the key ``expected`` is a digest of."""
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and key_matches(token.strip(), expected)


class RequireKeyOnEveryRoute:
    """Pure ASGI middleware: every ``http`` and ``websocket`` request needs the key whose digest
    is in ``$FORGE_SERVE_KEY_DIGEST``; lifespan events pass. It refuses to start without that
    digest, so a server meant to be keyed never comes up open."""

    def __init__(self, app, expected: str | None = None):
        self.app = app
        self.expected = expected or os.environ.get(DIGEST_ENV)
        if not self.expected or not self.expected.startswith(f"{SCHEME}$"):
            raise RuntimeError(f"RequireKeyOnEveryRoute needs ${DIGEST_ENV} (a digest from forge_ray.serve_keys)")

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if bearer_matches(headers.get("authorization"), self.expected):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        body = b'{"error": "invalid or missing API key (Authorization: Bearer KEY)"}'
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
