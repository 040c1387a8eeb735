# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR := demo

.PHONY: demo test test-all lint venv clean-demo

# The stamp is rebuilt when a requirements file changes.
$(VENV)/.installed: prod_requirements.txt dev_requirements.txt postgres_requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r dev_requirements.txt
	touch $@

venv: $(VENV)/.installed

# The quick tests run in one process per core (pytest-xdist), each test module whole in one of
# them, so that a module's trained-once fixtures are trained once, and in the order conftest.py
# gives them (its longest modules first), not xdist's largest-number-of-tests first.
QUICK := -m "not slow" -n auto --dist loadfile --no-loadscope-reorder

# The quick check: everything but the longer end-to-end runs (target: at most 4 minutes on 2 cores).
test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(QUICK)

# CI's command, the full check: also the @pytest.mark.slow runs (kills and resumes, DDP on one
# and on two nodes, the notebooks, sweeps on PostgreSQL, MLflow servers), which start their
# own servers (PostgreSQL, MLflow) and stop them. The slow runs go one at a time: several start
# processes of their own (DDP, torchrun nodes, servers) and time out when they share the cores.
test-all: $(VENV)/.installed
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(QUICK)
	$(PY) -m pytest -m slow

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

# The demo needs only the runtime requirements: no test, lint or notebook tools.
$(VENV)/.installed-prod: prod_requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r prod_requirements.txt
	touch $@

demo: $(VENV)/.installed-prod
	$(PY) demo.py --dir $(DEMO_DIR)

clean-demo:
	rm -rf $(DEMO_DIR)
