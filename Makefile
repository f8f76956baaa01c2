# deflect: `make demo` runs the demo, `make test` runs every test. Both install what is missing.
# The build cache lives outside the clone so RocksDB's C++ build (15-20 min on 2 cores) happens once.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/deflect/target
CARGO ?= cargo

.PHONY: setup build demo test lint rules bench fuzz

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --workspace

demo: setup
	$(CARGO) run --release -p deflect -- demo

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

test: lint rules
	$(CARGO) build --release --workspace --bins   # the kill test runs the real binary
	$(CARGO) test --release --workspace

rules: setup
	cd deploy/prometheus && promtool check rules deflect-rules.yml && promtool test rules deflect-rules.test.yml

bench: setup
	$(CARGO) bench -p deflect-benches --bench engine
	$(CARGO) bench -p deflect-benches --bench pipeline

# Fuzz the decoders with libFuzzer (cargo install cargo-fuzz; RUSTC_BOOTSTRAP lets a stable compiler
# take the sanitizer flags). FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 60
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for t in decode_protobuf decode_json decode_auto; do \
	  RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$(HOME)/.cache/deflect/fuzz-target $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done
