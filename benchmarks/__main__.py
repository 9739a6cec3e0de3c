"""Run every benchmark: ``python -m benchmarks [--short]``.

Each study is its own module with its own ``--short`` mode and JSON report in
``benchmarks/results/``; this runner executes them one after another in fresh
interpreters and fails when any of them fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

STUDIES = ("kernels", "regret", "verdict", "replay", "load", "scale", "volume")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--short", action="store_true", help="CI mode: smaller horizons")
    parser.add_argument("studies", nargs="*", default=list(STUDIES), help="subset to run")
    args = parser.parse_args(argv)
    failed = []
    for study in args.studies:
        started = time.monotonic()
        cmd = [sys.executable, "-m", f"benchmarks.{study}", *(["--short"] if args.short else [])]
        print(f"== benchmarks.{study}", flush=True)
        code = subprocess.call(cmd)
        elapsed = time.monotonic() - started
        print(f"== benchmarks.{study}: exit {code} in {elapsed:.1f}s", flush=True)
        if code != 0:
            failed.append(study)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
