"""A missing compiled kernel fails the import loudly, with the command that builds it;
the rooms load only their own extensions."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout


def test_missing_extension_names_the_build_command() -> None:
    out = _run(
        "import sys; sys.modules['banditd.core_ext.policies._ucb'] = None\n"
        "try:\n    import banditd.core_ext.policies\n"
        "except ImportError as e:\n    print(e)\nelse:\n    print('imported')\n"
    )
    assert "compiled kernels are missing (banditd.core_ext.policies._ucb)" in out
    assert "pip install -e ." in out and "make test" in out


@pytest.mark.parametrize(("room", "names"), [
    ("policies", ("Rng", "ThompsonPolicy", "UCB1Policy", "EpsilonGreedyPolicy",
                  "ControlPolicy", "make_kernel", "get_policy", "POLICY_NAMES")),
    ("codecs", ("DecisionSigner", "DecisionRows", "parse_select_request", "CODEC_FIELDS")),
    ("decider", ("Decider", "hash64", "assignment_bucket", "BUCKETS")),
])
def test_public_api(room, names) -> None:
    module = __import__(f"banditd.core_ext.{room}", fromlist=["_"])
    assert [n for n in names if not hasattr(module, n)] == []
    assert set(names) <= set(module.__all__)


def test_the_policies_room_loads_no_codec() -> None:
    """Replay and evaluation import the policies alone: no codec, no protobuf."""
    out = _run(
        "import sys, banditd.core_ext.policies\n"
        "print(sorted(m for m in sys.modules if m.startswith(('banditd.core_ext.codecs', "
        "'banditd.core_ext.decider', 'google.protobuf'))))\n"
    )
    assert out.strip() == "[]"
