"""One build: compiles the Cython kernels in ``core_ext/`` and generates the gRPC stubs.

``pip install .`` and ``pip install -e .`` both run this. The kernels link numpy's
``npyrandom`` and ``npymath`` static libraries so that they can draw from numpy's C
distributions over a ``bitgen_t`` without holding the GIL (numpy's "Extending
numpy.random via Cython" recipe). The stubs are generated from ``proto/`` into
``banditd/v1/`` (``*_pb2.py``, ``*_pb2_grpc.py`` and mypy-protobuf ``.pyi``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy
from Cython.Build import cythonize
from setuptools import Command, Extension, setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop
from setuptools.command.editable_wheel import editable_wheel

ROOT = Path(__file__).parent.resolve()
PROTO_ROOT = ROOT / "proto"

NUMPY_INCLUDE = numpy.get_include()
NUMPY_RANDOM_LIB = os.path.join(NUMPY_INCLUDE, "..", "..", "random", "lib")
NUMPY_MATH_LIB = os.path.join(NUMPY_INCLUDE, "..", "lib")


def kernel_extensions() -> list[Extension]:
    """One extension per ``core_ext/*.pyx``, all linked against numpy's C RNG."""
    extensions = [
        Extension(
            f"core_ext.{pyx.stem}",
            [str(pyx.relative_to(ROOT))],
            include_dirs=[NUMPY_INCLUDE],
            library_dirs=[NUMPY_RANDOM_LIB, NUMPY_MATH_LIB],
            libraries=["npyrandom", "npymath"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=["-O3"],
        )
        for pyx in sorted((ROOT / "core_ext").glob("*.pyx"))
    ]
    return cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    )


class GenerateStubs(Command):
    """Generate ``banditd/v1`` gRPC stubs and typed ``.pyi`` files from ``proto/``."""

    description = "generate gRPC/protobuf stubs from proto/"
    user_options: ClassVar[list] = []

    def initialize_options(self) -> None:
        pass

    def finalize_options(self) -> None:
        pass

    def run(self) -> None:
        from grpc_tools import protoc

        protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
        if not protos:
            return
        well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={ROOT}",
            f"--grpc_python_out={ROOT}",
            f"--mypy_out={ROOT}",
            f"--mypy_grpc_out={ROOT}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {protos}")


class BuildPyWithStubs(build_py):
    def run(self) -> None:
        self.run_command("generate_stubs")
        super().run()


class EditableWithStubs(editable_wheel):
    def run(self) -> None:
        self.run_command("generate_stubs")
        super().run()


class DevelopWithStubs(develop):
    def run(self) -> None:
        self.run_command("generate_stubs")
        super().run()


setup(
    ext_modules=kernel_extensions(),
    cmdclass={
        "generate_stubs": GenerateStubs,
        "build_py": BuildPyWithStubs,
        "editable_wheel": EditableWithStubs,
        "develop": DevelopWithStubs,
    },
)
