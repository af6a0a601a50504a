#!/usr/bin/env bash
# Sets up what Doppel needs on a fresh Debian/Ubuntu machine, builds it, and runs it.
#   ./run.sh                  `doppel doctor`: what this system can do, and how to fix the rest
#   ./run.sh gui              the window (doppel-gui)
#   ./run.sh apps             any other doppel command line
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/deps.sh run
cargo build --release --locked --workspace
[ $# -eq 0 ] && set -- doctor
if [ "$1" = gui ]; then
  shift
  exec target/release/doppel-gui "$@"
fi
exec target/release/doppel "$@"
