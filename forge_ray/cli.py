"""``forge``: the command line on top of :mod:`forge_ray.api`.

Exit codes: 0 success, 1 the run failed, 2 invalid input (spec, data, arguments).
Every command takes ``--json`` and then prints one JSON document for machines.

    forge demo-data ./forge_runs/demo-data --seed 0
    forge validate jobs/configs/tiny/tokenizer.yaml --set vocab_size=2048
    forge run jobs/configs/demo.yaml                     # local Ray, started on demand
    forge submit jobs/configs/demo.yaml --address http://HEAD:8265
    forge status demo-tokenizer ; forge logs demo-tokenizer --follow ; forge runs
    forge compare demo-pretrain demo-sft --task facts=forge_runs/demo-data/eval.jsonl:contains_answer
    forge report demo-eval
    forge serve demo-sft                                 # one vLLM server on 127.0.0.1:8000
    FORGE_SERVE_API_KEY=... forge serve demo-sft --replicas 1:4 --address HEAD:6379   # Ray Serve, autoscaling
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def _print_json(obj: Any) -> None:
    if is_dataclass(obj):
        obj = asdict(obj)
    elif isinstance(obj, list):
        obj = [asdict(o) if is_dataclass(o) else o for o in obj]
    print(json.dumps(obj, indent=2, default=str))


def _spec_args(p: argparse.ArgumentParser, spec_required: bool = True) -> None:
    if spec_required:
        p.add_argument("spec", help="spec file (YAML or JSON)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key (repeatable), e.g. --set train.max_steps=10")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", help="storage root (default: $FORGE_STORAGE or ./forge_runs); any pyarrow.fs URI")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forge", description="Build your own language models on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a spec and its inputs; print the preflight")
    _spec_args(p), _common(p)
    p.add_argument("--address", help="the cluster whose nodes must hold the workers (default: $RAY_ADDRESS)")
    p.add_argument("--no-inputs", action="store_true", help="don't check that input runs exist")

    p = sub.add_parser("run", help="run a spec and wait (local Ray, or --address)")
    p.add_argument("spec", nargs="?", help="spec file")
    p.add_argument("--spec-json", help=argparse.SUPPRESS)  # used by `forge submit`'s job entrypoint
    _spec_args(p, spec_required=False), _common(p)
    p.add_argument("--address", help="Ray address to connect to (default: $RAY_ADDRESS or a local Ray)")
    p.add_argument("--verbose", action="store_true", help="also show the vendors' output (Ray workers, DeepSpeed, "
                                                          "vLLM) on the terminal; it is always in each run's run.log")

    p = sub.add_parser("submit", help="submit a spec to a Ray cluster's Jobs API")
    _spec_args(p), _common(p)
    p.add_argument("--address", help="Jobs API address, e.g. http://127.0.0.1:8265 (default: $RAY_ADDRESS)")
    p.add_argument("--working-dir", help="directory shipped to the cluster (default: this checkout, except to a cluster on "
                        "127.0.0.1, which runs it already; '' ships nothing)")
    p.add_argument("--driver-resources", type=json.loads, metavar="JSON",
                   help='resources the job\'s driver holds, e.g. \'{"forge_driver": 1}\': jobs queue on the '
                        "head's driver slots (default: $FORGE_DRIVER_RESOURCES)")

    for name, text in (("status", "status of a run or a Ray job"), ("logs", "logs of a run or a Ray job"),
                       ("stop", "stop a Ray job (by job id or run name)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("target", help="run name or job id")
        _common(p)
        p.add_argument("--address", help="Jobs API address (default: $RAY_ADDRESS)")
        if name == "logs":
            p.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")

    p = sub.add_parser("runs", help="table of runs with status and key metrics")
    _common(p)

    p = sub.add_parser("export", help="HF model directory from a training run's checkpoint (any time)")
    p.add_argument("run", help="run name")
    p.add_argument("--step", type=int, help="checkpoint step (default: the newest)")
    p.add_argument("--out", help="destination directory or URI (default: RUN/exports/step-N)")
    _common(p)

    p = sub.add_parser("eval", help="run an eval spec and print its summary and report path")
    _spec_args(p), _common(p)
    p.add_argument("--address", help="Ray address (default: $RAY_ADDRESS or a local Ray)")

    p = sub.add_parser("compare", help="evaluate models side by side on task files (an eval run)")
    p.add_argument("models", nargs="+", help="run names, HF model directories or random:RUN")
    p.add_argument("--task", action="append", default=[], metavar="NAME=PATH[:SCORER]", required=True,
                   help="a JSONL task file (repeatable); scorer default normalized_match")
    p.add_argument("--judge", action="append", choices=["reference", "reward_model", "rubric", "human"],
                   help="pairwise judge (repeatable; default reference)")
    p.add_argument("--reward-model", help="reward-model run for --judge reward_model")
    p.add_argument("--rubric-model", help="judge model for --judge rubric")
    p.add_argument("--name", help="run name (default compare-A-vs-B…)")
    p.add_argument("--backend", choices=["auto", "vllm", "hf"], default="auto")
    p.add_argument("--address", help="Ray address (default: $RAY_ADDRESS or a local Ray)")
    _common(p)

    p = sub.add_parser("sweep", help="run a sweep spec (Ray Tune) and print its trials and best config")
    _spec_args(p), _common(p)
    p.add_argument("--address", help="Ray address (default: $RAY_ADDRESS or a local Ray)")

    p = sub.add_parser("report", help="print an eval run's summary and where its report is")
    p.add_argument("run")
    p.add_argument("--brief", action="store_true", help="only the ranking and the scores, 80 columns wide")
    _common(p)

    p = sub.add_parser("ui", help="the web app: submit, jobs, arena, leaderboard (127.0.0.1 unless authenticated)")
    p.add_argument("--host", default="127.0.0.1", help="bind address; anything but loopback needs --auth-file or "
                                                       "$FORGE_UI_AUTH")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", help=argparse.SUPPRESS)  # refused: a password on the command line shows in `ps`
    p.add_argument("--auth-file", help="file holding USER:PASS or a token (user 'forge'); or set $FORGE_UI_AUTH")
    p.add_argument("--storage", help="storage root (default: $FORGE_STORAGE or ./forge_runs)")
    p.add_argument("--address", help="Ray Jobs API address for submissions (default: $RAY_ADDRESS)")

    p = sub.add_parser("mcp", help="serve the platform as MCP tools over stdio (for agents)")
    p.add_argument("--storage", help="storage root (default: $FORGE_STORAGE or ./forge_runs)")
    p.add_argument("--address", help="Ray Jobs API address for submissions (default: $RAY_ADDRESS)")

    p = sub.add_parser("import", help="register a local HF model directory as a run (safetensors only); "
                                      "--plan: the GPUs training it would take, from its config alone")
    p.add_argument("path", help="directory with config.json, *.safetensors and a tokenizer (--plan: config.json)")
    p.add_argument("--name", help="run name for the imported model (required unless --plan)")
    p.add_argument("--plan", action="store_true", help="print parameters, memory per GPU by ZeRO stage and offload, "
                                                        "and the fewest GPUs; import nothing")
    p.add_argument("--gpu-gb", type=float, default=80.0, help="--plan: memory of one GPU (default 80)")
    p.add_argument("--host-gb", type=float, default=200.0, help="--plan: host memory per GPU for offload (default 200)")
    p.add_argument("--seq-len", type=int, default=4096, help="--plan: tokens per row (default 4096)")
    p.add_argument("--micro-batch", type=int, default=1, help="--plan: rows per GPU per micro-step (default 1)")
    _common(p)

    p = sub.add_parser("serve", help="serve a run's model on an OpenAI-compatible API (vLLM, or Ray Serve with "
                                     "--replicas); --stop ends it")
    p.add_argument("run")
    p.add_argument("--host", default="127.0.0.1", help="bind address; anything but loopback needs a key "
                                                       "($FORGE_SERVE_API_KEY or --api-key-file)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--replicas", help="N, or MIN:MAX to autoscale: vLLM replicas on Ray Serve across the cluster "
                                      "(default: one vLLM server on this machine)")
    p.add_argument("--cpus-per-replica", type=float, default=1.0)
    p.add_argument("--gpus-per-replica", type=float, default=0.0)
    p.add_argument("--address", help="Ray cluster for --replicas (default: $RAY_ADDRESS, else the running one)")
    p.add_argument("--api-key", help=argparse.SUPPRESS)  # refused: a key on the command line shows in `ps`
    p.add_argument("--api-key-file", help="file holding the key clients must send (or set $FORGE_SERVE_API_KEY)")
    p.add_argument("--stop", action="store_true", help="stop the run's server")
    _common(p)

    p = sub.add_parser("schema", help="JSON Schema of a spec kind (or of all kinds)")
    p.add_argument("kind", nargs="?")

    p = sub.add_parser("demo-data", help="write the generated demo corpus")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    return parser


def _problems_text(errors: list[dict]) -> str:
    return "\n".join(f"  - {e['path'] or '<spec>'}: {e['message']}" + (f" ({e['hint']})" if e.get("hint") else "")
                     for e in errors)


def _cmd_validate(args) -> int:
    from forge_ray import api

    pre = api.validate(args.spec, args.overrides, args.storage, check_inputs=not args.no_inputs,
                       address=getattr(args, "address", None))
    if args.json:
        _print_json(pre)
    elif pre.ok:
        print(f"ok: {pre.kind} spec {pre.name!r} is valid")
        for w in pre.warnings:
            print(f"  note: {w}")
    else:
        print(f"invalid spec {args.spec}:\n{_problems_text(pre.errors)}", file=sys.stderr)
    return EXIT_OK if pre.ok else EXIT_INVALID


def _cmd_run(args) -> int:
    from forge_ray import api

    if bool(args.spec) == bool(args.spec_json):
        print("forge run: give a spec file", file=sys.stderr)
        return EXIT_INVALID
    spec = json.loads(args.spec_json) if args.spec_json else args.spec
    from forge_ray import console

    if args.verbose:
        os.environ[console.VERBOSE_ENV] = "1"  # also for the processes this one starts
    if not args.json:
        console.setup_terminal()
    try:
        info = api.run(spec, args.overrides, args.storage, args.address, show_progress=not args.json)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes an exit code and a message
        if isinstance(exc, KeyboardInterrupt):
            raise
        error, code = api.diagnose(exc)
        if args.json:
            _print_json({"status": "failed", "error": asdict(error)})
        else:
            print(f"forge run failed ({error.kind}): {error.message}", file=sys.stderr)
            if error.hint:
                print(f"hint: {error.hint}", file=sys.stderr)
        return code
    if args.json:
        _print_json(info)
    else:
        print(f"{info.status}: run {info.name!r} ({info.kind}) in {info.run_dir}")
        for k, v in info.metrics.items():
            print(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}")
    return EXIT_OK if info.status == "succeeded" else EXIT_FAILED


def _cmd_submit(args) -> int:
    from forge_ray import api

    job = api.submit(args.spec, args.overrides, args.storage, args.address, args.working_dir,
                     driver_resources=args.driver_resources)
    if args.json:
        _print_json(job)
    else:
        print(f"submitted job {job.job_id} for run {job.name!r} to {job.address}\n"
              f"  follow it: forge logs {job.name} --follow --address {job.address}")
    return EXIT_OK


def _cmd_status(args) -> int:
    from forge_ray import api

    info = api.status(args.target, args.storage, args.address)
    if args.json:
        _print_json(info)
    else:
        for k, v in asdict(info).items():
            print(f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}")
    return EXIT_FAILED if getattr(info, "status", "") in ("failed", "FAILED") else EXIT_OK


def _cmd_logs(args) -> int:
    from forge_ray import api

    for chunk in api.logs(args.target, args.storage, args.address, follow=args.follow):
        sys.stdout.write(chunk)
        sys.stdout.flush()
    return EXIT_OK


def _cmd_stop(args) -> int:
    from forge_ray import api

    info = api.stop(args.target, args.address, args.storage)
    _print_json(info) if args.json else print(f"job {info.job_id}: {info.status}")
    return EXIT_OK


def _cmd_runs(args) -> int:
    from forge_ray import api

    runs = api.list_runs(args.storage)
    if args.json:
        _print_json(runs)
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "kind", "status", "parents", "key metrics")
    for r in runs:
        keys = [k for k in ("val_bpb", "val_accuracy", "val_loss", "loss", "reward_mean", "accuracy", "heldout_bytes_per_token", "tokens", "docs_out")
                if k in r.metrics][:3]
        table.add_row(r.name, r.kind, r.status, ", ".join(r.parents),
                      ", ".join(f"{k}={r.metrics[k]:.4g}" for k in keys))
    Console().print(table)
    return EXIT_OK


def _cmd_export(args) -> int:
    from forge_ray import api

    info = api.export(args.run, args.storage, args.step, args.out)
    _print_json(info) if args.json else print(f"exported {info['run']} step {info['step']} to {info['out']}")
    return EXIT_OK


def _cmd_eval(args) -> int:
    from forge_ray import api

    if api.resolve(args.spec, args.overrides).kind != "eval":
        print(f"forge eval: {args.spec} is not an eval spec (use forge run)", file=sys.stderr)
        return EXIT_INVALID
    args.spec_json = None
    code = _cmd_run(args)
    if code == EXIT_OK and not args.json:
        _print_report(api.report(api.resolve(args.spec, args.overrides).name, args.storage))
    return code


def _cmd_compare(args) -> int:
    from forge_ray import api

    tasks = []
    for item in args.task:
        name, sep, rest = item.partition("=")
        path, _, scorer = rest.rpartition(":")
        if not path or "/" in scorer or "." in scorer:  # no scorer given: the whole thing is the path
            path, scorer = rest, ""
        if not sep or not name or not path:
            print(f"forge compare: --task {item!r} is not NAME=PATH[:SCORER]", file=sys.stderr)
            return EXIT_INVALID
        tasks.append({"name": name, "path": path, **({"scorer": scorer} if scorer else {})})
    extra = {k: v for k, v in (("reward_model", args.reward_model), ("rubric_model", args.rubric_model)) if v}
    info = api.compare(args.models, tasks, name=args.name, judges=args.judge, storage=args.storage,
                       address=args.address, show_progress=not args.json, backend=args.backend, **extra)
    if args.json:
        _print_json(api.report(info.name, args.storage)["results"])
    else:
        _print_report(api.report(info.name, args.storage))
    return EXIT_OK if info.status == "succeeded" else EXIT_FAILED


def _cmd_sweep(args) -> int:
    from forge_ray import api

    out = api.sweep(args.spec, args.overrides, args.storage, args.address, show_progress=not args.json)
    if args.json:
        _print_json(out)
        return EXIT_OK
    metric = out["metric"]
    for t in out["trials"]:
        state = "completed" if t["completed"] else f"stopped at step {t['steps']}" if t["stopped_early"] else "failed"
        print(f"  {t['run']}: {t['config']} → {metric} {t[metric]} ({state})")
    print(f"best: {out['best']['run']} {out['best']['config']} ({metric} {out['best'][metric]})")
    print(f"ready-to-run spec: {api.status(out['run'], args.storage).run_dir}/best.yaml")
    return EXIT_OK


def _cmd_report(args) -> int:
    from forge_ray import api

    rep = api.report(args.run, args.storage)
    if args.json:
        _print_json(rep["results"])
    elif args.brief:
        print(brief_scores(rep["results"]))
        print(f"whole report: {rep['html']}")
    else:
        _print_report(rep)
    return EXIT_OK


def brief_scores(results: dict, width: int = 80) -> str:
    """The ranking's models, best first, with the first task's score and 95 % interval and the
    other tasks' scores, in ``width`` columns (task names shortened from the front)."""
    tasks = list(results["tasks"])
    models = [r["model"] for r in results["ranking"]]
    name_w = min(24, max(len(m) for m in models))
    rest = max(1, (width - name_w - 20) // max(1, len(tasks) - 1)) if len(tasks) > 1 else 0
    def cut(name: str, n: int) -> str:  # the end of a task's name tells it apart ("…two-hop")
        return name if len(name) <= n else "…" + name[-(n - 1):]

    header = f"{'model':<{name_w}} {cut(tasks[0], 18):<19}" + "".join(f"{cut(t, rest - 1):>{rest}}" for t in tasks[1:])
    lines = [header]
    for m in models:
        first = results["tasks"][tasks[0]].get(m)
        cell = f"{first['score']:.2f} [{first['ci'][0]:.2f}, {first['ci'][1]:.2f}]" if first else "—"
        others = "".join(f"{results['tasks'][t][m]['score']:>{rest}.2f}" if m in results["tasks"][t] else f"{'—':>{rest}}"
                         for t in tasks[1:])
        lines.append(f"{m[:name_w]:<{name_w}} {cell:<19}{others}")
    return "\n".join(lines)


def _print_report(rep: dict) -> None:
    print(rep["markdown"].split("![")[0].rstrip())
    print(f"\nreport: {rep['html']}")


def _cmd_ui(args) -> int:
    from ui.app import AUTH_ENV, launch, read_auth

    if args.auth:
        print(f"forge ui: --auth USER:PASS puts the password where every local user sees it (`ps`); put it in a "
              f"file (--auth-file PATH, mode 0600) or in ${AUTH_ENV}", file=sys.stderr)
        return EXIT_INVALID
    try:
        launch(args.host, args.port, args.storage, args.address, read_auth(args.auth_file))
    except PermissionError as exc:
        print(f"forge ui: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def _cmd_mcp(args) -> int:
    from forge_ray.mcp_server import serve

    serve(args.storage, args.address)
    return EXIT_OK


def _cmd_import(args) -> int:
    from forge_ray import api
    from forge_ray.models.importer import ImportRefused

    if args.plan:
        return _import_plan(args)
    if not args.name:
        print("forge import: give --name NAME for the run (or --plan to see what training it would take)",
              file=sys.stderr)
        return EXIT_INVALID
    try:
        info = api.import_model(args.path, args.name, args.storage)
    except ImportRefused as exc:
        print(f"forge import: {exc}", file=sys.stderr)
        return EXIT_INVALID
    _print_json(info) if args.json else print(f"imported {args.path} as run {info.name!r} "
                                              f"({info.metrics['params']:,} parameters) in {info.run_dir}")
    return EXIT_OK


def _import_plan(args) -> int:
    from forge_ray.models.import_plan import format_plan, plan, read_config
    from forge_ray.models.importer import ImportRefused

    try:
        result = plan(read_config(args.path), args.gpu_gb, args.seq_len, args.micro_batch, host_gb=args.host_gb)
    except ImportRefused as exc:
        print(f"forge import --plan: {exc}", file=sys.stderr)
        return EXIT_INVALID
    _print_json(result.to_json()) if args.json else print("\n".join(format_plan(result)))
    return EXIT_OK


def _cmd_serve(args) -> int:
    from forge_ray import api

    if args.api_key:
        print("forge serve: --api-key KEY puts the key where every local user sees it (`ps`); put it in a file "
              "(--api-key-file PATH, mode 0600) or in $FORGE_SERVE_API_KEY", file=sys.stderr)
        return EXIT_INVALID
    key = (Path(args.api_key_file).read_text().strip() if args.api_key_file
           else os.environ.get("FORGE_SERVE_API_KEY")) or None
    try:
        info = api.stop_serving(args.run, args.storage) if args.stop else api.serve(
            args.run, args.storage, args.host, args.port, key, replicas=args.replicas,
            cpus_per_replica=args.cpus_per_replica, gpus_per_replica=args.gpus_per_replica, address=args.address)
    except (PermissionError, ValueError, FileNotFoundError) as exc:
        print(f"forge serve: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (RuntimeError, TimeoutError) as exc:  # the server or its replicas did not come up
        print(f"forge serve: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        _print_json(info)
    elif args.stop:
        where = f"Serve application {info['app']}" if "app" in info else f"pid {info['pid']}"
        print(f"stopped the server of {args.run} ({where})")
    else:
        how = f" with {serve_cluster_summary(info)}" if "replicas" in info else ""
        print(f"serving {args.run} at {info['url']} (model name {args.run!r}){how}; "
              f"stop: forge serve --stop {args.run}")
    return EXIT_OK


def serve_cluster_summary(info: dict) -> str:
    r = info["replicas"]
    count = str(r["min"]) if r["min"] == r["max"] else f"{r['min']}-{r['max']} (autoscaling)"
    return f"{count} replica(s) on Ray Serve, {info['resources_per_replica']} each"


def _cmd_schema(args) -> int:
    from forge_ray import api

    _print_json(api.schema(args.kind))
    return EXIT_OK


def _cmd_demo_data(args) -> int:
    from forge_ray import api

    summary = api.demo_data(args.out_dir, args.seed)
    _print_json(summary) if args.json else print(
        f"demo corpus (seed {summary['seed']}) in {summary['dir']}: {summary['docs']} docs, {summary['sft']} SFT chats, "
        f"{summary['prefs']} preference pairs, {summary['rl_prompts']} RL prompts, {summary['eval']} eval questions")
    return EXIT_OK


COMMANDS = {"validate": _cmd_validate, "run": _cmd_run, "submit": _cmd_submit, "status": _cmd_status,
            "logs": _cmd_logs, "stop": _cmd_stop, "runs": _cmd_runs, "export": _cmd_export, "schema": _cmd_schema,
            "demo-data": _cmd_demo_data, "eval": _cmd_eval, "compare": _cmd_compare, "report": _cmd_report,
            "ui": _cmd_ui, "mcp": _cmd_mcp, "sweep": _cmd_sweep,
            "import": _cmd_import, "serve": _cmd_serve}


def main(argv: list[str] | None = None) -> int:
    from forge_ray import api

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except api.input_error_types() as exc:
        if getattr(args, "json", False):
            problems = [asdict(p) for p in getattr(exc, "problems", [])] or [{"path": "", "message": str(exc), "hint": ""}]
            _print_json({"ok": False, "errors": problems})
        else:
            print(f"forge {args.command}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except Exception as exc:  # noqa: BLE001 - e.g. an unreachable cluster: a message, not a traceback
        print(f"forge {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
