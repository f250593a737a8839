# TrainerAgent — `make demo` runs the main job on the embedded stack; `make test` runs the tests.
# Each target installs what it needs (idempotent).

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DEMO_DATA := demo-data/digits
DEMO_REQUEST := Recognise handwritten digits, at least 97% accuracy, under 5 ms per image

.PHONY: install protos demo demo-text demo-table demo-regression demo-data up down test test-unit test-integration lint bench eval-task clean

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

demo-data/chat-topics.csv: | install
	$(PY) -m services.data.demo chat-topics $@

demo-data/penguins.csv: | install
	$(PY) -m services.data.demo penguins $@

demo-data: $(DEMO_DATA) demo-data/chat-topics.csv demo-data/penguins.csv

# Text: real chat lines by topic; 85% is above what the fast models reach, so the encoder is chosen.
demo-text: install demo-data/chat-topics.csv
	$(VENV)/bin/trainer-agent run "Classify chat messages by topic, at least 85% accuracy" --data demo-data/chat-topics.csv

# Tables: the Palmer penguins (categorical columns, missing values), a class and a quantity.
demo-table: install demo-data/penguins.csv
	$(VENV)/bin/trainer-agent run "Predict the penguin species from its measurements" --data demo-data/penguins.csv

demo-regression: install demo-data/penguins.csv
	$(VENV)/bin/trainer-agent run "Predict a penguin's body mass in grams, MAE under 300" --data demo-data/penguins.csv

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

# BENCH_JOBS: digits (default), text, species, body_mass, or all.
BENCH_JOBS ?= digits
bench: install
	$(PY) scripts/bench.py --jobs $(BENCH_JOBS)

eval-task: install
	$(PY) scripts/eval_task.py

clean:
	rm -rf .trainer-agent demo-data .pytest_cache
