#!/usr/bin/env bash
# Builds Doppel's distribution packages from this checkout:
#   bash packaging/build.sh            .deb and .rpm into target/packaging/
#   bash packaging/build.sh deb        only the .deb
#   bash packaging/build.sh rpm        only the .rpm
# Release binaries, the man pages and completions (packaging/gen), then cargo-deb and
# cargo-generate-rpm with the metadata in core/Cargo.toml. Installs cargo-deb and
# cargo-generate-rpm (from crates.io) and dpkg-dev when missing. The Arch package is built by
# packaging/arch/PKGBUILD from a source tarball instead.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
case "$what" in all | deb | rpm) ;; *)
  echo "usage: bash packaging/build.sh [deb|rpm]" >&2
  exit 2
  ;;
esac

out=target/packaging
gen="$out/gen"

# The packaging tools, pinned: a package build must not change because crates.io did.
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

need_cargo_tool() { # <command> <crate> <version>
  if ! "$1" --version 2>/dev/null | grep -qF "$3"; then
    cargo install --locked "$2" --version "$3"
  fi
}

if [ "$what" != rpm ] && ! command -v dpkg-shlibdeps >/dev/null 2>&1; then
  # cargo-deb reads the binaries' library dependencies with dpkg-shlibdeps.
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpkg-dev >/dev/null
  else
    echo "build: dpkg-shlibdeps is missing: install dpkg-dev (sudo apt install dpkg-dev)" >&2
    exit 1
  fi
fi

# Reproducible: the man pages' date and the packages' timestamps come from the last commit.
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH

echo "build: release binaries" >&2
cargo build --release --locked -p doppel-core -p doppel-gui -p doppel-helper

echo "build: man pages and completions" >&2
rm -rf "$gen"
cargo run --release --locked -q -p doppel-gen -- "$gen"
# Debian policy and Fedora both ship man pages gzipped (-n: no name or time inside).
find "$gen/man" -type f -name '*.[18]' -exec gzip -9nf {} +

mkdir -p "$out"
if [ "$what" != rpm ]; then
  need_cargo_tool cargo-deb cargo-deb "$CARGO_DEB_VERSION"
  echo "build: .deb" >&2
  cargo deb -p doppel-core --no-build --locked -o "$out/"
fi
if [ "$what" != deb ]; then
  need_cargo_tool cargo-generate-rpm cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"
  echo "build: .rpm" >&2
  cargo generate-rpm -p core -o "$out/"
fi
ls -1 "$out"/*.deb "$out"/*.rpm 2>/dev/null || true
