# gatedrnn — set-up, tests and the main job. Everything installs from this repo's own files.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# Data: a local copy (../shared/data on CI and dev machines) or, if absent, the download cache.
export GATEDRNN_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: setup test demo bench reproduce smoke clean

$(BIN)/gatedrnn: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

# `source .venv/bin/activate` then gives every README command the same data folder as the make targets.
setup: $(BIN)/gatedrnn
	@if [ -n "$(GATEDRNN_DATA_DIR)" ] && ! grep -q "GATEDRNN_DATA_DIR=\"$(GATEDRNN_DATA_DIR)\"" $(BIN)/activate; then \
		echo 'export GATEDRNN_DATA_DIR="$(GATEDRNN_DATA_DIR)"  # added by make setup' >> $(BIN)/activate; fi

# The suite on every core (pytest-xdist; its tests are independent: each writes only under its own tmp_path).
test: setup
	$(BIN)/pytest -q -n auto

# The main job for now: a short GRU training on JSB Chorales that prints its test NLL.
demo: setup
	$(BIN)/gatedrnn train --dataset jsb --unit gru --epochs 30 --out runs/demo-jsb-gru --no-progress

# The main job: the study at its laptop budget (JSB Chorales, the three units, quick's protocol: 6 learning-rate
# candidates, <= 250 epochs with patience 10, 3 fresh seeds; a few minutes on 2 cores, docs/STUDY.md). Prints
# its Table 2 and where report.html is.
reproduce: setup
	$(BIN)/gatedrnn reproduce --budget laptop --out results/laptop

smoke: setup
	$(BIN)/gatedrnn reproduce --budget smoke --out results/smoke

bench: setup
	$(BIN)/gatedrnn bench

clean:
	rm -rf $(VENV) runs build *.egg-info
