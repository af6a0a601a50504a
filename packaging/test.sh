#!/usr/bin/env bash
# The packaging tests (part of ./test.sh when run as root):
#   1. packaging/check.sh: desktop entry, AppStream metainfo, systemd unit, bus policy, polkit
#      actions, maintainer scripts;
#   2. builds the .deb and .rpm (packaging/build.sh); checks the .rpm's files and dependencies
#      (rpm -qlp/-qRp), the .deb's files, and the Arch PKGBUILD's package() against the .deb;
#   3. installs the .deb with apt-get, runs the installed-system test (tests/tests/installed.rs)
#      as an ordinary user against a system bus that activates the installed helper;
#   4. apt-get remove: no packaged file may remain but the conffile; apt-get purge: nothing.
# Needs root. It installs and removes the package `doppel`, so it refuses to run where doppel is
# already installed from elsewhere (a person's real install).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "packaging-test: $*" >&2; }
fail() {
  say "FAILED: $*"
  exit 1
}

if [ "$(id -u)" -ne 0 ]; then
  if [ "${CI:-}" = true ]; then fail "needs root"; fi
  say "SKIPPED: needs root (sudo) to install and remove the package"
  exit 0
fi
if dpkg-query -W -f='${Status}' doppel 2>/dev/null | grep -q "install ok installed"; then
  if [ "${CI:-}" = true ]; then fail "doppel is already installed on this machine"; fi
  say "SKIPPED: doppel is installed on this machine; this test would replace and remove it"
  exit 0
fi

bash packaging/check.sh
bash packaging/build.sh

deb=$(ls -t target/packaging/doppel_*_amd64.deb | head -1)
rpm=$(ls -t target/packaging/doppel-*.x86_64.rpm | head -1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# What every package must carry (path as installed on Debian/Fedora).
expected=(
  /usr/bin/doppel /usr/bin/doppel-gui /usr/libexec/doppel-helper /usr/libexec/doppel-bus-proxy
  /usr/share/dbus-1/system.d/org.doppel.Helper1.conf
  /usr/share/dbus-1/system-services/org.doppel.Helper1.service
  /usr/share/polkit-1/actions/org.doppel.policy
  /usr/lib/systemd/system/doppel-helper.service
  /etc/doppel/helper.toml
  /usr/share/applications/org.doppel.Doppel.desktop
  /usr/share/metainfo/org.doppel.Doppel.metainfo.xml
  /usr/share/icons/hicolor/scalable/apps/org.doppel.Doppel.svg
  /usr/share/doppel/profiles/generic.toml /usr/share/doppel/profiles/telegram-desktop.toml
  /usr/share/man/man1/doppel.1.gz /usr/share/man/man1/doppel-run.1.gz
  /usr/share/man/man1/doppel-gui.1.gz /usr/share/man/man8/doppel-helper.8.gz
  /usr/share/bash-completion/completions/doppel
  /usr/share/fish/vendor_completions.d/doppel.fish
)
recipes=$(ls profiles/*.toml | wc -l)

say "checking the .deb's files ($deb)"
dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's|^\.||' | grep -v '/$' | sort >"$work/deb.files"
for f in "${expected[@]}" /usr/share/zsh/vendor-completions/_doppel /usr/share/doppel/apparmor/doppel; do
  grep -qx "$f" "$work/deb.files" || fail "the .deb lacks $f"
done
[ "$(grep -c '^/usr/share/doppel/profiles/' "$work/deb.files")" -eq "$recipes" ] ||
  fail "the .deb does not carry all $recipes recipes"
dpkg-deb -f "$deb" Depends | tee "$work/deb.depends" >&2
for d in passt e2fsprogs dbus polkitd libgtk-4-1 libadwaita-1-0; do
  grep -q "$d" "$work/deb.depends" || fail "the .deb does not depend on $d"
done
dpkg-deb -e "$deb" "$work/control"
grep -qx /etc/doppel/helper.toml "$work/control/conffiles" || fail "helper.toml is not a conffile"

say "checking the .rpm's files and dependencies ($rpm)"
rpm -qlp "$rpm" 2>/dev/null | sort >"$work/rpm.files"
for f in "${expected[@]}" /usr/share/zsh/site-functions/_doppel /usr/share/licenses/doppel/LICENSE; do
  grep -qx "$f" "$work/rpm.files" || fail "the .rpm lacks $f"
done
[ "$(grep -c '^/usr/share/doppel/profiles/' "$work/rpm.files")" -eq "$recipes" ] ||
  fail "the .rpm does not carry all $recipes recipes"
rpm -qRp "$rpm" 2>/dev/null | tee "$work/rpm.requires" >&2
for d in passt e2fsprogs polkit dbus gtk4 libadwaita; do
  grep -q "^$d" "$work/rpm.requires" || fail "the .rpm does not require $d"
done
rpm -qp --configfiles "$rpm" 2>/dev/null | grep -qx /etc/doppel/helper.toml ||
  fail "helper.toml is not a config file in the .rpm"
# The same files as the .deb, once Fedora's places are mapped back (zsh's site-functions, the
# licence; Debian's copyright file and the AppArmor profile are Debian's own).
sed -e 's|/usr/share/zsh/site-functions/|/usr/share/zsh/vendor-completions/|' \
  -e '\|^/usr/share/licenses/|d' "$work/rpm.files" | sort >"$work/rpm.mapped"
grep -v -e '^/usr/share/doc/doppel/copyright$' -e '^/usr/share/doppel/apparmor/' \
  "$work/deb.files" >"$work/deb.for-rpm"
if ! diff -u "$work/deb.for-rpm" "$work/rpm.mapped" >&2; then
  fail "the .rpm installs other files than the .deb (diff above)"
fi

say "checking the Arch PKGBUILD's package() against the .deb"
bash -n packaging/arch/PKGBUILD
mkdir -p "$work/arch/src" "$work/arch/pkg"
ln -s "$PWD" "$work/arch/src/doppel-$(sed -n 's/^pkgver=//p' packaging/arch/PKGBUILD)"
(
  # shellcheck disable=SC1091
  source packaging/arch/PKGBUILD
  srcdir="$work/arch/src" pkgdir="$work/arch/pkg"
  export srcdir pkgdir
  # package() reads the generated pages uncompressed, as makepkg's build() leaves them.
  mkdir -p "$work/arch/gen"
  cp -r target/packaging/gen/. "$work/arch/gen/"
  find "$work/arch/gen/man" -name '*.gz' -exec gunzip -f {} +
  # Arch compresses man pages itself (makepkg's zipman); the list is compared without .gz.
  sed "s|local gen=target/packaging/gen|local gen=$work/arch/gen|" packaging/arch/PKGBUILD >"$work/PKGBUILD"
  # shellcheck disable=SC1091
  source "$work/PKGBUILD"
  # makepkg runs package() in $srcdir.
  cd "$srcdir"
  package
)
(cd "$work/arch/pkg" && find . -type f | sed 's|^\.||' | sort) >"$work/arch.files"
# The same files, once the Arch paths are mapped back: /usr/lib/doppel → /usr/libexec,
# zsh's site-functions → vendor-completions, licences, uncompressed man pages.
sed -e 's|^/usr/lib/doppel/|/usr/libexec/|' \
  -e 's|/usr/share/zsh/site-functions/|/usr/share/zsh/vendor-completions/|' \
  -e 's|\(/usr/share/man/.*\)$|\1.gz|' \
  -e '\|^/usr/share/licenses/|d' "$work/arch.files" | sort >"$work/arch.mapped"
grep -v '^/usr/share/doc/doppel/\(copyright\|changelog\)' "$work/deb.files" >"$work/deb.cmp"
if ! diff -u "$work/deb.cmp" "$work/arch.mapped" >&2; then
  fail "the PKGBUILD installs other files than the .deb (diff above)"
fi
grep -q 'ExecStart=/usr/lib/doppel/doppel-helper' "$work/arch/pkg/usr/lib/systemd/system/doppel-helper.service" ||
  fail "the Arch unit does not point at /usr/lib/doppel/doppel-helper"

say "installing $deb"
# From here on a failure must not leave the package installed (the next run would refuse to
# start, and this machine would keep a test build of Doppel).
trap 'DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq doppel >/dev/null 2>&1; rm -rf "$work"' EXIT
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$deb" >&2
cargo test -p doppel-e2e --test installed --locked -- --ignored --nocapture

say "removing the package"
DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq doppel >&2
left=()
while read -r f; do
  [ "$f" = /etc/doppel/helper.toml ] && continue
  [ -e "$f" ] && left+=("$f")
done <"$work/deb.files"
[ ${#left[@]} -eq 0 ] || fail "apt-get remove left packaged files: ${left[*]}"
[ -e /etc/doppel/helper.toml ] || fail "apt-get remove took the conffile (only purge may)"
[ -e /etc/apparmor.d/doppel ] && fail "apt-get remove left /etc/apparmor.d/doppel"
DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq doppel >&2
trap 'rm -rf "$work"' EXIT
[ -e /etc/doppel ] && fail "apt-get purge left /etc/doppel"
say "ok: the packages build, install, work for an ordinary user, and leave nothing behind"
