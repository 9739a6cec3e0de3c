"""A missing compiled kernel fails the import loudly, with the command that builds it."""

from __future__ import annotations

import subprocess
import sys


def test_missing_extension_names_the_build_command() -> None:
    code = (
        "import sys; sys.modules['core_ext._ucb'] = None\n"
        "try:\n    import core_ext\n"
        "except ImportError as e:\n    print(e)\nelse:\n    print('imported')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "compiled kernels are missing (core_ext._ucb)" in out
    assert "pip install -e ." in out and "make test" in out


def test_public_api() -> None:
    import core_ext

    for name in ("Rng", "ThompsonPolicy", "UCB1Policy", "EpsilonGreedyPolicy",
                 "ControlPolicy", "hash64", "assignment_bucket", "BUCKETS"):
        assert hasattr(core_ext, name)
