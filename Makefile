# The two commands of the README.
#   make run   set up .venv, then materialize the whole asset graph on the embedded sample (offline)
#   make test  set up .venv, then run the test suite
# The inner loop: make test-fast (the tests not marked slow, under 2 minutes on 2 cores).
export DAGSTER_HOME := $(CURDIR)
export HF_HUB_OFFLINE ?= 1
# The commands below run the project's own .venv/bin scripts: say so, or `dg` warns that the
# active virtual environment (none, or the caller's) is not the project's.
export VIRTUAL_ENV := $(CURDIR)/.venv

.PHONY: setup run test test-fast mutation ui lint bench

setup:
	@bash scripts/setup.sh

# The whole graph on the sample, in process: one line per step, then the leaderboard, the
# champion, the checks that did not pass and what to run next (`food-assets run --help`;
# -v prints Dagster's full event log too). It first marks runs whose process died (a SIGKILL,
# the OOM killer) failed and frees their `gpu` slots (food_assets/defs/recovery.py, ADR 0025).
# The same run through Dagster's own CLI (run the recovery first there):
#   .venv/bin/python -m food_assets.defs.recovery
#   .venv/bin/dg launch --assets 'not key:batch_predictions' --config configs/sample.yaml
run: setup
	.venv/bin/food-assets run --config configs/sample.yaml

# -n auto: pytest-xdist, one worker per core; each test file runs in one worker, and the files of
# the shared whole-graph fixture in one (food_assets_tests/conftest.py, ADR 0029). Plain
# `.venv/bin/python -m pytest` runs the same tests in one process.
test: setup
	.venv/bin/python -m pytest -n auto --dist loadfile

test-fast: setup
	.venv/bin/python -m pytest -n auto --dist loadfile -m "not slow" -q

# Mutation testing of the modules that decide user-visible results ([tool.mutmut] in
# pyproject.toml; docs/benchmarks.md, "Mutation testing"). A fresh mutants/ every time: mutmut
# never refreshes the copies of files it does not mutate. 2 workers, one thread each.
mutation: setup
	rm -rf mutants
	set -f; OMP_NUM_THREADS=1 .venv/bin/mutmut run --max-children 2 \
		$$(.venv/bin/python scripts/mutation_score.py --globs)
	.venv/bin/python scripts/mutation_score.py --fail-under 90

# `dg dev` (or: .venv/bin/dagster dev -w workspace.yaml)
ui: setup
	.venv/bin/dg dev

lint:
	.venv/bin/ruff check food_assets food_assets_tests benchmarks
	.venv/bin/ruff format --check food_assets food_assets_tests benchmarks
	.venv/bin/lint-imports

bench:
	.venv/bin/python benchmarks/data_loading.py
	.venv/bin/python benchmarks/training_throughput.py
	.venv/bin/python benchmarks/inference_latency.py
	.venv/bin/python benchmarks/clip_throughput.py
