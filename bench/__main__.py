"""`python -m bench [--quick] [--out DIR] [--only SECTION ...] [--router-binary PATH]`: runs the suite
and writes the report. The Go router (`metaparticle-router`) is benchmarked next to the Python one
when given by --router-binary or $MP_ROUTER_BIN; nothing needs it."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from .suite import Settings, run_suite

SECTIONS = ("spread", "shard", "ceiling", "tracing", "scatter", "startup", "expansion")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short repeat of each figure (under 90 s)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results", help="where latest.md/.json go")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument(
        "--router-binary",
        default=os.environ.get("MP_ROUTER_BIN") or None,
        help="the Go router binary (default $MP_ROUTER_BIN): adds Go router setups to spread, shard and ceiling",
    )
    args = parser.parse_args(argv)
    missing = [tool for tool in ("h2load", "nginx", "taskset") if shutil.which(tool) is None]
    if missing:
        print(f"bench: {', '.join(missing)} not found; run bench/setup.sh first", file=sys.stderr)
        return 2
    if args.router_binary and not os.access(args.router_binary, os.X_OK):
        print(f"bench: router binary {args.router_binary} is not an executable file", file=sys.stderr)
        return 2
    # The pattern's own router is the Python one here ("Python router" rows); the Go router is
    # measured as separate setups, from --router-binary or the one scripts/build-router built.
    os.environ["METAPARTICLE_ROUTER"] = "python"
    from metaparticle_pulumi._targets.local import router_binary

    settings = Settings.make(args.quick)
    settings.router_binary = args.router_binary or router_binary()
    report = run_suite(settings, args.out, args.only)
    print(f"bench: wrote {args.out / 'latest.md'} and latest.json in {report['seconds']:.0f} s")
    failed = [name for name in SECTIONS if isinstance(report.get(name), dict) and "error" in report[name]]
    if failed:
        print(f"bench: sections failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    no_go = [name for name in SECTIONS if isinstance(report.get(name), dict) and "go_router_error" in report[name]]
    if no_go:
        print(f"bench: the Go router given did not start in: {', '.join(no_go)} (see the report)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
