"""Secrets never land where others can read them: a secret-named variable a spec uses is stored
as its ``${VAR}`` reference, and credentials are refused on command lines (`ps` shows them)."""

from __future__ import annotations

import subprocess
import sys

from forge_ray.runs import Storage
from forge_ray.spec import build_spec, spec_to_yaml
from forge_ray.spec.redact import redact

SECRET = "sk-live-9f8e7d6c5b4a"


def test_a_secret_from_the_environment_is_stored_as_its_reference(tmp_path, monkeypatch):
    monkeypatch.setenv("TEAM_LLM_API_KEY", SECRET)
    monkeypatch.setenv("SOME_PLAIN_SETTING", "not-a-secret-value")
    spec = build_spec({"kind": "eval", "name": "e", "description": "${SOME_PLAIN_SETTING}",
                       "models": ["http://10.0.0.5:8000/v1#m?key=${TEAM_LLM_API_KEY}"],
                       "tasks": [{"name": "t", "path": str(tmp_path / "t.jsonl")}]})
    assert SECRET in spec.models[0]  # the run itself sees the value
    stored = spec_to_yaml(spec)
    assert SECRET not in stored and "${TEAM_LLM_API_KEY}" in stored and "not-a-secret-value" in stored
    run = Storage(str(tmp_path / "runs")).run("e")
    run.create_or_resume("eval", stored, [])
    on_disk = "".join(p.read_text() for p in (tmp_path / "runs" / "e").rglob("*") if p.is_file())
    assert SECRET not in on_disk
    assert build_spec({"kind": "eval", "name": "e", "models": ["http://10.0.0.5:8000/v1#m?key=${TEAM_LLM_API_KEY}"],
                       "tasks": [{"name": "t", "path": str(tmp_path / "t.jsonl")}]}).models == spec.models
    monkeypatch.setenv("PIP_KEYRING_PROVIDER", "disabled")  # settings about secrets, and words, are left alone
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "t.jsonl"))
    assert redact({"d": f"disabled {tmp_path / 't.jsonl'}"}) == {"d": f"disabled {tmp_path / 't.jsonl'}"}
    used: set[str] = set()
    assert redact({"a": [f"x{SECRET}y"]}, used=used) == {"a": ["x${TEAM_LLM_API_KEY}y"]} and used == {"TEAM_LLM_API_KEY"}


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "forge_ray.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_credentials_on_the_command_line_are_refused(tmp_path):
    out = _cli("ui", "--auth", "admin:hunter2", "--storage", str(tmp_path))
    assert out.returncode == 2 and "--auth-file" in out.stderr and "FORGE_UI_AUTH" in out.stderr
    out = _cli("serve", "some-run", "--api-key", SECRET, "--storage", str(tmp_path))
    assert out.returncode == 2 and "--api-key-file" in out.stderr and "FORGE_SERVE_API_KEY" in out.stderr
    assert SECRET not in out.stderr


def test_the_ui_login_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    from ui.app import read_auth

    monkeypatch.delenv("FORGE_UI_AUTH", raising=False)
    assert read_auth(None) is None
    (tmp_path / "auth").write_text("alice:s3cret\n")
    assert read_auth(str(tmp_path / "auth")) == ("alice", "s3cret")
    monkeypatch.setenv("FORGE_UI_AUTH", "a-bare-token")
    assert read_auth(None) == ("forge", "a-bare-token")
