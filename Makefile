# The two front-door commands: `make train` and `make test`. Each sets up .venv first
# (pinned by constraints.txt) when setup.cfg or the pins changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install train test test-slow results clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,experiments,deploy]"
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/python -m experiments.train --flagfile=experiments/configs/cartpole.cfg

# --durations lists the slowest tests: the default suite is to stay under 10 minutes on 2
# cores (long learning checks are marked slow; a module's tests share one launcher run).
# Most of a test's time is single-threaded (imports, tracing, env steps), so the tests run
# in one worker per core, at most 4 (each worker holds its own TensorFlow); a module's
# tests stay in one worker, where they share their module's fixtures.
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q --durations=10 -n auto --maxprocesses=4 --dist loadfile

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

# Every shipped flagfile over the publication seeds (hours on 2 cores; resumable).
RESULTS_TASKS ?= $(subst $(eval) ,$(comma),$(basename $(notdir $(wildcard experiments/configs/*.cfg))))
# Each flagfile's publication seeds are its '# seeds:' header (default 100-104);
# RESULTS_SEEDS=1,2,3 runs every task on those instead.
RESULTS_SEEDS ?=
comma := ,

results: $(STAMP)
	$(BIN)/python -m experiments.suite --tasks=$(RESULTS_TASKS) \
		$(if $(RESULTS_SEEDS),--seeds=$(RESULTS_SEEDS)) --root=results --parallel=2

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
