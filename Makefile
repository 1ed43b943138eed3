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
	$(VENV_BIN)/ruff check python examples
	$(VENV_BIN)/ruff format --check python examples

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
