"""`python -m bench [--quick] [--out DIR] [--only SECTION ...]`: runs the suite and writes the report."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from .suite import Settings, run_suite

SECTIONS = ("spread", "shard", "scatter", "startup", "expansion", "profile")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short repeat of each figure (under a minute)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results", help="where latest.md/.json go")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    args = parser.parse_args(argv)
    missing = [tool for tool in ("h2load", "nginx", "taskset") if shutil.which(tool) is None]
    if missing:
        print(f"bench: {', '.join(missing)} not found; run bench/setup.sh first", file=sys.stderr)
        return 2
    report = run_suite(Settings.make(args.quick), args.out, args.only)
    print(f"bench: wrote {args.out / 'latest.md'} and latest.json in {report['seconds']:.0f} s")
    failed = [name for name in SECTIONS if isinstance(report.get(name), dict) and "error" in report[name]]
    if failed:
        print(f"bench: sections failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
