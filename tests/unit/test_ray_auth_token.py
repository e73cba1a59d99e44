"""One lookup of Ray's auth token serves both the Jobs client's header and the switch to
token mode: they agree on every case, an empty token file included."""

from __future__ import annotations

import os

import pytest

from forge_ray.jobs_client import auth_headers
from forge_ray.runner import ray_auth_token, use_token_auth_if_available


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "auth_token"))
    return tmp_path / "auth_token"


def _mode_switched_on(monkeypatch) -> bool:
    use_token_auth_if_available()
    on = os.environ.get("RAY_AUTH_MODE") == "token"
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    return on


def test_no_token_anywhere_means_no_header_and_no_token_mode(clean_env, monkeypatch):
    assert ray_auth_token() is None and auth_headers() == {} and not _mode_switched_on(monkeypatch)


def test_an_empty_token_file_is_no_token(clean_env, monkeypatch):
    clean_env.write_text("\n")
    assert ray_auth_token() is None and auth_headers() == {} and not _mode_switched_on(monkeypatch)


def test_the_file_then_the_environment(clean_env, monkeypatch):
    clean_env.write_text("from-file\n")
    assert auth_headers() == {"Authorization": "Bearer from-file"} and _mode_switched_on(monkeypatch)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert ray_auth_token() == "from-env" and _mode_switched_on(monkeypatch)


def test_a_mode_the_user_chose_is_kept(clean_env, monkeypatch):
    clean_env.write_text("t")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    use_token_auth_if_available()
    assert os.environ["RAY_AUTH_MODE"] == "disabled"
