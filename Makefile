# gatedrnn — set-up, tests and the main job. Everything installs from this repo's own files.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# Data: a local copy (../shared/data on CI and dev machines) or, if absent, the download cache.
export GATEDRNN_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: setup test demo bench reproduce clean

$(BIN)/gatedrnn: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

setup: $(BIN)/gatedrnn

test: setup
	$(BIN)/pytest -q

# The main job for now: a short GRU training on JSB Chorales that prints its test NLL.
demo: setup
	$(BIN)/gatedrnn train --dataset jsb --unit gru --epochs 30 --out runs/demo-jsb-gru --no-progress

bench: setup
	$(BIN)/gatedrnn bench

clean:
	rm -rf $(VENV) runs build *.egg-info
