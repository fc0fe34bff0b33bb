# Two entry points (see README): `make run` and `make test`. Both set up the venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-requirements
GROUP ?=
APP_PORT ?= 8501
export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONUNBUFFERED := 1

.PHONY: setup data run notebooks pdf report submit check test lint format clean app train-ddp

setup: $(STAMP)  ## create .venv and install requirements.txt (reruns only when it changes)

$(STAMP): requirements.txt constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/nbstripout --install --attributes .gitattributes 2>/dev/null || true
	touch $(STAMP)

data: setup  ## make data/flickr_subset2 ready (local copy, Flickr8k, or download) and check it
	$(BIN)/python -m utils.data fetch

run: data notebooks  ## the main job: data, then every notebook in order -> results/

notebooks: setup  ## execute notebooks/*.ipynb in order into results/notebooks/
	$(BIN)/python -m utils.handin notebooks

pdf: setup  ## export the executed notebooks to PDF (xelatex)
	$(BIN)/python -m utils.handin pdf

report: setup  ## build rapport_latex/main.tex from results/ (fails past 8 + 2 pages)
	$(BIN)/python -m utils.handin.report build

submit: setup  ## build <group>.zip from team.toml and check it: make submit GROUP=N
	$(BIN)/python -m utils.handin.submission build $(if $(GROUP),--group $(GROUP),)

check: setup  ## check a hand-in zip: make check ZIP=1.zip (default: <group of team.toml>.zip)
	$(BIN)/python -m utils.handin.submission check $(ZIP)

app: setup  ## the search page on http://127.0.0.1:$(APP_PORT) over models/*.pt (after make run)
	APP_PORT=$(APP_PORT) $(BIN)/python -m utils.app

NPROC ?= 2
DATASET ?= course
train-ddp: setup  ## CLIP on NPROC processes (DDP): make train-ddp NPROC=2 DATASET=flickr8k ARGS=...
	$(BIN)/torchrun --standalone --nproc_per_node=$(NPROC) -m utils.train.clip_cli \
		--dataset $(DATASET) $(ARGS)

test: setup  ## the whole test suite
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check utils tests
	$(BIN)/nbstripout --verify notebooks/*.ipynb

clean:
	rm -rf results/notebooks rapport_latex/generated rapport_latex/build
