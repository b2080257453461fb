# Every target that runs Python first makes sure .venv exists and matches pyproject.toml (the stamp file is
# keyed on the hash of pyproject.toml, so a second `make test` does not reinstall anything).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SPEC_HASH := $(shell sha256sum pyproject.toml | cut -c1-16)
STAMP := $(VENV)/.installed-$(SPEC_HASH)
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup test test-slow test-all lint demo demo-quick demo-study demo-study-plateau demo-study-until-plateau demo-study-seed100 demo-study-fixed chapter2-depth chapter2-normals chapter2 \
        chapter3 bench gpu-check clean clean-runs

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

setup: $(STAMP) ## create .venv and install the pinned dependencies (once per pyproject.toml)

test: $(STAMP) ## run the default test suite (CPU, a few minutes)
	$(PY) -m pytest

test-slow: $(STAMP) ## run only the heavier tests marked `slow`
	$(PY) -m pytest -m slow

test-all: $(STAMP) ## run every test, slow ones included
	$(PY) -m pytest -m "slow or not slow"

lint: $(STAMP) ## ruff over the whole tree
	$(VENV)/bin/ruff check .

demo: $(STAMP) ## the main job: the dissertation in miniature on generated worlds, CPU (ARGS="--force" reruns)
	$(PY) -m demo $(ARGS)

demo-quick: $(STAMP) ## a few-minute version of the miniature for smoke checks
	$(PY) -m demo --quick $(ARGS)

demo-study: $(STAMP) ## the miniature's evidence: 3 seeds, every run trained until it plateaus, learning curves (~90 min on 2 cores); writes docs/demo-study.md
	$(PY) -m demo --study --publish $(ARGS)

demo-study-seed100: $(STAMP) ## the study's stability check: the same with seeds 100-102 (~90 min on 2 cores); writes docs/demo-study-seed100.md, then lists verdict flips
	$(PY) -m demo --study seed=100 out=runs/demo-study-until-plateau-90min-seed100 publish_name=demo-study-seed100 --publish $(ARGS)
	$(PY) -m demo --compare-verdicts docs/demo-study.json docs/demo-study-seed100.json

demo-study-fixed: $(STAMP) ## the earlier fixed-length study: 3 seeds at lengths sized from probe curves (~50-85 min on 2 cores; experiments/demo/study.yaml); writes docs/demo-study-fixed.md
	$(PY) -m demo --study --config experiments/demo/study.yaml --publish $(ARGS)

demo-study-plateau: $(STAMP) ## the study at plateau lengths: minutes on a CUDA GPU, ~2.5 h on 2 cores with ARGS=device=cpu (experiments/demo/study_plateau.yaml); writes docs/demo-study-plateau.md
	$(PY) -m demo --study --config experiments/demo/study_plateau.yaml --publish $(ARGS)

demo-study-until-plateau: $(STAMP) ## the first until-plateau study: old caps, no CPU switches (~110 min on 2 cores; experiments/demo/study_until_plateau.yaml); writes docs/demo-study-until-plateau.md
	$(PY) -m demo --study --config experiments/demo/study_until_plateau.yaml --publish $(ARGS)

demo-study-chapter3-long: $(STAMP) ## after demo-study-fixed: its Chapter-3 runs continued to 2500 steps (~50 min on 2 cores; runs/demo-study-chapter3-long)
	test -d runs/demo-study-chapter3-long || cp -r runs/demo-study runs/demo-study-chapter3-long
	$(PY) -m demo --config experiments/demo/study_chapter3_long.yaml $(ARGS)

chapter2-depth: $(STAMP) ## SharinGAN depth, end to end on real data (ARGS="data.vkitti.root=... data.kitti.root=...")
	$(PY) -m sharingan.pipeline --task depth $(ARGS)

chapter2-normals: $(STAMP) ## SharinGAN face normals, end to end on real data (ARGS="data.synthetic_root=... data.celeba_root=... data.photoface_root=...")
	$(PY) -m sharingan.pipeline --task normals $(ARGS)

chapter2: chapter2-depth chapter2-normals ## both Chapter 2 experiments

chapter3: $(STAMP) ## LD-ZNet, ZNet, RGBNet end to end with real SD weights and data (ARGS="model.stable_diffusion.path=...")
	$(PY) -m ldznet.pipeline $(ARGS)

bench: $(STAMP) ## speed and memory of every method, side by side (benchmarks/results/)
	$(PY) -m benchmarks $(ARGS)

gpu-check: $(STAMP) ## on a CUDA GPU (<= 8 min): paper-size training steps, exact resume, DDP, benchmarks; refuses without CUDA
	$(PY) -m benchmarks.gpu_check $(ARGS)

clean: ## remove caches (keeps .venv and runs/)
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -prune -not -path './.venv/*' -exec rm -rf {} +

clean-runs: ## remove run outputs under runs/
	rm -rf runs
