# TrainerAgent — `make demo` runs the main job on the embedded stack; `make test` runs the tests.
# Each target installs what it needs (idempotent).

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DEMO_DATA := demo-data/digits
DEMO_REQUEST := Recognise handwritten digits, at least 97% accuracy, under 5 ms per image

.PHONY: install protos demo up down test test-unit test-integration lint bench eval-task clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, pinned: a looser requirement would pull a CUDA build of several GB.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

protos: install
	$(PY) scripts/gen_protos.py

$(DEMO_DATA): | install
	$(PY) -m services.data.demo $(DEMO_DATA)

demo: install $(DEMO_DATA)
	$(VENV)/bin/trainer-agent run "$(DEMO_REQUEST)" --data $(DEMO_DATA)

up: install
	$(VENV)/bin/trainer-agent up

down: install
	$(VENV)/bin/trainer-agent down

test: install
	$(PY) -m pytest -q -p no:cacheprovider

test-unit: install
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

test-integration: install
	$(PY) -m pytest -q -p no:cacheprovider tests/integration

lint: install
	$(VENV)/bin/ruff check .
	bash scripts/lint_protos.sh

bench: install $(DEMO_DATA)
	$(PY) scripts/bench.py

eval-task: install
	$(PY) scripts/eval_task.py

clean:
	rm -rf .trainer-agent demo-data .pytest_cache
