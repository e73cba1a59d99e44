"""The web app: submit a stage (form or YAML, validated first), watch jobs (live log tail,
metric plots, stop), talk to two models side by side and vote (the arena), and read the
leaderboard. Every action goes through :mod:`forge_ray.api`, the same surface as the CLI.

    forge ui                                        # http://127.0.0.1:7860, local storage and Ray
    forge ui --address http://HEAD:8265 --storage s3://bucket/runs
    forge ui --host 0.0.0.0 --auth admin:secret     # any other address needs authentication
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import yaml

from forge_ray import api
from ui import forms

PLOT_KEYS = [("loss", "training loss"), ("val_loss", "validation loss"), ("val_bpb", "validation bits/byte"),
             ("reward_mean", "reward"), ("eval_reward", "held-out reward (greedy)"),
             ("eval_reward_sampled", "held-out reward (sampled)"), ("kl_to_ref", "KL to reference"),
             ("tokens_per_s", "tokens/s")]


class App:
    """The callbacks, bound to one storage root and one Ray cluster."""

    def __init__(self, storage: str | None, address: str | None):
        self.storage, self.address = storage, address

    # ------------------------------------------------------------------ submit

    def runs(self) -> dict[str, dict]:
        from forge_ray.runs import Storage

        return {m["name"]: m for m in Storage(self.storage).list_runs()}

    def run_names(self) -> list[str]:
        return list(self.runs())

    def form_yaml(self, kind, name, input_run, data_path, preset, lr, max_steps, micro_batch, workers, cpus, gpus):
        spec = forms.form_to_spec(kind, name, input_run, data_path, preset, lr, max_steps, micro_batch, workers,
                                  cpus, gpus, runs=self.runs(),
                                  tokenizers=api.input_choices(kind, "tokenizer", self.storage))
        return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)

    def kind_changed(self, kind: str):
        """The fields show what the kind's spec will hold; the input picker offers only runs that
        stage accepts."""
        import gradio as gr

        values = forms.field_values(kind)
        key = forms.INPUT_KEY.get(kind)
        choices = api.input_choices(kind, key, self.storage) if key else []
        return (gr.update(value=values["name"]), gr.update(choices=choices, value=choices[0] if choices else None),
                *(gr.update(value=values[k]) for k in ("lr", "max_steps", "micro_batch", "workers", "cpus", "gpus")))

    def _parse(self, spec_yaml: str) -> dict:
        spec = yaml.safe_load(spec_yaml or "")
        if not isinstance(spec, dict):
            raise ValueError("the spec must be a YAML mapping (kind: ..., name: ..., ...)")
        return spec

    def validate(self, spec_yaml: str) -> str:
        """Preflight of the YAML: every problem with its key, sizes and memory (Markdown)."""
        try:
            spec = self._parse(spec_yaml)
            pre = api.validate(spec, storage=self.storage, address=self.address)
        except Exception as exc:  # noqa: BLE001 - YAML syntax and the like, shown to the user
            return f"**invalid**: {exc}"
        return forms.preflight_markdown(pre.to_json(), spec)

    def submit(self, spec_yaml: str) -> str:
        """Validate, then submit to the cluster's Jobs API; the job id, or why not."""
        try:
            spec = self._parse(spec_yaml)
            pre = api.validate(spec, storage=self.storage, address=self.address)
            if not pre.ok:
                return forms.preflight_markdown(pre.to_json(), spec)
            if not (self.address or os.environ.get("RAY_ADDRESS")):
                return ("**not submitted**: this app knows no Ray cluster to submit to; start it with "
                        "`forge ui --address http://HEAD:8265` (or set `RAY_ADDRESS`)")
            job = api.submit(spec, storage=self.storage, address=self.address)
        except Exception as exc:  # noqa: BLE001
            return f"**not submitted**: {exc}"
        return f"**submitted** job `{job.job_id}` for run `{job.name}` — watch it in the Jobs tab"

    def upload(self, path: str | None) -> str:
        return Path(path).read_text(encoding="utf-8") if path else ""

    # ------------------------------------------------------------------ jobs

    def table(self) -> list[list]:
        rows = []
        for m in self.runs().values():
            metrics = m.get("metrics", {})
            keys = [k for k in ("loss", "val_loss", "val_bpb", "val_accuracy", "eval_reward", "tokens") if k in metrics]
            rows.append([m["name"], m["kind"], m["status"], m.get("job_id") or "", ", ".join(m.get("parents", [])),
                         ", ".join(f"{k}={metrics[k]:.4g}" for k in keys[:3])])
        return rows

    def detail(self, run_name: str | None):
        """Status line, log tail, metric plot and links of one run."""
        if not run_name:
            return "pick a run", "", None, ""
        try:
            info = api.status(run_name, storage=self.storage)
        except Exception as exc:  # noqa: BLE001
            return f"{run_name}: {exc}", "", None, ""
        try:
            log = "".join(api.logs(run_name, storage=self.storage, address=self.address))[-6000:]
        except Exception as exc:  # noqa: BLE001 - the cluster may be gone; the run's status still shows
            log = f"(no log: {exc})"
        status = f"{info.name} ({info.kind}): {info.status}" + (f" — {info.error['message']}" if info.error else "")
        return status, log, self.plot(run_name), self.links(run_name)

    def plot(self, run_name: str):
        rows = api.metrics(run_name, storage=self.storage)
        keys = [(k, t) for k, t in PLOT_KEYS if any(k in r for r in rows)]
        if not keys:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
        for ax, (key, title) in zip(axes[0], keys):
            pts = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
            ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None)
            ax.set_title(title)
            ax.set_xlabel("step")
        fig.tight_layout()
        plt.close(fig)
        return fig

    def links(self, run_name: str) -> str:
        from forge_ray.runs import Storage

        run = Storage(self.storage).run(run_name)
        outputs = run.manifest().get("outputs", {})
        lines = [f"- {name}: `{run.file(rel)}`" for name, rel in outputs.items()]
        if run.exists("report/report.md"):
            lines.append("\n" + run.read_text("report/report.md").split("![")[0])
        return "\n".join(lines)

    def stop(self, run_name: str | None) -> str:
        if not run_name:
            return "pick a run"
        try:
            job = api.stop(run_name, address=self.address, storage=self.storage)
        except Exception as exc:  # noqa: BLE001
            return f"could not stop {run_name}: {exc}"
        return f"job {job.job_id}: {job.status}"

    # ------------------------------------------------------------------ arena

    def chat_models(self) -> list[str]:
        return api.chat_models(self.storage)

    def battle(self, model_a: str, model_b: str, prompt: str, max_new_tokens: int):
        """Both answers, streamed side by side (one token of each in turn); the last update also
        carries the battle (models, prompt, the answers as generated) into the session's
        server-side state, which is all a vote can refer to."""
        if not (model_a and model_b and prompt):
            yield "pick two models and type a prompt", "", None
            return
        streams = [api.generate(m, prompt, int(max_new_tokens), storage=self.storage) for m in (model_a, model_b)]
        texts, done = ["", ""], [False, False]
        while not all(done):
            for i, stream in enumerate(streams):
                if not done[i]:
                    try:
                        texts[i] = next(stream)
                    except StopIteration:
                        done[i] = True
            yield texts[0], texts[1], None
        yield texts[0], texts[1], {"id": uuid.uuid4().hex, "model_a": model_a, "model_b": model_b, "prompt": prompt,
                                   "answer_a": texts[0], "answer_b": texts[1]}

    def vote(self, battle: dict | None, choice: str, voter: str | None = None):
        """One vote on the battle this session generated (never on answers a client sends), by the
        logged-in user; the battle is then spent, so it is counted once."""
        if not battle:
            return "generate answers first", self.board(), None
        api.vote(battle["model_a"], battle["model_b"], battle["prompt"], choice, storage=self.storage,
                 answer_a=battle["answer_a"], answer_b=battle["answer_b"], battle=battle["id"],
                 voter=voter or "local user (no login)")
        label = {"a": f"{battle['model_a']} is better", "b": f"{battle['model_b']} is better", "tie": "a tie",
                 "both_bad": "both bad"}
        return f"vote recorded: {label[choice]}", self.board(), None

    def board(self) -> list[list]:
        return [[r["model"], r["rating"], f"{r['ci'][0]}–{r['ci'][1]}", r["games"], r["wins"]]
                for r in api.leaderboard(self.storage)["arena"]]

    def eval_reports(self) -> str:
        evals = api.leaderboard(self.storage)["evals"]
        if not evals:
            return "no evaluation reports yet (run an `eval` stage or `forge compare`)"
        return "\n\n".join(f"**{e['run']}**: " + " > ".join(
            f"{r['model']} ({r['mean_score']:.3f})" for r in e["ranking"] if r["mean_score"] is not None)
            for e in evals)


def build(storage: str | None = None, address: str | None = None):
    import gradio as gr

    app = App(storage, address)
    start = forms.field_values("pretrain")  # the form opens on pre-training, showing what its YAML holds
    datasets = api.input_choices("pretrain", "dataset", storage)
    with gr.Blocks(title="forge-ray") as demo:
        gr.Markdown("# forge-ray\nBuild, align and compare your own language models on your Ray cluster.")
        with gr.Tab("Submit"):
            with gr.Row():
                kind = gr.Dropdown(forms.KINDS, value="pretrain", label="stage", elem_id="kind")
                name = gr.Textbox(label="run name", value=start["name"], elem_id="run-name")
                input_run = gr.Dropdown(datasets, value=datasets[0] if datasets else None, label="input run (lineage)",
                                        allow_custom_value=True, elem_id="input-run")
                data_path = gr.Textbox(label="data path", elem_id="data-path")
            with gr.Row():
                preset = gr.Dropdown(forms.PRESETS, value="tiny", label="model preset", elem_id="preset")
                lr = gr.Number(label="learning rate", value=start["lr"], elem_id="lr")
                max_steps = gr.Number(label="max steps", value=start["max_steps"], precision=0, elem_id="max-steps")
                micro_batch = gr.Number(label="micro-batch", value=start["micro_batch"], precision=0,
                                        elem_id="micro-batch")
                workers = gr.Number(label="workers", value=start["workers"], precision=0, elem_id="workers")
                cpus = gr.Number(label="CPUs/worker", value=start["cpus"], elem_id="cpus")
                gpus = gr.Number(label="GPUs/worker", value=start["gpus"], elem_id="gpus")
            fill = gr.Button("Form → YAML", elem_id="fill")
            upload = gr.File(label="or upload a spec", file_types=[".yaml", ".yml", ".json"], type="filepath")
            spec_yaml = gr.Code(label="spec (YAML)", language="yaml", elem_id="spec-yaml")
            with gr.Row():
                validate_btn = gr.Button("Validate", elem_id="validate")
                submit_btn = gr.Button("Submit", variant="primary", elem_id="submit")
            result = gr.Markdown(elem_id="submit-result")
            form = [kind, name, input_run, data_path, preset, lr, max_steps, micro_batch, workers, cpus, gpus]
            fill.click(app.form_yaml, form, spec_yaml, api_name="form_yaml")
            kind.change(app.kind_changed, kind, [name, input_run, lr, max_steps, micro_batch, workers, cpus, gpus],
                        api_name=False)
            upload.upload(app.upload, upload, spec_yaml, api_name=False)
            validate_btn.click(app.validate, spec_yaml, result, api_name="validate")
            submit_btn.click(app.submit, spec_yaml, result, api_name="submit")
        with gr.Tab("Jobs"):
            table = gr.Dataframe(headers=["run", "kind", "status", "job", "parents", "metrics"], value=app.table,
                                 interactive=False, elem_id="runs-table")
            with gr.Row():
                pick = gr.Dropdown(app.run_names(), label="run", allow_custom_value=True, elem_id="job-run")
                stop_btn = gr.Button("Stop job", variant="stop", elem_id="stop")
            status = gr.Markdown(elem_id="run-status")
            plot = gr.Plot(label="metrics", elem_id="metrics-plot")
            log = gr.Textbox(label="log (tail)", lines=12, max_lines=12, elem_id="run-log", autoscroll=True)
            links = gr.Markdown(elem_id="run-links")
            timer = gr.Timer(2.0)
            timer.tick(app.table, None, table, api_name=False)
            timer.tick(app.detail, pick, [status, log, plot, links], api_name=False)
            pick.change(app.detail, pick, [status, log, plot, links], api_name="run_detail")
            pick.focus(lambda: gr.Dropdown(choices=app.run_names()), None, pick, api_name=False)
            stop_btn.click(app.stop, pick, status, api_name="stop")
        with gr.Tab("Arena"):
            with gr.Row():
                # a run, a `forge serve` endpoint, or any OpenAI-compatible URL#model typed in (the model
                # a team rents today); $FORGE_ENDPOINT_API_KEY goes only to the URLs in $FORGE_ENDPOINT_URLS
                model_a = gr.Dropdown(app.chat_models(), label="model A", elem_id="model-a", allow_custom_value=True)
                model_b = gr.Dropdown(app.chat_models(), label="model B", elem_id="model-b", allow_custom_value=True)
            with gr.Row():
                prompt = gr.Textbox(label="prompt", elem_id="prompt", scale=3)
                examples = gr.Dropdown(api.example_prompts(storage), label="or pick one from the eval tasks",
                                       elem_id="prompt-choice", scale=2)
            examples.focus(lambda: gr.Dropdown(choices=api.example_prompts(storage)), None, examples, api_name=False)
            examples.change(lambda p: p or "", examples, prompt, api_name=False)
            max_new = gr.Slider(8, 256, value=48, step=8, label="max new tokens")
            go = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Row():
                answer_a = gr.Textbox(label="A", lines=6, elem_id="answer-a")
                answer_b = gr.Textbox(label="B", lines=6, elem_id="answer-b")
            with gr.Row():
                vote_buttons = {c: gr.Button(t, elem_id=f"vote-{c}") for c, t in
                                (("a", "A is better"), ("b", "B is better"), ("tie", "Tie"), ("both_bad", "Both bad"))}
            voted = gr.Markdown(elem_id="vote-result")
            battle = gr.State(None)  # server-side, per session: not a parameter of the HTTP API
            for m in (model_a, model_b):
                m.focus(lambda: gr.Dropdown(choices=app.chat_models()), None, m, api_name=False)
            go.click(app.battle, [model_a, model_b, prompt, max_new], [answer_a, answer_b, battle], api_name="battle")
        with gr.Tab("Leaderboard"):
            board = gr.Dataframe(headers=["model", "rating", "95% interval", "games", "wins"], value=app.board,
                                 interactive=False, elem_id="leaderboard")
            reports = gr.Markdown(app.eval_reports, elem_id="eval-reports")
            gr.Button("Refresh", elem_id="refresh-board").click(lambda: (app.board(), app.eval_reports()), None,
                                                                [board, reports], api_name=False)
        for choice, button in vote_buttons.items():
            button.click(_voter(app, choice, gr.Request), [battle], [voted, board, battle], api_name=f"vote_{choice}")
    return demo


def launch(host: str = "127.0.0.1", port: int = 7860, storage: str | None = None, address: str | None = None,
           auth: tuple[str, str] | None = None) -> None:
    """Serve the app. Loopback by default; any other address needs ``auth`` (refused otherwise)."""
    from forge_ray.runs import Storage

    if host not in ("127.0.0.1", "localhost", "::1") and not auth:
        raise PermissionError(f"refusing to serve on {host} without authentication: pass --auth-file PATH "
                              f"(USER:PASS or a token) or set ${AUTH_ENV} (or bind 127.0.0.1)")
    store = Storage(storage)
    allowed = [store.uri] if store.is_local else []  # report images; nothing else on disk is served
    build(storage, address).queue().launch(server_name=host, server_port=port, auth=auth, share=False,
                                           allowed_paths=allowed, show_error=True)


def _voter(app: App, choice: str, request_type):
    """The click handler of one vote button: Gradio hands it the request (its logged-in user)."""
    def cast(battle, request):
        return app.vote(battle, choice, getattr(request, "username", None))

    cast.__annotations__ = {"request": request_type}  # how Gradio knows to pass the request
    return cast


AUTH_ENV = "FORGE_UI_AUTH"


def read_auth(auth_file: str | None) -> tuple[str, str] | None:
    """From a file (or ``$FORGE_UI_AUTH``) holding ``user:pass`` or a bare token (user ``forge``);
    never from the command line, where ``ps`` shows it to every local user."""
    text = Path(auth_file).read_text().strip() if auth_file else os.environ.get(AUTH_ENV, "").strip()
    if not text:
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep else ("forge", text)

