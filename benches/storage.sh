#!/bin/bash
# Storage benchmark for encrypted profiles (issue 3).
#
# Part 1, the filesystem: Doppel keeps an encrypted profile in a sparse ext4 image
# (mkfs.ext4 -O encrypt) on a loop device, its data in a directory with an fscrypt v2 policy
# (AES-256-XTS contents, AES-256-CTS names, PAD_32), as helper/src/daemon/volume.rs
# sets it up. For two backing stores, an image on the real disk and an image in RAM, the script
# makes one such filesystem and in it three places to compare:
#   plain/     no encryption
#   fscrypt/   the same v2 policy as Doppel's, set here with a few lines of Python (ioctls)
#   gocryptfs  a gocryptfs mount whose cipher directory is on the same filesystem
# and times in each: a sequential write and a cold sequential read of 1 GiB, creating 20,000
# files of 1 KiB (then sync), a cold `find` over them (names only, then with a stat of every
# entry), a cold open + close of all of them (no read) and a cold read of all of them. "Cold"
# means `sync; echo 3 > drop_caches` first.
#
# Part 2, unlock and lock: a private system bus with the real polkitd (as
# tests/tests/common/sysbus.rs does) and the real doppel-helper; the unprivileged user
# doppel-bench creates an encrypted profile and times `doppel unlock` and `doppel lock`, and
# `doppel unlock` with a wrong passphrase, which runs the KDF of both keyslots and stops before
# the helper.
#
# Run as root: `sudo bash benches/storage.sh`. It takes about 10-15 minutes on 2 cores.
# Hyperfine's JSON and the Markdown table go to target/bench/storage/. Environment knobs:
# RUNS_SEQ (default 3) runs of each 1 GiB test, RUNS_SMALL (5) runs of each small-file test,
# RUNS_UNLOCK (10), SEQ_MB (1024), NFILES (20000), IMG_SIZE (3G), DISK_DIR (/var/tmp),
# RAM_DIR (/dev/shm), SKIP_UNLOCK=1 (part 1 only), SKIP_FS=1 (part 2 only).
set -euo pipefail

RUNS_SEQ=${RUNS_SEQ:-3}
RUNS_SMALL=${RUNS_SMALL:-5}
RUNS_UNLOCK=${RUNS_UNLOCK:-10}
SEQ_MB=${SEQ_MB:-1024}
NFILES=${NFILES:-20000}
IMG_SIZE=${IMG_SIZE:-3G}
DISK_DIR=${DISK_DIR:-/var/tmp}
RAM_DIR=${RAM_DIR:-/dev/shm}
SKIP_UNLOCK=${SKIP_UNLOCK:-0}
SKIP_FS=${SKIP_FS:-0}
BUSER=doppel-bench
PROFILE=b
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$REPO/target/bench/storage
POLKITD=/usr/lib/polkit-1/polkitd
RULES=/etc/polkit-1/rules.d/49-doppel-bench-storage.rules
ACTIONS=/usr/share/polkit-1/actions/org.doppel.policy
SYS_PATH=/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "storage.sh: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }
[ "$(id -u)" = 0 ] || die "run as root (sudo bash benches/storage.sh): it mounts filesystems"

# --- Tools ---------------------------------------------------------------------------------------
missing=()
for t in gocryptfs:gocryptfs hyperfine:hyperfine mkfs.ext4:e2fsprogs lsattr:e2fsprogs \
         losetup:util-linux setpriv:util-linux dbus-daemon:dbus-daemon dbus-send:dbus-bin \
         pkcheck:polkitd python3:python3; do
  command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
[ -x "$POLKITD" ] || missing+=(polkitd)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing: ${missing[*]}"
  apt-get install -y "${missing[@]}" >&2
fi
# The interpreter itself, not a shim (pyenv's is a shell script that adds ~50 ms to each run).
PY=$(python3 -c 'import sys; print(sys.executable)')

# --- State, and cleaning it up ---------------------------------------------------------------------
T=$(mktemp -d /tmp/doppel-storage-bench.XXXXXX)
chmod 0755 "$T"
mkdir -p "$T/json" "$T/bin" "$T/share/doppel"
MOUNTS=()      # mounted directories, unmounted in reverse order
LOOPS=()       # loop devices we attached
IMAGES=()      # image files we made
PIDS=()        # daemons we started (killed in reverse order)
RULES_WRITTEN=0
ACTIONS_WRITTEN=0
PROFILE_MADE=0
cleanup() {
  set +e
  if [ "$PROFILE_MADE" = 1 ]; then
    run_as "$DOPPEL" lock "$PROFILE" >/dev/null 2>&1
    run_as "$DOPPEL" delete "$PROFILE" --yes >/dev/null 2>&1 ||
      echo "storage.sh: could not delete the bench profile $PROFILE of $BUSER" >&2
    rmdir "/var/lib/doppel/$BUID" "/run/doppel/$BUID" 2>/dev/null
  fi
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[i]}" 2>/dev/null && wait "${PIDS[i]}" 2>/dev/null
  done
  [ "$RULES_WRITTEN" = 1 ] && rm -f "$RULES"
  [ "$ACTIONS_WRITTEN" = 1 ] && rm -f "$ACTIONS"
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    if mountpoint -q "${MOUNTS[i]}"; then
      umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}"
    fi
  done
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
  for f in "${IMAGES[@]}"; do rm -f "$f"; done
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

DROP='sync; echo 3 > /proc/sys/vm/drop_caches'

# --- The machine -----------------------------------------------------------------------------------
# The AES-XTS implementation fscrypt gets: the xts(aes) entry of highest priority.
XTS_DRIVER=$(awk -F' *: *' '
  $1 == "name" { name = $2 } $1 == "driver" { drv = $2 }
  $1 == "priority" && name == "xts(aes)" && $2 + 0 > best { best = $2 + 0; pick = drv }
  END { print pick }' /proc/crypto)
CPU_AES=no
grep -qw aes /proc/cpuinfo && CPU_AES=yes
say "xts(aes) driver: ${XTS_DRIVER:-none}; CPU has AES instructions: $CPU_AES"

# hyperfine as root, one command; the JSON lands in $T/json/<name>.json.
hf() {
  local name=$1 runs=$2 prep=$3 cmd=$4
  hyperfine --style basic -w 0 -r "$runs" --prepare "$prep" \
    --export-json "$T/json/$name.json" -n "$name" "$cmd" >&2
}

# =====================================================================================================
# Part 1: plain vs fscrypt vs gocryptfs, on disk and in RAM
# =====================================================================================================

# Sets a v2 policy on a new directory (as the helper does): adds a random 64-byte key to the
# filesystem's keyring, mkdir, FS_IOC_SET_ENCRYPTION_POLICY; checks the policy reads back.
cat >"$T/fscrypt.py" <<'PY'
import fcntl, os, struct, sys
FS_IOC_ADD_ENCRYPTION_KEY = 0xc0506617     # _IOWR('f', 23, struct fscrypt_add_key_arg) (80 bytes)
FS_IOC_SET_ENCRYPTION_POLICY = 0x800c6613  # _IOR('f', 19, struct fscrypt_policy_v1)
FS_IOC_GET_ENCRYPTION_POLICY_EX = 0xc0096616
KEY_SPEC_TYPE_IDENTIFIER, AES_256_XTS, AES_256_CTS, PAD_32 = 2, 1, 4, 3
mnt, path = sys.argv[1], sys.argv[2]
# struct fscrypt_add_key_arg: key_spec {u32 type, u32 reserved, u8 u[32]}, u32 raw_size,
# u32 key_id, u32 reserved[8], then the raw key.
arg = bytearray(struct.pack('=II32sII32x', KEY_SPEC_TYPE_IDENTIFIER, 0, b'', 64, 0) + os.urandom(64))
fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
fcntl.ioctl(fd, FS_IOC_ADD_ENCRYPTION_KEY, arg, True)
ident = bytes(arg[8:24])
os.mkdir(path, 0o755)
d = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
# struct fscrypt_policy_v2: u8 version, contents, filenames, flags, u8 reserved[4], u8 id[16].
fcntl.ioctl(d, FS_IOC_SET_ENCRYPTION_POLICY, struct.pack('=BBBB4x16s', 2, AES_256_XTS, AES_256_CTS, PAD_32, ident))
got = bytearray(struct.pack('=Q', 24) + bytes(24))
fcntl.ioctl(d, FS_IOC_GET_ENCRYPTION_POLICY_EX, got, True)
v, c, n, f = struct.unpack('=BBBB', got[8:12])
assert (v, c, n, f) == (2, AES_256_XTS, AES_256_CTS, PAD_32) and bytes(got[16:32]) == ident, got
print(ident.hex())
PY

# Creates N files of 1 KiB (1,000 per subdirectory), then syncs.
cat >"$T/mkfiles.py" <<'PY'
import os, sys
top, n = sys.argv[1], int(sys.argv[2])
data = os.urandom(1024)
os.mkdir(top)
for i in range(n):
    if i % 1000 == 0:
        sub = os.path.join(top, 'd%03d' % (i // 1000))
        os.mkdir(sub)
    fd = os.open(os.path.join(sub, 'f%05d' % i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, data)
    os.close(fd)
os.sync()
PY

# Opens and closes every file below a directory without reading it: in an fscrypt directory,
# that sets up each file's key (a per-file key derived from the master key) but decrypts nothing.
cat >"$T/openall.py" <<'PY'
import os, sys
def walk(d):
    for e in os.scandir(d):
        if e.is_dir(follow_symlinks=False):
            walk(e.path)
        else:
            os.close(os.open(e.path, os.O_RDONLY))
walk(sys.argv[1])
PY

# bench_dir BACKING METHOD DIR: the five measurements in DIR.
bench_dir() {
  local b=$1 m=$2 d=$3 k="$1-$2"
  say "$b / $m: sequential write and cold read, $SEQ_MB MiB, $RUNS_SEQ runs each"
  hf "$k-seqwrite" "$RUNS_SEQ" "rm -f $d/seq; $DROP" \
    "dd if=/dev/zero of=$d/seq bs=1M count=$SEQ_MB conv=fsync status=none"
  [ "$(stat -c %s "$d/seq")" = $((SEQ_MB << 20)) ] || die "$d/seq has the wrong size"
  hf "$k-seqread" "$RUNS_SEQ" "$DROP" "dd if=$d/seq of=/dev/null bs=1M status=none"
  rm -f "$d/seq"
  say "$b / $m: $NFILES small files, $RUNS_SMALL runs each"
  hf "$k-create" "$RUNS_SMALL" "rm -rf $d/small; $DROP" "$PY $T/mkfiles.py $d/small $NFILES"
  local n
  n=$(find "$d/small" -type f | wc -l)
  [ "$n" = "$NFILES" ] || die "$d/small holds $n files, not $NFILES"
  hf "$k-find" "$RUNS_SMALL" "$DROP" "find $d/small > /dev/null"
  hf "$k-findstat" "$RUNS_SMALL" "$DROP" "find $d/small -printf '%s %T@\n' > /dev/null"
  hf "$k-openall" "$RUNS_SMALL" "$DROP" "$PY $T/openall.py $d/small"
  hf "$k-readall" "$RUNS_SMALL" "$DROP" "find $d/small -type f -exec cat {} + > /dev/null"
  rm -rf "$d/small"
  sync
}

# bench_backing NAME DIR: one image in DIR, three places in it, all measured.
bench_backing() {
  local b=$1 dir=$2
  local img=$dir/doppel-storage-bench-$b.img mnt=$T/mnt-$b gmnt=$T/gocryptfs-$b
  say "$b: $IMG_SIZE sparse image in $dir"
  rm -f "$img"
  IMAGES+=("$img")
  truncate -s "$IMG_SIZE" "$img"
  # As the helper formats (-O encrypt -m 0), plus eager inode-table and journal init, so that
  # ext4lazyinit does not write in the background while we measure.
  mkfs.ext4 -q -F -O encrypt -m 0 -E lazy_itable_init=0,lazy_journal_init=0 "$img"
  local dev
  dev=$(losetup --find --show "$img")
  LOOPS+=("$dev")
  mkdir -p "$mnt" "$gmnt"
  mount -t ext4 -o nosuid,nodev,errors=remount-ro "$dev" "$mnt"
  MOUNTS+=("$mnt")
  mkdir "$mnt/plain"
  "$PY" "$T/fscrypt.py" "$mnt" "$mnt/fscrypt" >/dev/null
  lsattr -d "$mnt/fscrypt" | cut -d' ' -f1 | grep -q E || die "$mnt/fscrypt is not encrypted"
  if lsattr -d "$mnt/plain" | cut -d' ' -f1 | grep -q E; then die "$mnt/plain is encrypted"; fi
  mkdir "$mnt/gocryptfs.cipher"
  head -c 24 /dev/urandom | base64 >"$T/gocryptfs.pass"
  gocryptfs -q -nosyslog -init -passfile "$T/gocryptfs.pass" "$mnt/gocryptfs.cipher" >/dev/null
  # In the foreground, backgrounded here: we know its pid and can wait for it after unmounting
  # (until it exits it holds files of the filesystem below open).
  gocryptfs -q -fg -nosyslog -passfile "$T/gocryptfs.pass" "$mnt/gocryptfs.cipher" "$gmnt" \
    </dev/null >&2 &
  local gpid=$!
  PIDS+=("$gpid")
  MOUNTS+=("$gmnt")
  for _ in $(seq 200); do mountpoint -q "$gmnt" && break; sleep 0.05; done
  mountpoint -q "$gmnt" || die "gocryptfs did not mount $gmnt"
  echo "$dev" >"$T/$b.loop"
  bench_dir "$b" plain "$mnt/plain"
  bench_dir "$b" fscrypt "$mnt/fscrypt"
  bench_dir "$b" gocryptfs "$gmnt"
  umount "$gmnt"
  wait "$gpid" || true
  umount "$mnt"
  losetup -d "$dev"
  rm -f "$img"
}

if [ "$SKIP_FS" != 1 ]; then
  GOCRYPTFS_VERSION=$(gocryptfs -version | head -1)
  GOCRYPTFS_CIPHER=$(gocryptfs -speed 2>/dev/null | awk '/AES-GCM.*selected/ { print $1 }')
  bench_backing disk "$DISK_DIR"
  bench_backing ram "$RAM_DIR"
fi

# =====================================================================================================
# Part 2: doppel unlock / lock through the real helper, polkit and a private system bus
# =====================================================================================================
if [ "$SKIP_UNLOCK" != 1 ]; then
  for b in doppel doppel-helper; do
    [ -x "$REPO/target/release/$b" ] && continue
    say "building the release binaries"
    (cd "$REPO" && cargo build --release --workspace) >&2
    break
  done
  id "$BUSER" >/dev/null 2>&1 || useradd -m -s /bin/bash "$BUSER"
  BUID=$(id -u "$BUSER")
  BGID=$(id -g "$BUSER")
  UHOME=$(getent passwd "$BUSER" | cut -d: -f6)
  RT=/run/user/$BUID
  mkdir -p "$RT"
  chown "$BUID:$BGID" "$RT"
  chmod 0700 "$RT"
  # What the user runs, world-readable (the checkout may not be).
  cp "$REPO/target/release/doppel" "$T/bin/doppel"
  cp -r "$REPO/profiles" "$T/share/doppel/profiles"
  chown "$BUID:$BGID" "$T/json"
  chmod -R a+rX "$T"
  DOPPEL=$T/bin/doppel

  # The private system bus, configured as sysbus.rs does: default-deny, polkit's policy from
  # /usr/share/dbus-1/system.d and a copy of the project's.
  SB=$T/sysbus
  mkdir -p "$SB/system.d"
  cp "$REPO/packaging/dbus/org.doppel.Helper1.conf" "$SB/system.d/"
  cat >"$SB/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$SB/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
  <includedir>$SB/system.d</includedir>
</busconfig>
EOF
  env -i PATH="$SYS_PATH" dbus-daemon --config-file="$SB/bus.conf" --nofork \
    --print-address=3 3>"$SB/address" 2>"$SB/dbus-daemon.log" </dev/null &
  PIDS+=($!)
  for _ in $(seq 200); do [ -s "$SB/address" ] && break; sleep 0.05; done
  [ -s "$SB/address" ] || die "the private system bus did not start: $(cat "$SB/dbus-daemon.log")"
  ADDR=$(head -1 "$SB/address")
  ! grep -q "$SB/system.d" "$SB/dbus-daemon.log" || die "dbus-daemon rejected the project's policy"
  owner() {
    dbus-send --bus="$ADDR" --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
      org.freedesktop.DBus.NameHasOwner "string:$1" 2>/dev/null | grep -q 'boolean true'
  }
  wait_owner() {
    for _ in $(seq 400); do owner "$1" && return 0; sleep 0.05; done
    die "$1 did not appear on the private bus: $2"
  }
  # polkit's actions and a rule allowing the bench user every org.doppel.* action.
  if ! cmp -s "$REPO/packaging/polkit/org.doppel.policy" "$ACTIONS"; then
    [ -e "$ACTIONS" ] || ACTIONS_WRITTEN=1
    install -m 0644 "$REPO/packaging/polkit/org.doppel.policy" "$ACTIONS.bench.tmp"
    mv "$ACTIONS.bench.tmp" "$ACTIONS"
  fi
  env -i PATH="$SYS_PATH" DBUS_SYSTEM_BUS_ADDRESS="$ADDR" "$POLKITD" --no-debug \
    >"$SB/polkitd.log" 2>&1 </dev/null &
  PIDS+=($!)
  wait_owner org.freedesktop.PolicyKit1 "$(cat "$SB/polkitd.log")"
  RULES_WRITTEN=1
  cat >"$RULES.tmp" <<EOF
// Written by Doppel's benches/storage.sh; removed when it ends.
polkit.addRule(function(action, subject) {
    if (action.id.indexOf("org.doppel.") == 0 && subject.user == "$BUSER") {
        return polkit.Result.YES;
    }
});
EOF
  chmod 0644 "$RULES.tmp"
  mv "$RULES.tmp" "$RULES"
  AS_USER=(setpriv --reuid "$BUID" --regid "$BGID" --init-groups env -i
    HOME="$UHOME" USER="$BUSER" LOGNAME="$BUSER" LANG=C.UTF-8
    PATH=/usr/local/bin:/usr/bin:/bin XDG_RUNTIME_DIR="$RT" XDG_DATA_DIRS="$T/share:/usr/share"
    DBUS_SYSTEM_BUS_ADDRESS="$ADDR")
  run_as() { (cd "$UHOME" && "${AS_USER[@]}" "$@"); }
  allowed=0
  for _ in $(seq 100); do
    # shellcheck disable=SC2016
    if run_as sh -c 'exec pkcheck --action-id org.doppel.status --process $$' >/dev/null 2>&1; then
      allowed=1; break
    fi
    sleep 0.1
  done
  [ "$allowed" = 1 ] || die "polkitd did not load $RULES: $(cat "$SB/polkitd.log")"
  env -i PATH="$SYS_PATH" DBUS_SYSTEM_BUS_ADDRESS="$ADDR" "$REPO/target/release/doppel-helper" \
    --address "$ADDR" --idle-timeout 600 >"$SB/helper.log" 2>&1 </dev/null &
  PIDS+=($!)
  wait_owner org.doppel.Helper1 "$(cat "$SB/helper.log")"

  # The profile: encrypted, 256 MiB, created fresh.
  printf 'correct horse battery staple, bench\n' >"$T/pass"
  printf 'not the passphrase\n' >"$T/wrong"
  chmod 0644 "$T/pass" "$T/wrong"
  run_as "$DOPPEL" delete "$PROFILE" --yes >/dev/null 2>&1 || true
  say "creating the encrypted profile $PROFILE of $BUSER (KDF calibration included)"
  PROFILE_MADE=1
  run_as "$DOPPEL" create "$PROFILE" --app sh --encrypt --size 256M --passphrase-fd 0 \
    <"$T/pass" >/dev/null 2>"$T/create.err" ||
    { cat "$T/create.err" >&2; die "could not create the encrypted profile"; }
  SLOT=$UHOME/.local/share/doppel/profiles/$PROFILE/keys/passphrase.toml
  KDF_PARAMS=$(awk -F' *= *' '/^(m_cost_kib|t_cost|p_cost)/ { printf "%s%s=%s", sep, $1, $2; sep=", " }' "$SLOT")
  VOL=/run/doppel/$BUID/$PROFILE
  # Checks: the passphrase opens it, a wrong one does not, lock really unmounts.
  run_as "$DOPPEL" unlock "$PROFILE" --passphrase-fd 0 <"$T/pass" >&2
  mountpoint -q "$VOL" || die "unlock did not mount $VOL"
  run_as test -d "$VOL/data/home" || die "$VOL/data/home is not there for $BUSER"
  run_as "$DOPPEL" lock "$PROFILE" >&2
  ! mountpoint -q "$VOL" || die "lock left $VOL mounted"
  if run_as "$DOPPEL" unlock "$PROFILE" --passphrase-fd 0 <"$T/wrong" 2>"$T/wrong.err"; then
    die "a wrong passphrase unlocked the profile"
  fi
  grep -q wrong "$T/wrong.err" || die "unexpected error for a wrong passphrase: $(cat "$T/wrong.err")"

  say "doppel unlock / lock, $RUNS_UNLOCK runs each"
  UHF=(hyperfine --style basic -w 1 -r "$RUNS_UNLOCK")
  run_as "${UHF[@]}" --export-json "$T/json/unlock.json" \
    --prepare "$DOPPEL lock $PROFILE" \
    -n unlock "$DOPPEL unlock $PROFILE --passphrase-fd 0 < $T/pass" >&2
  mountpoint -q "$VOL" || die "the unlock runs left $VOL unmounted"
  run_as "${UHF[@]}" --export-json "$T/json/lock.json" \
    --prepare "$DOPPEL unlock $PROFILE --passphrase-fd 0 < $T/pass" \
    -n lock "$DOPPEL lock $PROFILE" >&2
  ! mountpoint -q "$VOL" || die "the lock runs left $VOL mounted"
  run_as "${UHF[@]}" -i --export-json "$T/json/unlock-wrong.json" \
    --prepare "$DOPPEL lock $PROFILE" \
    -n unlock-wrong "$DOPPEL unlock $PROFILE --passphrase-fd 0 < $T/wrong" >&2
  ! mountpoint -q "$VOL" || die "a wrong passphrase mounted $VOL"
fi

# =====================================================================================================
# Results
# =====================================================================================================
mkdir -p "$OUT"
cp "$T"/json/*.json "$OUT/" 2>/dev/null || true
"$PY" - "$OUT" "$SEQ_MB" "$NFILES" "${XTS_DRIVER:-none}" "$CPU_AES" "$SKIP_FS" "$SKIP_UNLOCK" \
  "${GOCRYPTFS_VERSION:-}" "${GOCRYPTFS_CIPHER:-}" "${KDF_PARAMS:-}" <<'PY' | tee "$OUT/storage.md"
import json, os, sys
out, seq_mb, nfiles, xts, cpu_aes, skip_fs, skip_unlock, gcv, gcc, kdf = sys.argv[1:11]
seq_mb, nfiles = int(seq_mb), int(nfiles)
def med(name):
    return json.load(open(f'{out}/{name}.json'))['results'][0]['median']
accel = not any(s in xts for s in ('generic', 'fixed-time')) and xts != 'none'
print(f'xts(aes) driver (highest priority in /proc/crypto): `{xts}`'
      f'{" (accelerated)" if accel else " (generic C, no AES-NI)"}; CPU has AES instructions: {cpu_aes}.')
if skip_fs != '1':
    print(f'gocryptfs: {gcv}; its cipher: {gcc or "?"} (Go, userspace, uses the CPU\'s AES instructions).')
    print()
    print(f'| Backing | Method | Seq. write {seq_mb} MiB (MiB/s) | Seq. read, cold (MiB/s) '
          f'| Create {nfiles:,} × 1 KiB + sync (s) | Cold `find` (s) | Cold `find` + stat (s) '
          f'| Cold open + close of all, no read (s) | Cold read of all (s) |')
    print('|---|---|---:|---:|---:|---:|---:|---:|---:|')
    m = {}
    for b in ('disk', 'ram'):
        for meth in ('plain', 'fscrypt', 'gocryptfs'):
            k = f'{b}-{meth}'
            r = {t: med(f'{k}-{t}') for t in ('seqwrite', 'seqread', 'create', 'find', 'findstat', 'openall', 'readall')}
            m[k] = r
            print(f"| {b} | {meth} | {seq_mb / r['seqwrite']:.0f} | {seq_mb / r['seqread']:.0f} "
                  f"| {r['create']:.2f} | {r['find']:.3f} | {r['findstat']:.3f} | {r['openall']:.2f} "
                  f"| {r['readall']:.2f} |")
    print()
    def verdict(x, target, judged=True):
        if not judged:
            return f'≥ {target} where AES-XTS is accelerated: cannot be judged here'
        return f'≥ {target}: **{"met" if x >= target else "not met"}**'
    print('| Ratio (higher is better for fscrypt) | Disk | RAM | Target |')
    print('|---|---:|---:|---|')
    rows = [
        ('Seq. write throughput, fscrypt / plain', 'seqwrite', 'plain', 'seq'),
        ('Seq. read throughput, fscrypt / plain', 'seqread', 'plain', 'seq'),
        ('Small-file create, gocryptfs time / fscrypt time', 'create', 'gocryptfs', 'meta'),
        ('Cold `find`, gocryptfs time / fscrypt time', 'find', 'gocryptfs', 'meta'),
        ('Cold `find` + stat, gocryptfs time / fscrypt time', 'findstat', 'gocryptfs', 'meta'),
        ('Cold read of all small files, gocryptfs time / fscrypt time', 'readall', 'gocryptfs', None),
    ]
    for label, t, other, kind in rows:
        # fscrypt's throughput over plain's = time(plain) / time(fscrypt); its speed-up over
        # gocryptfs = time(gocryptfs) / time(fscrypt): the same division.
        vals = [m[f'{b}-{other}'][t] / m[f'{b}-fscrypt'][t] for b in ('disk', 'ram')]
        if kind == 'seq':
            v = verdict(min(vals), 0.9, accel)
        elif kind == 'meta':
            v = verdict(min(vals), 3)
        else:
            v = '–'
        print(f'| {label} | {vals[0]:.2f} | {vals[1]:.2f} | {v} |')
if skip_unlock != '1':
    def res(name):
        return json.load(open(f'{out}/{name}.json'))['results'][0]
    u, l, w = res('unlock'), res('lock'), res('unlock-wrong')
    kdf1 = w['median'] / 2
    def row(label, r):
        print(f"| {label} | {r['median'] * 1000:.0f} | {r['min'] * 1000:.0f}–{r['max'] * 1000:.0f} |")
    print()
    print(f'Keyslot KDF: Argon2id {kdf} (calibrated at `doppel create` for about 0.5 s).')
    print()
    print('| Unlock / lock, end to end (`doppel` as an ordinary user) | Median (ms) | Range (ms) |')
    print('|---|---:|---:|')
    row('`doppel unlock` (right passphrase: one KDF, unwrap, helper)', u)
    row('`doppel unlock`, wrong passphrase (both slots\' KDF, no helper)', w)
    print(f'| one KDF ≈ wrong / 2 | {kdf1 * 1000:.0f} | |')
    print(f"| the rest of an unlock ≈ unlock − wrong / 2 (start-up, unwrap, D-Bus, polkit, loop, "
          f"mount, add key) | {(u['median'] - kdf1) * 1000:.0f} | |")
    row('`doppel lock` (D-Bus, polkit, unmount, remove key, loop detach)', l)
PY
say "hyperfine JSON and the table: $OUT/"
