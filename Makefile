# banditd: the commands in README.md. Every target works on a fresh clone:
# it creates .venv, installs the project (compiling the Cython kernels and
# generating the gRPC stubs), and then does its job.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SOURCES := pyproject.toml setup.py clients/python/stub_build.py \
           $(wildcard core_ext/*/*.pyx core_ext/*/*.pxd proto/banditd/v1/*.proto)
# `make serve & make demo` starts two makes that both find .venv missing: the build
# runs under this lock, and the make that waited finds it done (the inner make
# re-reads the stamps once it holds the lock).
BUILD_LOCK := .venv.lock

.PHONY: serve test bench demo services lint clean

ifeq ($(BUILD_LOCKED),)
$(VENV)/.test-installed $(VENV)/.bench-installed: $(SOURCES)
	@flock $(BUILD_LOCK) $(MAKE) --no-print-directory BUILD_LOCKED=1 $@
else
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.test-installed: $(BIN)/python $(SOURCES)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(VENV)/.bench-installed: $(VENV)/.test-installed
	$(BIN)/pip install -q -e '.[bench]'
	touch $@
endif

## serve: start banditd on the embedded PostgreSQL (./.banditd) with a demo experiment
serve: $(VENV)/.test-installed
	$(BIN)/banditd serve --create-demo

## test: the whole suite against real PostgreSQL and Redis (started if down)
test: $(VENV)/.test-installed services
	$(BIN)/ruff check .
	$(BIN)/pytest

## bench: every benchmark in short mode; JSON reports in benchmarks/results/
bench: $(VENV)/.bench-installed services
	$(BIN)/python -m benchmarks --short

## demo: simulated MovieLens users against the server from `make serve` (waits for it)
demo: $(VENV)/.test-installed
	$(BIN)/banditctl demo $(DEMO_ARGS)

services:
	@.ci/ensure-services

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .

clean:
	rm -rf banditd-results build *.egg-info core_ext/*/*.c core_ext/*/*.so banditd/v1/*_pb2*.py* banditd/v1/*.proto benchmarks/results/*.json benchmarks/results/*.png
