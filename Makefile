# Track2Act ROS 2 workspace. `make help` lists the targets.
SHELL := /bin/bash
VENV  ?= .venv
ENV   := source scripts/env.sh &&
# Parallel pytest workers (each gets its own ROS_DOMAIN_ID, see conftest.py).
JOBS  ?= 2
# Extra t2a-demo flags, e.g. make demo DEMO_ARGS="--task drawer_open --split G --seed 1001"
DEMO_ARGS ?=
PYTEST := bash scripts/pytest.sh -n $(JOBS)

.PHONY: help setup demo test lint format test-unit test-ros test-sim test-slow bench eval lock clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

setup:  ## install apt packages, .venv, ROS 2 wheels, build t2a_msgs, install the packages (idempotent)
	@bash scripts/setup.sh

demo: setup  ## README main command: the whole stack on t2a_sim for one episode; artifacts in artifacts/demo
	@$(ENV) t2a-demo $(DEMO_ARGS)

test: setup lint  ## README test command: setup, ruff, and the unit + ros + sim tiers (not slow)
	@$(PYTEST) -m "not slow"

lint:  ## ruff check + format check, hadolint of the robot image's Dockerfile
	@$(ENV) ruff check . && $(ENV) ruff format --check --quiet . && echo "ruff: clean"
	@$(ENV) hadolint docker/Dockerfile && echo "hadolint: clean"

format:  ## apply ruff fixes and formatting
	@$(ENV) ruff check --fix . ; $(ENV) ruff format .

test-unit: setup  ## only pure-python unit tests
	@$(PYTEST) -m unit
test-ros: setup  ## only rclpy-over-DDS tests
	@$(PYTEST) -m ros
test-sim: setup  ## only MuJoCo tests
	@$(PYTEST) -m sim
test-slow: setup  ## training smoke runs and long evaluations
	@$(PYTEST) -n 1 -m slow

bench: setup  ## run every benchmark in benchmarks/ (each prints a table)
	@set -e; for b in benchmarks/[a-z]*.py; do echo "=== $$b"; $(ENV) python $$b; done

eval: setup  ## closed-loop evaluation table (40+ episodes per split: 8 per MG/G task, 14 per CG/TG task; every method on the same seeds, with the expert; methods without a checkpoint are skipped)
	@$(ENV) python training/eval_closed_loop.py --splits MG G CG TG --episodes 40 --workers $(JOBS) --out runs/eval_closed_loop

lock: setup  ## re-pin requirements/lock.txt from the current venv
	@{ echo "# Full pinned environment (pip freeze of a working venv), used as constraints by scripts/setup.sh."; \
	   echo "# Regenerate with: make lock"; $(ENV) pip freeze --exclude-editable | grep -v -E '^(-e|t2a)'; } > requirements/lock.txt

clean:  ## remove build outputs (keeps .venv)
	rm -rf build install log .pytest_cache .ruff_cache
