#!/usr/bin/env bash
# The newcomer's first command: installs what dbsnap needs, builds it, and
# runs `dbsnap demo` (a throwaway local PostgreSQL with a sample platform of
# two databases; snapshot, list, verify; then clean up). Extra arguments go
# to `dbsnap demo` (e.g. --keep).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh --demo >/dev/null
cargo build --release --locked -p dbsnap
exec ./target/release/dbsnap demo "$@"
