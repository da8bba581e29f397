# dynamig — every target creates/updates .venv by itself.
#   make run   the demo: a venv with the runtime dependencies only (pip install -e .)
#   make test  lint, types, import contracts, stubs, tests: adds the dev extras to the same venv
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
PIP := $(BIN)/python -m pip --disable-pip-version-check
say = @echo "make: $(1)" >&2

.PHONY: run test lint typecheck contracts unit venv venv-run proto proto-check clean

$(VENV)/bin/python:
	$(call say,creating $(VENV) ($(PY) -m venv))
	@$(PY) -m venv $(VENV)

# Runtime only: what `pip install dynamig` gets. A dev install (below) satisfies it too.
$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(call say,installing dynamig and its runtime dependencies into $(VENV) (pip install -e .; first time only))
	@$(PIP) install -q --no-compile -e .
	@touch $(RUN_STAMP)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(call say,installing dynamig with the dev extras into $(VENV) (pip install -e '.[dev]': tests, lint, notebooks))
	@$(PIP) install -q --upgrade pip
	@$(PIP) install -q -e '.[dev]'
	@touch $(RUN_STAMP) $(STAMP)

venv: $(STAMP)

venv-run: $(RUN_STAMP)

run: $(RUN_STAMP)
	$(call say,running the demo: $(BIN)/dynamig demo)
	@$(BIN)/dynamig demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck contracts proto-check unit

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Kubelet device plugin API stubs (deviceplugin/proto): `proto` regenerates them, `proto-check`
# regenerates into a temporary folder and fails when the committed files differ.
PROTO_SRC := deviceplugin/proto/api.proto
PROTO_OUT := deviceplugin/proto/api_pb2.py deviceplugin/proto/api_pb2_grpc.py

proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. $(PROTO_SRC)

proto-check: $(STAMP)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=$$tmp --grpc_python_out=$$tmp $(PROTO_SRC) && \
	for f in $(PROTO_OUT); do \
	  diff -u $$f $$tmp/$$f >/dev/null || { echo "$$f is stale: run 'make proto'" >&2; exit 1; }; \
	done && echo "proto stubs up to date"

# What-if and benchmark notebooks in their full configuration; their plots go to docs/. The capacity
# what-if is the slow one (more than 25 minutes on a shared 2-core machine); one notebook alone:
# make notebooks NOTEBOOKS=notebooks/live_cluster.ipynb (seconds: it plots docs/churn/*.json).
# DYNAMIG_NB_SMALL=1 runs the small configuration (what tests/test_notebooks.py does).
NOTEBOOKS := notebooks/capacity_whatif.ipynb notebooks/solver_benchmark.ipynb notebooks/live_cluster.ipynb

.PHONY: notebooks
notebooks: $(STAMP)
	@for nb in $(NOTEBOOKS); do \
	  echo "executing $$nb" >&2; \
	  $(BIN)/python -c 'import sys, nbformat; from nbclient import NotebookClient; \
	    nb = nbformat.read(sys.argv[1], as_version=4); \
	    NotebookClient(nb, timeout=7200, kernel_name="python3", resources={"metadata": {"path": "notebooks"}}).execute(); \
	    print("".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "stream"))' \
	    $$nb || exit 1; \
	done
