# make demo and make test (docs/install.md). Each sets up .venv (and the offline dataset) on first use.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test setup data clean

# The eight experiments of the lecture notes at quick scale; writes results/REPORT.md.
demo: setup
	$(PY) -m vaejax_experiments.run_all --scale quick

# One worker per core, each pinned to its own; the tests that read the shared smoke run go to one worker (tests/conftest.py).
test: setup
	$(PY) -m pytest -n auto --dist loadgroup

setup: $(STAMP) data

# The test and experiments extras: the tests run the experiments.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,experiments]'
	touch $(STAMP)

# Fashion-MNIST offline, from Debian's package; skipped quietly without apt-get or root (the IDX files are then downloaded).
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing dataset-fashion-mnist"; \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
			|| echo "could not install dataset-fashion-mnist; fashion_mnist will be downloaded"; \
	fi

clean:
	rm -rf results runs .pytest_cache
