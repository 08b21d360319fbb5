#!/usr/bin/env bash
# The test command (README, CI): installs what the tests need, checks
# formatting, lints and unused dependencies (cargo machete), then runs every test against real PostgreSQL 15
# and 18 servers started by the tests themselves.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh >/dev/null

cargo fmt --all --check
cargo machete
cargo clippy --workspace --all-targets --locked -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
