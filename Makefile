# Build, lint and test keyturn. `make test` is what CI runs (through .ci/run).
CARGO ?= cargo

.PHONY: build lint test test-rust

build:
	$(CARGO) build --workspace --exclude keyturn-python

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --exclude keyturn-python --all-targets -- -D warnings

test-rust:
	$(CARGO) test --workspace --exclude keyturn-python

test: lint test-rust
