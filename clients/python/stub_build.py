"""The one stub generator, shared by both builds of this repository.

``setup.py`` at the root (the server) and ``clients/python/setup.py`` (the client)
both run :class:`GenerateStubs`: protoc writes ``*_pb2.py``, ``*_pb2_grpc.py`` and
mypy-protobuf's typed ``.pyi`` for every ``.proto`` under ``proto_root`` into
``out_root`` (``banditd/v1/``), and copies the ``.proto`` files beside them so that
an installed package carries its own contract.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import ClassVar

from setuptools import Command
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop
from setuptools.command.editable_wheel import editable_wheel


def stub_command(proto_root: Path, out_root: Path) -> type[Command]:
    """A setuptools command generating the stubs of ``proto_root`` into ``out_root``."""

    class GenerateStubs(Command):
        description = "generate gRPC/protobuf stubs (and .pyi) from proto/"
        user_options: ClassVar[list] = []

        def initialize_options(self) -> None:
            pass

        def finalize_options(self) -> None:
            pass

        def run(self) -> None:
            from grpc_tools import protoc

            protos = sorted(p.relative_to(proto_root) for p in proto_root.rglob("*.proto"))
            if not protos:
                raise RuntimeError(f"no .proto files under {proto_root}")
            well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
            args = [
                "grpc_tools.protoc",
                f"-I{proto_root}",
                f"-I{well_known}",
                f"--python_out={out_root}",
                f"--grpc_python_out={out_root}",
                f"--mypy_out={out_root}",
                f"--mypy_grpc_out={out_root}",
                *map(str, protos),
            ]
            if protoc.main(args) != 0:
                raise RuntimeError(f"protoc failed on {protos}")
            for proto in protos:
                shutil.copyfile(proto_root / proto, out_root / proto)

    return GenerateStubs


def stub_cmdclass(proto_root: Path, out_root: Path) -> dict[str, type[Command]]:
    """``cmdclass`` for ``setup()``: every way of building (wheel, editable, develop)
    generates the stubs first."""

    def generating(base: type[Command]) -> type[Command]:
        class Generating(base):
            def run(self) -> None:
                self.run_command("generate_stubs")
                super().run()

        Generating.__name__ = f"{base.__name__}_with_stubs"
        return Generating

    return {
        "generate_stubs": stub_command(proto_root, out_root),
        "build_py": generating(build_py),
        "editable_wheel": generating(editable_wheel),
        "develop": generating(develop),
    }
