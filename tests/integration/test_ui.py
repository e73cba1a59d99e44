"""The web app, started by the test with `forge ui` on 127.0.0.1 and driven from Debian's
Chromium (Playwright, headless) as a person would: the submit form sends a tiny pretrain of
the demo corpus to the session cluster's Jobs API and the Jobs tab shows it succeed with a
loss plot; the arena streams two runs' answers and a vote reaches the leaderboard. The app's
API is driven with `gradio_client`; the safety rules are checked on the real command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import REPO, VENV_BIN, _free_port, forge, read_json
from tests.time_limits import limited

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def start_ui(*args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`forge ui` on a free loopback port, once it answers HTTP. Its output goes to a file, not
    a pipe: a pipe nobody reads stops the app at its 64 KiB-th byte of output."""
    import tempfile

    port = _free_port()
    out = tempfile.NamedTemporaryFile(prefix="forge-ui-", suffix=".log", delete=False)  # noqa: SIM115 - kept open by the app
    proc = subprocess.Popen([str(VENV_BIN / "forge"), "ui", "--port", str(port), *args], cwd=REPO,
                            env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"forge ui did not start: {open(out.name).read()[-3000:]}") from None
            time.sleep(0.5)


@pytest.fixture(scope="module")
def app_url(ray_cluster, demo_runs):
    proc, url = start_ui("--storage", str(demo_runs), "--address", ray_cluster["dashboard"],
                         env={"RAY_ADDRESS": ray_cluster["dashboard"]})
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def page(tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (make chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        yield page
        try:
            page.screenshot(path=str(tmp_path / "last.png"), full_page=True)  # kept for a failure's post-mortem
        except Exception as exc:  # a page that failed the test must not also fail the teardown
            print(f"no last screenshot: {exc}")
        browser.close()


def _pick(page, elem_id: str, value: str) -> None:
    """Choose ``value`` in a Gradio dropdown by typing it (custom values allowed)."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(value)
    option = page.get_by_role("option", name=value, exact=True)
    if option.count():
        option.first.click()  # the exact run, not the first name that starts with it
    else:
        box.press("Enter")


def test_submit_form_runs_a_pretrain_and_the_jobs_tab_shows_it(app_url, page, tmp_path, demo_runs):
    page.goto(app_url)
    page.locator("#run-name textarea, #run-name input").first.fill("ui-pretrain")
    _pick(page, "input-run", "demo-corpus")
    assert page.locator("#max-steps input").input_value() == "60"  # the fields show what the YAML will hold
    page.locator("#max-steps input").fill("12")
    page.locator("#workers input").fill("1")
    page.locator("#fill").click()
    code = page.locator("#spec-yaml .cm-content")
    code.filter(has_text="dataset: demo-corpus").wait_for()
    assert "tokenizer: demo-tokenizer" in code.inner_text()  # inherited from the data run's lineage
    page.locator("#validate").click()
    page.locator("#submit-result").filter(has_text="valid: pretrain spec").wait_for()
    assert "invalid" not in page.locator("#submit-result").inner_text()
    assert "parameters" in page.locator("#submit-result").inner_text()  # the preflight's estimate
    page.locator("#submit").click()
    page.locator("#submit-result").filter(has_text="submitted job").wait_for()
    page.screenshot(path=str(tmp_path / "submitted.png"), full_page=True)

    page.get_by_role("tab", name="Jobs").first.click()
    _pick(page, "job-run", "ui-pretrain")
    with limited(480) as limit_s:  # measured 26 s on a clean clone
        page.locator("#run-status").filter(has_text="succeeded").wait_for(timeout=limit_s * 1000)
    plot = page.locator("#metrics-plot img").first
    plot.wait_for()
    assert plot.evaluate("img => img.naturalWidth * img.naturalHeight") > 10_000
    assert "ui-pretrain" in page.locator("#run-log textarea").input_value()  # the job's own log, tailed
    page.screenshot(path=str(tmp_path / "jobs.png"), full_page=True)
    m = read_json(demo_runs / "ui-pretrain" / "manifest.json")
    assert m["status"] == "succeeded" and m["job_id"] and m["parents"] == ["demo-corpus", "demo-tokenizer"]
    assert m["metrics"]["loss"] < m["metrics"]["first_loss"]


def test_arena_streams_two_models_and_a_vote_reaches_the_leaderboard(app_url, page, tmp_path, demo_runs):
    page.goto(app_url)
    page.get_by_role("tab", name="Arena").first.click()
    _pick(page, "model-a", "demo-sft")
    _pick(page, "model-b", "demo-grpo")
    page.locator("#prompt textarea, #prompt input").first.fill("Who leads Team Otter?")
    page.locator("#generate").click()
    answer_b = page.locator("#answer-b textarea")
    page.wait_for_function("() => document.querySelector('#answer-b textarea').value.length > 5")
    page.wait_for_function("() => document.querySelector('#answer-a textarea').value.length > 5")
    time.sleep(2)  # let the stream finish
    assert answer_b.input_value()
    page.screenshot(path=str(tmp_path / "arena.png"), full_page=True)
    shown = answer_b.input_value()
    votes = demo_runs / "arena" / "votes.jsonl"
    before = len(votes.read_text().splitlines()) if votes.exists() else 0
    page.locator("#vote-b").click()
    page.locator("#vote-result").filter(has_text="vote recorded").wait_for()
    row = json.loads(votes.read_text().splitlines()[-1])
    assert row["answer_b"] == shown and row["vote"] == "b" and row["voter"] and len(row["battle"]) == 32
    page.locator("#vote-a").click()  # the battle is spent: one vote per generated pair
    page.locator("#vote-result").filter(has_text="generate answers first").wait_for()
    from gradio_client import Client

    # the answer boxes are outputs, and the vote endpoints take no answers: an API client has no battle
    forged = Client(app_url, verbose=False).predict(api_name="/vote_a")
    assert "generate answers first" in forged[0]
    assert len(votes.read_text().splitlines()) == before + 1
    page.get_by_role("tab", name="Leaderboard").first.click()
    page.locator("#refresh-board").click()
    page.locator("#leaderboard").filter(has_text="demo-grpo").wait_for()
    assert "demo-sft" in page.locator("#leaderboard").inner_text()
    page.screenshot(path=str(tmp_path / "leaderboard.png"), full_page=True)


def test_gradio_client_submits_through_the_app_api(app_url, demo_runs, demo_data):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    spec = (f"kind: tokenizer\nname: ui-client-tok\nvocab_size: 512\nsources:\n"
            f"  - path: {demo_data / 'docs'}\n")
    assert client.predict(spec, api_name="/validate").startswith("**valid**")
    bad = client.predict("kind: tokenizer\nname: x\nvocab_sise: 512\n", api_name="/validate")
    assert "vocab_sise" in bad and "invalid" in bad  # errors name their key
    assert "job `forge-ui-client-tok-" in client.predict(spec, api_name="/submit")
    deadline = time.time() + 300
    while read_json(demo_runs / "ui-client-tok" / "manifest.json")["status"] not in ("succeeded", "failed"):
        assert time.time() < deadline, "the submitted tokenizer job did not finish"
        time.sleep(2)
    assert read_json(demo_runs / "ui-client-tok" / "manifest.json")["status"] == "succeeded"


def test_the_app_refuses_an_open_address_without_auth_and_asks_for_login_with_it(tmp_path):
    refused = forge("ui", "--host", "0.0.0.0", "--storage", str(tmp_path))
    assert refused.returncode == 2 and "without authentication" in refused.stderr
    from gradio_client import Client

    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    proc, url = start_ui("--storage", str(tmp_path), "--auth-file", str(token))
    try:
        with pytest.raises(Exception):
            Client(url, verbose=False)  # no credentials: the API is closed
        client = Client(url, auth=("forge", "s3cret-token"), verbose=False)
        answer = client.predict("kind: tokenizer\nname: t\nsources: [{path: x}]\n", api_name="/validate")
        assert "tokenizer spec `t`" in answer  # the app answered, behind the login
    finally:
        proc.terminate()
        proc.wait(timeout=30)
