"""One build: compiles the Cython kernels in ``core_ext/`` and generates the gRPC stubs.

``pip install .`` and ``pip install -e .`` both run this. The kernels link numpy's
``npyrandom`` and ``npymath`` static libraries so that they can draw from numpy's C
distributions over a ``bitgen_t`` without holding the GIL (numpy's "Extending
numpy.random via Cython" recipe). The stubs are generated from ``proto/`` into
``banditd/v1/`` by the generator the client distribution builds with too
(``clients/python/stub_build.py``).

The folders ``core_ext/``, ``server/`` and ``admin_cli/`` install as ``banditd.core_ext``
and so on (pyproject's package-dir). Cython resolves ``cimport banditd.core_ext...``
through its include path, so the build lays out ``build/cython-include/banditd/`` with
``core_ext`` linked into it: the compiled modules then know their installed names.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = Path(__file__).parent.resolve()
sys.path.insert(0, str(ROOT / "clients" / "python"))

from stub_build import stub_cmdclass  # noqa: E402

NUMPY_INCLUDE = numpy.get_include()
NUMPY_RANDOM_LIB = os.path.join(NUMPY_INCLUDE, "..", "..", "random", "lib")
NUMPY_MATH_LIB = os.path.join(NUMPY_INCLUDE, "..", "lib")


def cython_include_tree() -> Path:
    """``build/cython-include`` holding ``banditd/core_ext`` (a link to ``core_ext/``)."""
    tree = ROOT / "build" / "cython-include"
    package = tree / "banditd"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.pxd").touch()
    link = package / "core_ext"
    if not link.is_symlink():
        link.symlink_to(ROOT / "core_ext", target_is_directory=True)
    return tree


def kernel_extensions() -> list[Extension]:
    """One extension per ``core_ext/**/*.pyx``, all linked against numpy's C RNG."""
    extensions = [
        Extension(
            "banditd." + ".".join(pyx.relative_to(ROOT).with_suffix("").parts),
            [str(pyx.relative_to(ROOT))],
            include_dirs=[NUMPY_INCLUDE],
            library_dirs=[NUMPY_RANDOM_LIB, NUMPY_MATH_LIB],
            libraries=["npyrandom", "npymath"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=["-O3"],
        )
        for pyx in sorted((ROOT / "core_ext").rglob("*.pyx"))
    ]
    return cythonize(
        extensions,
        include_path=[str(cython_include_tree())],
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    )


setup(
    ext_modules=kernel_extensions(),
    cmdclass=stub_cmdclass(ROOT / "proto", ROOT),
)
