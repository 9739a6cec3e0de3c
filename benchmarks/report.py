"""Shared helpers for benchmark reports: JSON files with the machine they ran on, and
PASS/FAIL target lines.

Every benchmark writes ``benchmarks/results/<name>.json`` through :func:`write_report`
and prints its targets through :func:`print_target`, so reports and CI logs look alike.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: cores, Python, numpy, platform."""
    import numpy

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
    }


def write_report(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` plus a ``"machine"`` block to ``benchmarks/results/<name>.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    report = {"name": name, "machine": machine_info(), **payload}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=False, default=_jsonable) + "\n")
    tmp.replace(path)
    return path


def print_target(name: str, ok: bool, detail: str) -> None:
    """Print ``PASS name: detail`` or ``FAIL name: detail`` (stdout, flushed)."""
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", file=sys.stdout, flush=True)


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays to plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
