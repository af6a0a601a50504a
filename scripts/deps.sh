#!/usr/bin/env bash
# Installs the system packages Doppel needs, when they are missing.
#   scripts/deps.sh run    build + runtime dependencies
#   scripts/deps.sh test   the above + what the end-to-end tests and benchmarks drive
# Debian/Ubuntu (apt). Elsewhere it prints the list for your package manager.
set -euo pipefail

want=(pkg-config libgtk-4-dev libadwaita-1-dev passt dbus e2fsprogs)
if [ "${1:-run}" = test ]; then
  want+=(xvfb xauth xdotool x11-utils imagemagick desktop-file-utils telegram-desktop chromium firefox-esr dino-im hexchat pidgin python3 util-linux procps man-db groff-base zsh fish
         appstream systemd libxml2-utils shellcheck apparmor
         hyperfine bubblewrap gdb xdg-utils rpm dpkg-dev e2fsprogs polkitd dbus-bin dbus-daemon libglib2.0-bin xdg-dbus-proxy)
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo is missing: install a stable Rust toolchain (https://rustup.rs, or your" \
       "distribution's rustc + cargo packages), then run this again" >&2
  exit 1
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "deps: not a Debian/Ubuntu system; install the equivalents of: ${want[*]}" >&2
  exit 0
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "deps: missing packages, and no sudo to install them as root: ${missing[*]}" >&2
    exit 1
  fi
fi
echo "deps: installing ${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
