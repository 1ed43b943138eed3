# Build, lint, test and run keyturn. `make test` is what CI runs (through .ci/run).
CARGO ?= cargo
PYTHON ?= python3
VENV ?= .venv
VENV_BIN := $(abspath $(VENV))/bin
PYTHON_DEPS := 'maturin>=1.5,<2' 'flask>=2.3' 'pytest>=7' 'gunicorn>=21' 'requests>=2.28' 'ruff>=0.5'

.PHONY: build lint lint-rust lint-python test test-rust test-python develop venv run

build:
	$(CARGO) build --workspace --exclude keyturn-python

venv: $(VENV_BIN)/maturin

$(VENV_BIN)/maturin:
	$(PYTHON) -m venv $(VENV)
	$(VENV_BIN)/pip install --quiet --upgrade pip
	$(VENV_BIN)/pip install --quiet $(PYTHON_DEPS)

# Builds keyturn._native and installs the Python package into the virtualenv in editable mode.
develop: venv
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV_BIN)/maturin develop --quiet -m python/Cargo.toml

lint: lint-rust lint-python

lint-rust:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

lint-python: venv
	$(VENV_BIN)/ruff check python examples bench
	$(VENV_BIN)/ruff format --check python examples bench

# The PostgreSQL store tests need a server: scripts/with-postgres starts a throwaway one unless
# KEYTURN_TEST_POSTGRES_URL names one, and stops it afterwards even when the tests fail.
test-rust:
	scripts/with-postgres $(CARGO) test --workspace --exclude keyturn-python

test-python: develop
	$(CARGO) build --bin keyturn
	$(CARGO) build -p keyturn-http --example axum
	KEYTURN_BIN=$(abspath target/debug/keyturn) KEYTURN_AXUM_EXAMPLE=$(abspath target/debug/examples/axum) \
		$(VENV_BIN)/pytest python/tests -q

test: lint test-rust test-python

# Serves the example API on 127.0.0.1:$(PORT) with a fresh key; state lives in .run/.
PORT ?= 8000
run: develop
	$(CARGO) build --bin keyturn
	PORT=$(PORT) VENV_BIN=$(VENV_BIN) examples/flask_app/run.sh

# Benchmarks (docs/benchmarks.md). `make bench` measures at full size and takes a while: the scale
# benchmark creates SCALE_KEYS keys, and the PostgreSQL propagation test runs 100 trials.
# `make bench-smoke` runs the rest at tiny sizes, to check that the benchmarks work. Both build
# release binaries, write JSON to $(BENCH_OUT) and print one summary table. The PostgreSQL
# benchmarks run against KEYTURN_BENCH_POSTGRES_URL, else against a throwaway cluster that
# scripts/with-postgres starts; without PostgreSQL they report a skip. BENCH_DEPS are the Python
# packages only the benchmarks need.
BENCH_DEPS := 'flask-httpauth>=4.8,<5'
BENCH_OUT := target/bench
SCALE_KEYS ?= 1000000

.PHONY: bench bench-smoke bench-run bench-tools develop-release

bench: CRITERION_ARGS := --warm-up-time 1 --measurement-time 3
bench: FLASK_ARGS := --requests 20000 --rounds 5 --slow-requests 30
bench: HTTP_ARGS := --duration 10 --rounds 2
bench: PROPAGATION_TRIALS := 50
bench: BENCH_KEYS := $(SCALE_KEYS)
bench: POSTGRES_PROPAGATION := yes
bench: bench-run

bench-smoke: CRITERION_ARGS := --warm-up-time 0.1 --measurement-time 0.2 --sample-size 10
bench-smoke: FLASK_ARGS := --requests 300 --rounds 2 --slow-requests 2
bench-smoke: HTTP_ARGS := --duration 1 --rounds 1
bench-smoke: PROPAGATION_TRIALS := 3
bench-smoke: BENCH_KEYS := 1000
bench-smoke: POSTGRES_PROPAGATION := no
bench-smoke: bench-run

# Builds keyturn._native with optimisations, as an application installs it from a wheel.
develop-release: venv
	$(VENV_BIN)/pip install --quiet $(BENCH_DEPS)
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV_BIN)/maturin develop --release --quiet -m python/Cargo.toml

# wrk drives the HTTP benchmark. It is installed with apt-get when missing and this runs as root;
# otherwise the HTTP benchmark reports that it skipped.
bench-tools:
	@if command -v wrk >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null) \
			|| echo "warning: installing wrk failed; the HTTP benchmark will be skipped" >&2; \
	else \
		echo "warning: wrk is missing and installing it needs root and apt-get; the HTTP benchmark will be skipped" >&2; \
	fi

bench-run: develop-release bench-tools
	rm -rf $(BENCH_OUT) && mkdir -p $(BENCH_OUT) && touch $(BENCH_OUT)/started
	cut -d ' ' -f 1-3 /proc/loadavg > $(BENCH_OUT)/load-start.txt
	$(CARGO) build --release --bin keyturn
	scripts/with-postgres sh -c 'KEYTURN_BENCH_POSTGRES_URL="$${KEYTURN_BENCH_POSTGRES_URL:-$${KEYTURN_TEST_POSTGRES_URL:-}}" \
		$(CARGO) bench -p keyturn --bench verify --bench store -- $(CRITERION_ARGS)'
	$(CARGO) bench -p keyturn --bench scale -- --keys $(BENCH_KEYS) --json $(abspath $(BENCH_OUT))/scale.json
	$(VENV_BIN)/python bench/flask_bench.py $(FLASK_ARGS) --json $(BENCH_OUT)/flask.json
	$(VENV_BIN)/python bench/http_bench.py --keyturn-bin target/release/keyturn $(HTTP_ARGS) \
		--json $(BENCH_OUT)/http.json
	$(VENV_BIN)/python bench/propagation_bench.py --keyturn-bin target/release/keyturn \
		--trials $(PROPAGATION_TRIALS) --json $(BENCH_OUT)/propagation-sqlite.json
	@if [ "$(POSTGRES_PROPAGATION)" = yes ]; then \
		KEYTURN_BIN=$(abspath target/release/keyturn) \
		KEYTURN_PROPAGATION_REPORT=$(abspath $(BENCH_OUT))/propagation-postgres.json \
		$(VENV_BIN)/pytest python/tests/test_postgres.py -q -k test_revocation_reaches_every_process \
		|| echo "warning: the PostgreSQL propagation test failed or skipped, so its figures are missing" >&2; \
	fi
	$(VENV_BIN)/python bench/summary.py $(BENCH_OUT)
