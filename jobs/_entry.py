"""Shared argument handling for the thin ``ray job submit`` entrypoints in this folder."""

from __future__ import annotations

import argparse
import sys


def main(kind: str, doc: str) -> int:
    """Parse ``--config/--set/--storage``, check the spec's kind, run it through forge_ray.api."""
    from forge_ray import api

    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--config", required=True, help="spec file (YAML or JSON)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--storage", help="storage root; any pyarrow.fs URI (default: $FORGE_STORAGE or ./forge_runs)")
    args = parser.parse_args()
    try:
        spec = api.resolve(args.config, args.overrides)
        if spec.kind != kind:
            print(f"{args.config}: kind is {spec.kind!r}; this entrypoint runs {kind!r} specs", file=sys.stderr)
            return 2  # invalid input
        info = api.run(spec, storage=args.storage)
    except Exception as exc:  # noqa: BLE001 - reported as an exit code, recorded in the manifest
        error, code = api.diagnose(exc)
        print(f"{kind} failed ({error.kind}): {error.message}", file=sys.stderr)
        return code
    print(f"{info.status}: {info.name} in {info.run_dir}")
    return 0
