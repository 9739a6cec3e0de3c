"""The client distribution's build: the stubs of ``proto/`` into ``banditd/v1/``."""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent.resolve()
sys.path.insert(0, str(HERE))

from stub_build import stub_cmdclass  # noqa: E402

setup(cmdclass=stub_cmdclass(HERE / "proto", HERE))
