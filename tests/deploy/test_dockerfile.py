"""deploy/Dockerfile, read without Docker: a build stage that compiles, a runtime stage
that only installs, a non-root user, ``banditd serve`` as the entrypoint, and a build
context (/.dockerignore) that holds the sources and none of a developer's artefacts.

Running the image's install and entrypoint outside a container is test_image.py."""

from __future__ import annotations

import sys
import tomllib

from packaging.specifiers import SpecifierSet

from banditd.server.main import serve_command
from tests.checkout import BUILD_OUTPUTS, ROOT, tracked_files
from tests.deploy import dockerfile
from tests.deploy.manifests import container, find

BUILD_TOOLS = {"build-essential", "gcc", "g++", "cc", "clang", "make", "cython",
               "python3-dev", "libc6-dev"}


def build_stage() -> dockerfile.Stage:
    return dockerfile.stages()[0]


def runtime_stage() -> dockerfile.Stage:
    return dockerfile.stages()[-1]


def _python_version(base: str) -> str:
    """``python:3.11-slim`` -> ``3.11``."""
    repository, _, tag = base.partition(":")
    assert repository in ("python", "docker.io/library/python"), base
    return tag.split("-")[0]


def test_the_build_and_runtime_stages_run_one_python_the_project_supports():
    stages = dockerfile.stages()
    assert len(stages) >= 2
    build, runtime = stages[0], stages[-1]
    assert build.name and runtime.base == build.base  # the wheel is built for one CPython
    assert runtime.base.endswith("-slim")
    version = _python_version(runtime.base)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(version + ".0"), (version, requires)


def test_the_image_runs_the_python_the_suite_tests():
    """test_image.py stands in for the image by installing the wheel into a venv of this
    interpreter: that says something about the image only when the versions agree."""
    assert _python_version(runtime_stage().base) == "{}.{}".format(*sys.version_info[:2])


def test_the_build_stage_compiles_one_wheel_of_the_project():
    stage = build_stage()
    installs = [c for c in stage.run_commands() if c[:2] == ["apt-get", "install"]]
    assert any("build-essential" in c for c in installs)
    [wheel] = [c for c in stage.run_commands() if c[:2] == ["pip", "wheel"]]
    # What tests.checkout.build_wheel runs on a fresh clone (the wheel test_image.py uses).
    assert "--no-deps" in wheel and wheel[-1] == "."
    assert [i.value for i in stage.all("COPY")] == [". ."]


def _install_command() -> list[str]:
    [install] = [c for c in runtime_stage().run_commands() if c[:2] == ["pip", "install"]]
    return install


def test_the_runtime_stage_installs_only_the_built_wheel_and_binary_dependencies():
    stage = runtime_stage()
    assert stage.base != build_stage().name  # a fresh image, not the build stage's layers
    for command in stage.run_commands():
        assert not (set(command) & BUILD_TOOLS), command
        assert command[:2] != ["pip", "wheel"]
    install = _install_command()
    assert "--only-binary=:all:" in install  # nothing compiles: no compiler is there
    [wheel] = [word for word in install if word.endswith(".whl")]
    wheel_dir = wheel.rsplit("/", 1)[0]
    [run] = [i for i in stage.all("RUN") if "pip install" in i.value]
    mount = dockerfile.flag_value(run, "mount")
    assert mount == {"type": "bind", "from": build_stage().name, "source": wheel_dir,
                     "target": wheel_dir}
    [built] = [c for c in build_stage().run_commands() if c[:2] == ["pip", "wheel"]]
    assert built[built.index("--wheel-dir") + 1] == wheel_dir


def test_the_image_runs_as_a_fixed_non_root_user():
    user = runtime_stage().last("USER").value
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, user  # numeric: runAsNonRoot can verify it
    assert gid.isdigit() and int(gid) != 0, user
    [adduser] = [c for c in runtime_stage().run_commands() if c[0] == "useradd"]
    assert adduser[adduser.index("--uid") + 1] == uid


def test_the_entrypoint_is_banditd_serve_in_exec_form():
    stage = runtime_stage()
    assert dockerfile.exec_form(stage.last("ENTRYPOINT")) == ["banditd", "serve"]
    assert dockerfile.exec_form(stage.last("CMD")) == []


def test_the_image_serves_on_every_address_with_serve_flags_only():
    env = runtime_stage().env()
    assert env["BANDITD_HOST"] == "0.0.0.0" and env["BANDITD_METRICS_HOST"] == "0.0.0.0"
    accepted = {p.envvar for p in serve_command.params}
    assert {name for name in env if name.startswith("BANDITD_")} <= accepted


def test_the_image_exposes_the_ports_the_server_deployment_declares():
    exposed = {int(port) for i in runtime_stage().all("EXPOSE") for port in i.value.split()}
    declared = {p["containerPort"] for p in container(find("Deployment", "banditd"))["ports"]}
    assert exposed == declared


# -- the build context -------------------------------------------------------------------


def _rules():
    return dockerfile.ignore_rules(dockerfile.DOCKERIGNORE.read_text())


def test_the_context_holds_every_file_the_build_reads():
    """The sources of every package pyproject.toml installs, what setup.py reads
    (proto/ and the stub generator in clients/python) and the readme pyproject names."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = {*pyproject["tool"]["setuptools"]["package-dir"].values(), "banditd", "proto",
               "clients/python"}
    files = {"pyproject.toml", "setup.py", pyproject["project"]["readme"]}
    needed = [name for name in tracked_files()
              if name in files or any(name.startswith(folder + "/") for folder in folders)]
    assert len(needed) > 50  # the rule above found the sources
    rules = _rules()
    assert [name for name in needed if not dockerfile.in_context(name, rules)] == []


def test_the_context_leaves_out_a_developers_artefacts():
    built = [str(p.relative_to(ROOT)) for pattern in (*BUILD_OUTPUTS, "core_ext/**/*.c")
             for p in ROOT.glob(pattern)]
    assert built, "this checkout is built (make), so there are outputs to leave out"
    elsewhere = [".venv/bin/python", "build/cython-include/banditd/__init__.pxd",
                 ".banditd/pgdata/PG_VERSION", "logs/app.log", ".git/HEAD",
                 "banditd.egg-info/PKG-INFO", "server/__pycache__/app.cpython-311.pyc",
                 "tests/conftest.py", "benchmarks/results/load.json"]
    rules = _rules()
    assert [name for name in built + elsewhere if dockerfile.in_context(name, rules)] == []


def test_the_ignore_rules_are_read_as_docker_reads_them():
    """The matcher the two tests above rely on: the last matching rule wins, a folder's
    rule covers what is inside it, ``*`` stays within one folder, ``**`` does not."""
    rules = dockerfile.ignore_rules("*\n!src/\nsrc/**/*.so\n!src/keep.so\n")
    assert not dockerfile.in_context("README.md", rules)
    assert dockerfile.in_context("src/a/b.py", rules)
    assert not dockerfile.in_context("src/a/b.so", rules)
    assert not dockerfile.in_context("src/b.so", rules)
    assert dockerfile.in_context("src/keep.so", rules)
    one_level = dockerfile.ignore_rules("*/x.py")
    assert not dockerfile.in_context("a/x.py", one_level)
    assert dockerfile.in_context("a/b/x.py", one_level)
