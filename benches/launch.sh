#!/bin/bash
# Launch benchmark: how long `doppel run` takes to start and finish /bin/true, next to bwrap
# (and bwrap + pasta + xdg-dbus-proxy composed by hand) giving the same sandbox, and how much
# memory a running instance's helper processes take beside the app.
#
# Run as root from anywhere: `sudo bash benches/launch.sh`. Everything measured runs as the
# unprivileged user doppel-bench (created if missing). Hyperfine's JSON and the Markdown table
# go to target/bench/. Environment knobs: RUNS (default 40), WARMUP (default 5), HOST_PROCS
# (default 0): that many idle `sleep` processes are started first, to give the host the process
# count of a desktop session (a few hundred) instead of a bare CI machine's.
set -euo pipefail

RUNS=${RUNS:-40}
WARMUP=${WARMUP:-5}
HOST_PROCS=${HOST_PROCS:-0}
BUSER=doppel-bench
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$REPO/target/bench
[ "${HOST_PROCS:-0}" -gt 0 ] && OUT=$OUT/host-procs-$HOST_PROCS

die() { echo "launch.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (sudo bash benches/launch.sh): it creates a test user"

# --- Tools ---------------------------------------------------------------------------------
missing=()
for t in hyperfine:hyperfine bwrap:bubblewrap pasta:passt xdg-dbus-proxy:xdg-dbus-proxy \
         dbus-daemon:dbus setpriv:util-linux python3:python3; do
  command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  apt-get install -y "${missing[@]}" >&2
fi

if [ ! -x "$REPO/target/release/doppel" ]; then
  (cd "$REPO" && cargo build --release -p doppel-core) >&2
fi

# --- The test user ---------------------------------------------------------------------------
id "$BUSER" >/dev/null 2>&1 || useradd -m -s /bin/bash "$BUSER"
BUID=$(id -u "$BUSER")
BGID=$(id -g "$BUSER")
UHOME=$(getent passwd "$BUSER" | cut -d: -f6)
RT=/run/user/$BUID
mkdir -p "$RT"
chown "$BUID:$BGID" "$RT"
chmod 0700 "$RT"
if [ -e /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
  chmod 0666 /dev/net/tun
fi

# --- A world-readable copy of what the user runs ----------------------------------------------
T=$(mktemp -d /tmp/doppel-bench.XXXXXX)
DBUS_PID=
FILLER=()
cleanup() {
  if [ ${#FILLER[@]} -gt 0 ]; then kill "${FILLER[@]}" 2>/dev/null || true; fi
  if [ -n "$DBUS_PID" ]; then kill "$DBUS_PID" 2>/dev/null; wait "$DBUS_PID" 2>/dev/null || true; fi
  rm -rf "$T"
  rm -rf "$RT/bench-compose"
  rm -f "$RT/bench-bus"
}
trap cleanup EXIT
chmod 0755 "$T"
mkdir -p "$T/bin" "$T/share/doppel" "$T/json"
cp "$REPO/target/release/doppel" "$T/bin/doppel"
cp -r "$REPO/profiles" "$T/share/doppel/profiles"
chown "$BUID:$BGID" "$T/json"
chmod -R a+rX "$T"
DOPPEL=$T/bin/doppel

# Runs a command as the test user, from its home, with a clean environment. Background jobs
# use "${AS_USER[@]}" directly (a backgrounded function would leave a forked shell in $!).
cd "$UHOME"
AS_USER=(setpriv --reuid "$BUID" --regid "$BGID" --init-groups env -i
  HOME="$UHOME" USER="$BUSER" LOGNAME="$BUSER" LANG=C.UTF-8
  PATH=/usr/local/bin:/usr/bin:/bin XDG_RUNTIME_DIR="$RT" XDG_DATA_DIRS="$T/share:/usr/share")
run_as() { "${AS_USER[@]}" "$@"; }

# The profile: a fresh one each run, for `sh` (the generic recipe: display, audio, gpu,
# notifications, tray and portals; with no display or sound here only the bus rules matter).
run_as "$DOPPEL" delete bench --yes >/dev/null 2>&1 || true
run_as "$DOPPEL" create bench --app sh >/dev/null 2>"$T/create.err" ||
  { cat "$T/create.err" >&2; die "could not create the profile"; }
PHOME=$UHOME/.local/share/doppel/profiles/bench/home
run_as mkdir -p "$PHOME"

# --- The hand-composed stack -------------------------------------------------------------------
# pasta cannot reliably join a bwrap 0.8 sandbox from outside. With --userns-block-fd (we map
# the user, pasta connects, then bwrap goes on) bwrap's own --unshare-net set-up of lo fails,
# because pasta has raised lo already (the kernel then adds 127.0.0.1 itself and bwrap's
# RTM_NEWADDR gets EEXIST). Without it, --dev makes bwrap move the app into a nested user
# namespace right after start, which pasta's attach races. So the composition is the one pasta
# documents: pasta creates the user and network namespaces, connects them, then runs bwrap
# inside (which maps the user back to itself with --uid/--gid). Same mounts as Doppel's plan
# for this profile; bwrap gets no seccomp filter (Doppel installs its deny-list).
CD=$RT/bench-compose
RESOLV=$(readlink -f /etc/resolv.conf)
run_as sh -c "rm -rf '$CD' && mkdir -p '$CD' && mkfifo '$CD/proxy-ready' &&
              printf 'nameserver 169.254.1.1\n' >'$CD/resolv.conf'"
BWRAP_MOUNTS="--ro-bind / / --bind /proc /proc --dev /dev --perms 01777 --tmpfs /dev/shm \
--perms 01777 --tmpfs /tmp --perms 01777 --tmpfs /var/tmp --perms 0700 --tmpfs $RT \
--bind $PHOME $UHOME --cap-drop ALL --new-session"
BWRAP_NONE="bwrap --unshare-user --unshare-ipc --unshare-net $BWRAP_MOUNTS"
PASTA="pasta --config-net --quiet --no-map-gw -t none -u none -T none -U none \
--dns-forward 169.254.1.1"
BWRAP_IN_PASTA="bwrap --unshare-user --unshare-ipc --uid $BUID --gid $BGID $BWRAP_MOUNTS \
--ro-bind $CD/resolv.conf $RESOLV"
COMPOSE_NET="$PASTA -- $BWRAP_IN_PASTA"

# With a session bus: the proxy first, waited for on its --fd (as Flatpak does), then the
# sandbox; when it ends, closing our end of the pipe makes the proxy exit, and we wait for it.
# pasta closes inherited descriptors, so the pipe cannot go on to bwrap's --sync-fd.
cat >"$T/compose-bus.sh" <<EOF
#!/bin/bash
# xdg-dbus-proxy + pasta + bwrap, composed by hand. usage: compose-bus.sh CMD [ARG...]
xdg-dbus-proxy "\$DBUS_SESSION_BUS_ADDRESS" "$CD/bus" --filter --talk=org.a11y.Bus \\
  --talk=org.freedesktop.Notifications --talk=org.kde.StatusNotifierWatcher \\
  '--talk=org.freedesktop.portal.*' --fd=5 5>"$CD/proxy-ready" &
proxy=\$!
exec 6<"$CD/proxy-ready"
read -r -N 1 -u 6 || { echo "compose-bus: xdg-dbus-proxy did not start" >&2; exit 1; }
$COMPOSE_NET --bind $CD/bus $RT/bus \\
  --setenv DBUS_SESSION_BUS_ADDRESS unix:path=$RT/bus -- "\$@"
rc=\$?
exec 6<&-
wait \$proxy
exit \$rc
EOF
chmod 0755 "$T/compose-bus.sh"

# A private session bus, away from \$XDG_RUNTIME_DIR/bus so runs without the variable have none.
BUS=unix:path=$RT/bench-bus
rm -f "$RT/bench-bus"
"${AS_USER[@]}" dbus-daemon --session --address="$BUS" --nofork --nopidfile &
DBUS_PID=$!
for _ in $(seq 100); do [ -S "$RT/bench-bus" ] && break; sleep 0.05; done
[ -S "$RT/bench-bus" ] || die "the private session bus did not start"

# --- Check that every variant really builds the sandbox it claims --------------------------------
NET_CHECK='grep -q eth0 /proc/net/dev && grep -q 169.254.1.1 /etc/resolv.conf && test -w /tmp'
BUS_CHECK='dbus-send --session --dest=org.freedesktop.DBus --print-reply / org.freedesktop.DBus.GetId >/dev/null'
check() { run_as "$@" >/dev/null 2>"$T/check.err" || { cat "$T/check.err" >&2; die "check failed: ${*: -1}"; }; }
check "$DOPPEL" run bench --network none -- sh -c '! grep -q eth0 /proc/net/dev && test -w /tmp'
check $BWRAP_NONE -- sh -c '! grep -q eth0 /proc/net/dev && test -w /tmp'
check "$DOPPEL" run bench --network isolated -- sh -c "$NET_CHECK"
check $COMPOSE_NET -- sh -c "$NET_CHECK && test \$(id -u) = $BUID"
check env DBUS_SESSION_BUS_ADDRESS="$BUS" "$DOPPEL" run bench --network isolated -- \
  sh -c "$NET_CHECK && $BUS_CHECK"
check env DBUS_SESSION_BUS_ADDRESS="$BUS" "$T/compose-bus.sh" sh -c "$NET_CHECK && $BUS_CHECK"

# --- Timing ----------------------------------------------------------------------------------
for ((i = 0; i < HOST_PROCS; i++)); do sleep 3600 & FILLER+=($!); done
[ "$HOST_PROCS" -gt 0 ] && sleep 2  # let them all start before timing
NPROC=$(find /proc -maxdepth 1 -name '[0-9]*' | wc -l)
echo "== $NPROC processes on the host" >&2
HF=(hyperfine -N -w "$WARMUP" -r "$RUNS" --style basic)
echo "== launch times without a session bus" >&2
run_as "${HF[@]}" --export-json "$T/json/launch-net.json" \
  -n true /bin/true \
  -n doppel-none "$DOPPEL run bench --network none -- /bin/true" \
  -n bwrap-none "$BWRAP_NONE -- /bin/true" \
  -n doppel-isolated "$DOPPEL run bench --network isolated -- /bin/true" \
  -n pasta-bwrap "$COMPOSE_NET -- /bin/true" >&2
echo "== launch times with a session bus" >&2
run_as env DBUS_SESSION_BUS_ADDRESS="$BUS" "${HF[@]}" --export-json "$T/json/launch-bus.json" \
  -n doppel-isolated-bus "$DOPPEL run bench --network isolated -- /bin/true" \
  -n proxy-pasta-bwrap "$T/compose-bus.sh /bin/true" \
  -n bash-startup "bash -c :" >&2

# --- Memory: what a running instance keeps beside the app ----------------------------------------
# Every process below the launcher except the app (`sleep`): Doppel's monitor, pasta and
# xdg-dbus-proxy; for the composed stack the wrapper shell, pasta, bwrap and xdg-dbus-proxy.
mem() {
  local name=$1; shift
  "${AS_USER[@]}" DBUS_SESSION_BUS_ADDRESS="$BUS" "$@" sleep 30 &
  local top=$!
  python3 - "$top" "$name" "$T/json/mem-$name.json" <<'PY'
import json, os, sys, time
top, name, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def table():
    t = {}
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        try:
            s = open(f'/proc/{p}/stat').read()
        except OSError:
            continue
        comm = s[s.index('(') + 1:s.rindex(')')]
        ppid = int(s[s.rindex(')') + 2:].split()[1])
        t[int(p)] = (ppid, comm)
    return t
def tree(t):
    found, stack = [], [top]
    while stack:
        p = stack.pop()
        found.append(p)
        stack += [c for c, (pp, _) in t.items() if pp == p]
    return found
deadline = time.time() + 10
while time.time() < deadline:
    t = table()
    if any(t[p][1] == 'sleep' for p in tree(t) if p in t):
        break
    time.sleep(0.05)
else:
    sys.exit(f'{name}: the app did not start')
time.sleep(1)  # let the helpers settle
t = table()
procs, app = [], None
for p in tree(t):
    if p not in t:
        continue
    if t[p][1] == 'sleep':
        app = p
        continue
    f = {}
    for line in open(f'/proc/{p}/smaps_rollup'):
        k, _, v = line.partition(':')
        if v.strip().endswith('kB'):
            f[k] = int(v.split()[0])
    uss = f.get('Private_Clean', 0) + f.get('Private_Dirty', 0)
    procs.append({'pid': p, 'comm': t[p][1], 'rss_kb': f.get('Rss', 0),
                  'pss_kb': f.get('Pss', 0), 'uss_kb': uss})
json.dump({'name': name, 'app_pid': app, 'processes': procs}, open(out, 'w'), indent=1)
os.kill(app, 15)  # ending the app ends the instance
PY
  wait "$top" || true
}
echo "== memory beside a running app" >&2
mem doppel "$DOPPEL" run bench --network isolated --
mem composed "$T/compose-bus.sh"

# --- Results ----------------------------------------------------------------------------------
mkdir -p "$OUT"
cp "$T"/json/*.json "$OUT/"
python3 - "$OUT" "$NPROC" <<'PY' | tee "$OUT/launch.md"
import json, sys
out, nproc = sys.argv[1], sys.argv[2]
print(f'Host processes during the run: {nproc}.')
print()
med = {}
for f in ('launch-net.json', 'launch-bus.json'):
    for r in json.load(open(f'{out}/{f}'))['results']:
        med[r['command']] = r['median'] * 1000
mem = {n: json.load(open(f'{out}/mem-{n}.json')) for n in ('doppel', 'composed')}
def ok(r, target):
    return 'met' if r <= target else f'not met ({(r / target - 1) * 100:.1f} % over)'
rows = [
    ('`/bin/true`, no sandbox', 'true'),
    ('`doppel run --network none`', 'doppel-none'),
    ('`bwrap`, same namespaces and mounts', 'bwrap-none'),
    ('`doppel run --network isolated`', 'doppel-isolated'),
    ('`pasta -- bwrap` (hand-composed)', 'pasta-bwrap'),
    ('`doppel run --network isolated`, with session bus (proxy)', 'doppel-isolated-bus'),
    ('xdg-dbus-proxy + `pasta -- bwrap` (hand-composed, bash wrapper)', 'proxy-pasta-bwrap'),
    ('`bash -c :` (the wrapper\'s own start-up, for reference)', 'bash-startup'),
]
print('| Launch of `/bin/true` | Median (ms) |')
print('|---|---:|')
for label, k in rows:
    print(f'| {label} | {med[k]:.1f} |')
print()
r_none = med['doppel-none'] / med['bwrap-none']
r_net = med['doppel-isolated'] / med['pasta-bwrap']
r_bus = med['doppel-isolated-bus'] / med['proxy-pasta-bwrap']
print('| Comparison | Value | Target | |')
print('|---|---:|---:|---|')
print(f'| doppel / bwrap, `--network none` | {r_none:.2f} | ≤ 1.2 | {ok(r_none, 1.2)} |')
print(f'| pasta\'s cost in doppel (isolated − none) | {med["doppel-isolated"] - med["doppel-none"]:.1f} ms | – | |')
print(f'| pasta\'s cost by hand (pasta+bwrap − bwrap) | {med["pasta-bwrap"] - med["bwrap-none"]:.1f} ms | – | |')
print(f'| doppel / pasta+bwrap, `--network isolated` | {r_net:.2f} | – | |')
print(f'| doppel / proxy+pasta+bwrap, isolated + bus | {r_bus:.2f} | ≤ 1.2 | {ok(r_bus, 1.2)} |')
print()
print('| Memory beside a running app | Processes | RSS (MiB) | PSS (MiB) | USS (MiB) |')
print('|---|---|---:|---:|---:|')
tot = {}
for n, label in (('doppel', 'Doppel (isolated + bus)'), ('composed', 'Hand-composed stack')):
    ps = mem[n]['processes']
    s = {k: sum(p[k] for p in ps) / 1024 for k in ('rss_kb', 'pss_kb', 'uss_kb')}
    tot[n] = s
    names = ', '.join(f"{p['comm']} {p['pss_kb'] / 1024:.1f}" for p in ps)
    print(f"| {label} | {names} (PSS) | {s['rss_kb']:.1f} | {s['pss_kb']:.1f} | {s['uss_kb']:.1f} |")
print(f"| Doppel / hand-composed | | {tot['doppel']['rss_kb'] / tot['composed']['rss_kb']:.2f} "
      f"| {tot['doppel']['pss_kb'] / tot['composed']['pss_kb']:.2f} "
      f"| {tot['doppel']['uss_kb'] / tot['composed']['uss_kb']:.2f} |")
PY
echo "hyperfine JSON and the table: $OUT/" >&2
