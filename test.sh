#!/usr/bin/env bash
# Sets up what the tests need on a fresh Debian/Ubuntu machine, builds everything, and runs every
# test. Run as root (sudo ./test.sh) so the end-to-end tests can create their unprivileged test
# user and start Xvfb; without root they are skipped with a printed reason (with CI=true they
# fail instead).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/deps.sh test
cargo build --workspace --locked
cargo test --workspace --locked -- --test-threads=4 "$@"
# The packages: build, validate, install, use as an ordinary user, remove (needs root; skipped
# with a printed reason otherwise, and when test names were given).
if [ $# -eq 0 ]; then
  bash packaging/test.sh
fi
