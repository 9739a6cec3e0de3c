"""Where to find MovieLens 100K, fetching it from PyPI when no copy is at hand.

GroupLens does not allow redistributing MovieLens, so the project never ships
it. The RecBole "atomic file" edition of ml-100k travels inside the
``recbole==1.2.1`` wheel on PyPI (``recbole/dataset_example/ml-100k/``); when no
local copy is found, :func:`locate_ml100k` downloads that wheel with pip (no
dependencies, nothing installed) and extracts the three files into a cache
directory, so a benchmark or the demo works on any machine that can reach PyPI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "recbole==1.2.1"
_MEMBERS = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
_WHEEL_DIR = "recbole/dataset_example/ml-100k/"
REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_COPIES = (REPO_ROOT.parent / "shared" / "data" / "ml-100k", Path("../shared/data/ml-100k"))


class DatasetUnavailable(RuntimeError):
    """No local copy and the download failed; the message says how to provide one."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "banditd" / "ml-100k"


ENV = "BANDITD_MOVIELENS"


def locate_ml100k(explicit: Path | str | None = None) -> Path:
    """The first of: ``explicit``, ``$BANDITD_MOVIELENS``, ``../shared/data/ml-100k``,
    the cache (downloaded into it when empty)."""
    if explicit is not None:
        return Path(explicit)
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    for candidate in LOCAL_COPIES:
        if candidate.exists():
            return candidate
    target = cache_dir()
    if not all((target / name).exists() for name in _MEMBERS):
        fetch(target)
    return target


def fetch(target: Path) -> Path:
    """Download the recbole wheel and extract ml-100k's atomic files into ``target``."""
    print(f"MovieLens 100K: fetching the {WHEEL} wheel from PyPI into {target} "
          "(once; GroupLens data is not redistributed with banditd)", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL,
             "--dest", tmp],
            capture_output=True, text=True, timeout=300,
        )
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if done.returncode != 0 or not wheels:
            raise DatasetUnavailable(
                f"could not download {WHEEL} ({done.stderr.strip()[-300:]}); put ml-100k "
                f"somewhere and pass its path (or set {ENV})"
            )
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in _MEMBERS:
                (target / name).write_bytes(wheel.read(_WHEEL_DIR + name))
    return target
