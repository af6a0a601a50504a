#!/usr/bin/env bash
# Validates the packaging files without installing them:
#   - the .desktop entry (desktop-file-validate: errors and warnings fail, hints are shown)
#   - the AppStream metainfo (appstreamcli validate --no-net: errors and warnings fail)
#   - the helper's systemd unit (systemd-analyze verify, on a copy whose ExecStart exists; any
#     message fails), its exposure score (systemd-analyze security --offline, at most
#     $MAX_EXPOSURE), and that it has no setting that would give the helper its own mount
#     namespace (which would hide every volume it mounts from the user)
#   - the system bus policy (a private dbus-daemon must start with it included) and the bus
#     activation file's agreement with the unit
#   - the polkit actions (well-formed XML, valid against polkit's DTD when it is installed)
#   - the maintainer scripts (sh -n, shellcheck -s sh)
#   - the AppArmor profile (apparmor_parser; where AppArmor 4 is absent, as on Debian 12, a copy
#     without the two AppArmor 4 lines is parsed and those lines are checked by text)
# Usage: packaging/check.sh   (the tools: `scripts/deps.sh test` installs them)
# Prints one line per check and "packaging: N passed, N failed"; exits 1 if any check failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MAX_EXPOSURE=${MAX_EXPOSURE:-40} # systemd-analyze's 0-100 scale: 40 is "4.0" in its table

tmp=$(mktemp -d)
bus_pid=""
cleanup() {
  if [ -n "$bus_pid" ]; then kill "$bus_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

passed=0
failed=()
indent() { sed 's/^/     /'; }
ok() { echo "ok   $1"; passed=$((passed + 1)); }
fail() {
  echo "FAIL $1" >&2
  [ $# -lt 2 ] || printf '%s\n' "$2" | indent >&2
  failed+=("$1")
}
# have TOOL WHAT: true if TOOL is installed; otherwise records WHAT as failed.
have() {
  if command -v "$1" >/dev/null 2>&1; then return 0; fi
  fail "$2" "$1 is not installed (scripts/deps.sh test installs it)"
  return 1
}

check_desktop() {
  local what="desktop entry org.doppel.Doppel.desktop (desktop-file-validate)" out rc=0
  have desktop-file-validate "$what" || return 0
  out=$(desktop-file-validate "$here/org.doppel.Doppel.desktop" 2>&1) || rc=$?
  if [ "$rc" -ne 0 ] || grep -qE ': (error|warning): ' <<<"$out"; then
    fail "$what" "$out"
  else
    ok "$what"
    [ -z "$out" ] || indent <<<"$out"
  fi
}

check_metainfo() {
  local what="AppStream metainfo (appstreamcli validate --no-net)" f out rc=0
  f="$here/org.doppel.Doppel.metainfo.xml"
  have appstreamcli "$what" || return 0
  out=$(appstreamcli validate --no-net "$f" 2>&1) || rc=$?
  if [ "$rc" -ne 0 ] || grep -qE '^[EW]: ' <<<"$out"; then
    fail "$what" "$out"
  elif ! grep -q '<launchable type="desktop-id">org.doppel.Doppel.desktop</launchable>' "$f"; then
    fail "$what" "the launchable is not org.doppel.Doppel.desktop"
  else
    ok "$what"
  fi
  # Screenshots are linked to this repository's packaging/screenshots/: they must be there.
  local shot missing=""
  what="AppStream screenshots are in packaging/screenshots/"
  while IFS= read -r shot; do
    [ -f "$here/screenshots/$shot" ] || missing+="$shot "
  done < <(grep -oE 'packaging/screenshots/[A-Za-z0-9._-]+[.]png' "$f" | sed 's|^packaging/screenshots/||')
  if [ -n "$missing" ]; then fail "$what" "missing: $missing"; else ok "$what"; fi
}

check_unit() {
  local unit="$here/systemd/doppel-helper.service" what out rc=0 line key val bad=""
  what="systemd unit doppel-helper.service (systemd-analyze verify)"
  have systemd-analyze "$what" || return 0
  # ExecStart names the installed helper; verify insists that it exists. Check a copy that
  # points at a stand-in, under the same unit name.
  mkdir -p "$tmp/unit"
  printf '#!/bin/sh\nexit 0\n' >"$tmp/unit/doppel-helper"
  chmod 755 "$tmp/unit/doppel-helper"
  sed "s|^ExecStart=/usr/libexec/doppel-helper\$|ExecStart=$tmp/unit/doppel-helper|" \
    "$unit" >"$tmp/unit/doppel-helper.service"
  if ! grep -q "^ExecStart=$tmp/unit/doppel-helper\$" "$tmp/unit/doppel-helper.service"; then
    fail "$what" "no line ExecStart=/usr/libexec/doppel-helper"
    return 0
  fi
  # verify reports unknown keys and bad values but still exits 0: any message is a failure.
  out=$(systemd-analyze verify "$tmp/unit/doppel-helper.service" 2>&1) || rc=$?
  if [ "$rc" -ne 0 ] || [ -n "$out" ]; then fail "$what" "$out"; else ok "$what"; fi

  what="systemd unit exposure (systemd-analyze security --offline, at most $MAX_EXPOSURE/100)"
  rc=0
  out=$(systemd-analyze security --offline=yes --threshold="$MAX_EXPOSURE" --no-pager \
    "$tmp/unit/doppel-helper.service" 2>&1) || rc=$?
  if [ "$rc" -ne 0 ]; then
    fail "$what" "$(grep -E 'Overall exposure|rror' <<<"$out" || echo "$out")"
  else
    ok "$what: $(grep -o 'Overall exposure level.*' <<<"$out" || true)"
  fi

  # The helper's mounts must reach the host: nothing may give the service a mount namespace
  # (systemd.exec(5), PrivateMounts= and MountFlags=; see the unit's own comment).
  what="systemd unit has no mount namespace (its mounts must reach the host)"
  while IFS= read -r line; do
    key=${line%%=*}
    val=${line#*=}
    case "$key" in
      ProtectSystem | ProtectHome | PrivateTmp | PrivateDevices | ProtectKernelTunables | \
        ProtectKernelModules | ProtectKernelLogs | ProtectControlGroups | PrivateIPC | \
        MountAPIVFS | PrivatePIDs | PrivateBPF)
        case "$val" in no | false | off | 0) ;; *) bad+="$line"$'\n' ;; esac ;;
      ProtectProc) [ "$val" = default ] || bad+="$line"$'\n' ;;
      ProcSubset) [ "$val" = all ] || bad+="$line"$'\n' ;;
      MountFlags) [ "$val" = shared ] || bad+="$line"$'\n' ;;
      ReadWritePaths | ReadOnlyPaths | InaccessiblePaths | ExecPaths | NoExecPaths | BindPaths | \
        BindReadOnlyPaths | TemporaryFileSystem | RootDirectory | RootImage | MountImages | \
        ExtensionImages | ExtensionDirectories | LogNamespace | IPCNamespacePath | \
        RuntimeDirectory)
        [ -z "$val" ] || bad+="$line"$'\n' ;;
    esac
  done < <(grep -E '^[A-Za-z]+=' "$unit")
  if ! grep -qx 'PrivateMounts=no' "$unit"; then
    # systemd >= 254 turns PrivateNetwork= into PrivateMounts=yes unless it is set to no.
    bad+="PrivateMounts=no is missing"$'\n'
  fi
  if [ -n "$bad" ]; then fail "$what" "${bad%$'\n'}"; else ok "$what"; fi
}

check_dbus() {
  local what="system bus policy dbus/org.doppel.Helper1.conf (dbus-daemon loads it)"
  local conf="$here/dbus/org.doppel.Helper1.conf" svc="$here/dbus/org.doppel.Helper1.service"
  if have dbus-daemon "$what"; then
    cat >"$tmp/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path=$tmp/bus.socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="false"/>
  </policy>
  <include>$conf</include>
</busconfig>
EOF
    # A policy the daemon cannot parse stops it before it prints its address.
    dbus-daemon --config-file="$tmp/bus.conf" --nofork --print-address=1 \
      >"$tmp/bus.address" 2>"$tmp/bus.err" &
    bus_pid=$!
    for _ in $(seq 100); do
      if [ -s "$tmp/bus.address" ] || ! kill -0 "$bus_pid" 2>/dev/null; then break; fi
      sleep 0.1
    done
    if [ -s "$tmp/bus.address" ]; then
      ok "$what"
    else
      fail "$what" "$(cat "$tmp/bus.err")"
    fi
    kill "$bus_pid" 2>/dev/null || true
    wait "$bus_pid" 2>/dev/null || true
    bus_pid=""
  fi

  what="bus activation file dbus/org.doppel.Helper1.service matches the unit"
  if grep -qx 'Name=org.doppel.Helper1' "$svc" &&
    grep -qx 'SystemdService=doppel-helper.service' "$svc" &&
    grep -qx 'Exec=/usr/libexec/doppel-helper' "$svc" &&
    grep -qx 'BusName=org.doppel.Helper1' "$here/systemd/doppel-helper.service" &&
    grep -qx 'ExecStart=/usr/libexec/doppel-helper' "$here/systemd/doppel-helper.service"; then
    ok "$what"
  else
    fail "$what" "Name=, SystemdService= and Exec= must match the unit's BusName=, name and ExecStart="
  fi
}

check_polkit() {
  local what="polkit actions polkit/org.doppel.policy (xmllint)" dtd out rc=0
  have xmllint "$what" || return 0
  dtd=/usr/share/polkit-1/policyconfig-1.dtd
  if [ -r "$dtd" ]; then
    what="polkit actions polkit/org.doppel.policy (xmllint, valid against $dtd)"
    out=$(xmllint --noout --dtdvalid "$dtd" "$here/polkit/org.doppel.policy" 2>&1) || rc=$?
  else
    out=$(xmllint --noout "$here/polkit/org.doppel.policy" 2>&1) || rc=$?
  fi
  if [ "$rc" -ne 0 ] || [ -n "$out" ]; then fail "$what" "$out"; else ok "$what"; fi
}

check_scripts() {
  local f what out rc
  for f in prerm postinst postrm; do
    what="maintainer script debian/$f (sh -n, shellcheck)"
    if [ "$(head -n1 "$here/debian/$f")" != "#!/bin/sh" ]; then
      fail "$what" "the first line must be #!/bin/sh"
      continue
    fi
    rc=0
    out=$(sh -n "$here/debian/$f" 2>&1) || rc=$?
    if [ "$rc" -ne 0 ]; then
      fail "$what" "$out"
      continue
    fi
    have shellcheck "$what" || continue
    rc=0
    out=$(shellcheck -s sh "$here/debian/$f" 2>&1) || rc=$?
    if [ "$rc" -ne 0 ]; then fail "$what" "$out"; else ok "$what"; fi
  done
}

check_apparmor() {
  local f="$here/apparmor/doppel" what="AppArmor profile apparmor/doppel (apparmor_parser)" out rc=0
  if ! grep -qx 'abi <abi/4.0>,' "$f" || ! grep -qx '  userns,' "$f" ||
    ! grep -q '^profile doppel /usr/bin/doppel flags=(unconfined) {$' "$f"; then
    fail "$what" "it must declare abi <abi/4.0>, profile doppel /usr/bin/doppel and userns"
    return 0
  fi
  have apparmor_parser "$what" || return 0
  if [ -e /etc/apparmor.d/abi/4.0 ]; then
    out=$(apparmor_parser --skip-kernel-load --skip-cache --skip-read-cache "$f" 2>&1) || rc=$?
  else
    # AppArmor 3 (Debian 12) knows neither abi 4.0 nor userns: parse the rest.
    what="AppArmor profile apparmor/doppel (apparmor_parser $(apparmor_parser --version |
      head -n1 | grep -o '[0-9.]*$'), without its AppArmor 4 lines)"
    sed -e 's|^abi <abi/4.0>,$|abi <abi/3.0>,|' -e '/^  userns,$/d' "$f" >"$tmp/doppel.aa3"
    out=$(apparmor_parser --skip-kernel-load --skip-cache --skip-read-cache "$tmp/doppel.aa3" 2>&1) ||
      rc=$?
  fi
  # The parser notes that a container has no AppArmor kernel interface; that is not an error.
  out=$(grep -v '^Cache read/write disabled' <<<"$out" || true)
  if [ "$rc" -ne 0 ] || [ -n "$out" ]; then fail "$what" "$out"; else ok "$what"; fi
}

check_desktop
check_metainfo
check_unit
check_dbus
check_polkit
check_scripts
check_apparmor

echo "packaging: $passed passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
