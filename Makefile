# The two commands a new user needs: `make serve` and `make test`. CI runs `make test` too (.ci/run).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: serve test lint typecheck pytest bench bench-edge bench-compress bench-finetune bench-sequence bench-automl bench-privacy bench-federated bench-deploy bench-startup bench-scale install clean ui-assets chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the dependency lists change; constraints.txt pins every version (torch==2.13.0, CPU build).
# The kserve wheel is only downloaded: the tests read KServe's API types from it (tests/kserve_schema.py).
# Then the sample models are built once into the per-user cache every home shares (~/.cache/stratus/samples/KEY,
# see src/stratus/samples/cache.py); a new home only imports them. A no-op when that cache is already there.
# The .proto too: installing generates the gRPC code from it (setup.py).
$(STAMP): $(BIN)/python pyproject.toml constraints.txt setup.py src/stratus/grpc/inference.proto | $(UI_STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[train,dev,scale,explain,federated]"
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt flwr
	$(BIN)/python -m pip download --quiet --no-deps -c constraints.txt -d $(VENV)/wheels kserve
	$(BIN)/python -m stratus.samples
	@touch $(STAMP)

# The web console's third-party assets (uPlot), pinned by ui/package-lock.json and installed from the npm registry
# with `npm ci`, then copied into the package (git-ignored; a wheel built afterwards ships them). Nothing comes from a
# CDN at run time. axe-core (a devDependency) stays in ui/node_modules for the browser tests.
UI_VENDOR := src/stratus/ui/static/vendor
UI_STAMP  := $(UI_VENDOR)/.built
$(UI_STAMP): ui/package.json ui/package-lock.json
	cd ui && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	mkdir -p $(UI_VENDOR)
	cp ui/node_modules/uplot/dist/uPlot.iife.min.js ui/node_modules/uplot/dist/uPlot.min.css $(UI_VENDOR)/
	@touch $(UI_STAMP)

ui-assets: $(UI_STAMP)

# Debian's Chromium for the console's browser tests (tests/ui drive it with Playwright through its executable path;
# no browser is downloaded). Installed when missing; where it cannot be (no root, no apt), those tests skip.
chromium:
	@command -v chromium >/dev/null 2>&1 || apt-get install -y -q chromium >/dev/null 2>&1 \
	  || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1) \
	  || echo "chromium could not be installed (apt-get install -y chromium): the console's browser tests will skip"

install: $(STAMP) $(UI_STAMP)

serve: $(STAMP) $(UI_STAMP)
	$(BIN)/stratus serve --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks edge
	$(BIN)/ruff format --check src tests benchmarks edge

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(UI_STAMP) chromium
	$(BIN)/python -m pytest

test: lint typecheck pytest

bench: $(STAMP) $(UI_STAMP) chromium
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.edge
	$(BIN)/python -m benchmarks.console
	$(BIN)/python -m benchmarks.explain

# Explanations: one breast-cancer row's latency; iris at concurrency 8 beside 20 explain requests (docs/explain.md).
bench-explain: $(STAMP)
	$(BIN)/python -m benchmarks.explain --write

# Federated learning: three non-IID digit shards, a CNN with FedAvg + SecAgg+ through a real server and three client
# processes, against central training on the same rows; --write records it in docs/federated.md.
bench-federated: $(STAMP)
	$(BIN)/python -m benchmarks.federated --write

# The console's pages with 1,000 models x 10 versions and 10,000 jobs; --write records them in docs/benchmarks.md.
bench-console: $(STAMP) $(UI_STAMP) chromium
	$(BIN)/python -m benchmarks.console --write

# The edge runner (from a venv of its own, installed from edge/) against the platform; --write records it in docs/benchmarks.md.
bench-edge: $(STAMP)
	$(BIN)/python -m benchmarks.edge --write

bench-compress: $(STAMP)
	$(BIN)/python -m benchmarks.compression

# fine_tune of MiniLM against the bag-of-embeddings classifier on the module-family docstring task, and
# personalization's base/personalized figures (about 45 minutes on a busy 2-core machine, one thread: two threads
# were several times slower there); records them in docs/benchmarks.md.
bench-finetune: $(STAMP)
	$(BIN)/python -m benchmarks.finetune --threads 1 --write

# rnn, transformer and text_classifier on the module-family docstring task, as jobs on a real server, the held-out
# texts served over V2 and V1 (about 10 minutes on 2 cores); records the table in docs/training.md.
bench-sequence: $(STAMP)
	$(BIN)/python -m benchmarks.sequence --write

# AutoML with a 120 s budget on breast_cancer, wine, digits, diabetes and make_friedman1 (2,000 rows) against every
# family's defaults, as jobs on a real server (about 15 minutes on 2 cores); records the table in docs/training.md.
bench-automl: $(STAMP)
	$(BIN)/python -m benchmarks.automl --write

# DP-SGD on breast_cancer: logistic regression at epsilon 1.0 and 0.1, 20 runs each (about a minute);
# records the table in docs/privacy.md.
bench-privacy: $(STAMP)
	$(BIN)/python -m benchmarks.privacy --write

bench-deploy: $(STAMP)
	$(BIN)/python -m benchmarks.deploy

# A new home's first start and the CLI's start-up (needs Debian's hyperfine: apt-get install -y hyperfine).
bench-startup: $(STAMP)
	$(BIN)/python -m benchmarks.startup

# Ray placement against local replicas (iris, MiniLM at c=32) and the Ray executor's job start, on a two-node Ray
# cluster in a network namespace of its own (needs root: unshare -n), and data-parallel training (digits CNN with
# workers 2 against 1, checkpoint cost). --write records them in docs/benchmarks.md.
bench-scale: $(STAMP)
	$(BIN)/python -m benchmarks.scale --write
	$(BIN)/python -m benchmarks.distributed --write

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
