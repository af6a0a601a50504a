#!/usr/bin/env bash
# Fuzzes the session-bus proxy's message handling for a while (default 60 s):
#   bash scripts/fuzz.sh [SECONDS]
# Needs a nightly Rust toolchain (rustup toolchain install nightly) and cargo-fuzz, which it
# installs when missing. Crashes are saved under core/fuzz/artifacts/ and make it fail.
set -euo pipefail
cd "$(dirname "$0")/../core/fuzz"
secs="${1:-60}"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain (rustup toolchain install nightly); not fuzzing" >&2
  exit 0
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
cp corpus/bus_message/* "$corpus/"
cargo +nightly fuzz run bus_message "$corpus" -- -max_total_time="$secs" -rss_limit_mb=2048
