"""The layers import downwards only: the server and the kernels never import the
operator's CLI (and through it SciPy and matplotlib), and the tests never import the
benchmarks."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest

from tests.checkout import ROOT

LOWER = ("server", "core_ext")
UPPER = "banditd.admin_cli"


def _imports(path) -> set[str]:
    """Every module name an ``import`` or ``from ... import`` in ``path`` names, lazy
    (inside a function) or not."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _pyx_imports(path) -> set[str]:
    """Module names a Cython source imports (Cython is not Python: read its lines)."""
    found = re.findall(r"^\s*(?:from|c?import)\s+([\w.]+)", path.read_text(encoding="utf-8"),
                       flags=re.M)
    return set(found)


@pytest.mark.parametrize("package", LOWER)
def test_nothing_below_the_cli_imports_it(package):
    offenders = {}
    for path in sorted((ROOT / package).rglob("*.py*")):
        if path.suffix not in (".py", ".pyx", ".pxd"):
            continue
        names = _imports(path) if path.suffix == ".py" else _pyx_imports(path)
        bad = sorted(n for n in names if n == UPPER or n.startswith(UPPER + "."))
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}


def test_a_serving_process_loads_neither_the_cli_nor_scipy():
    """Starting the server's modules (and validating an experiment, as create does)
    pulls in no module of the CLI and no SciPy or matplotlib."""
    probe = (
        "import sys, banditd.server.app, banditd.server.main\n"
        "from banditd.server.experiment import ExperimentSpec\n"
        "ExperimentSpec(id='e', name='e', arms=('a', 'b')).validate_for_write()\n"
        "print(sorted({m for m in sys.modules if m.startswith('banditd.admin_cli')} |"
        "({m.split('.')[0] for m in sys.modules} & {'scipy', 'matplotlib'})))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_tests_do_not_import_the_benchmarks():
    """What a test and a study share lives in the package; the studies stay free to
    change their harness without breaking the suite."""
    offenders = {
        str(path.relative_to(ROOT)): bad
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if (bad := sorted(n for n in _imports(path)
                          if n == "benchmarks" or n.startswith("benchmarks.")))
    }
    assert offenders == {}
