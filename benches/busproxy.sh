#!/bin/bash
# Session-bus proxy benchmark (issue 5): round-trip latency and throughput of small method calls
# through doppel-bus-proxy, against a direct connection and against xdg-dbus-proxy, in one run;
# and each proxy's memory (RSS, PSS) and CPU time per call.
#
# usage: bash benches/busproxy.sh        (no root needed; as root it runs the same way)
#   ROUNDS=21 LAT_CALLS=2000 BUS_CALLS=2000 TPUT_CALLS=10000 WINDOW=32 bash benches/busproxy.sh
#
# A private dbus-daemon, a service (core/examples/bus_bench.rs `serve`: org.doppel.Bench,
# Echo(s) -> s) and both proxies with the same rule (--talk=org.doppel.Bench) run for the whole
# benchmark. Each round visits the three paths (in an order rotated per round, to spread the
# host's noise evenly) and runs, on a fresh client connection each:
#   - latency: LAT_CALLS calls of Echo("hello"), one after another (median and p99 in µs);
#   - bus latency: BUS_CALLS calls of org.freedesktop.DBus.GetId (the bus answers itself);
#   - throughput: TPUT_CALLS calls of Echo, then of GetId, with WINDOW outstanding at a time
#     (calls/s), and the CPU time the proxy and dbus-daemon spent over each run (all threads,
#     from /proc/PID/task/*/schedstat).
# After each round, each proxy's RSS, PSS, USS and anonymous memory (/proc/PID/smaps_rollup),
# idle and with one client connected. Figures are medians over rounds. Results:
# target/bench/busproxy.{jsonl,md}. `bus_bench parse - --calls 200000` times, without any
# socket, the per-message parse doppel-bus-proxy does (see BENCHMARKS.md). SETUP_ONLY=1 starts
# the bus, the service and both proxies, prints their addresses and pids for profiling by hand,
# and stops on Enter.
set -euo pipefail

ROUNDS=${ROUNDS:-21}
LAT_CALLS=${LAT_CALLS:-2000}
BUS_CALLS=${BUS_CALLS:-2000}
TPUT_CALLS=${TPUT_CALLS:-10000}
WINDOW=${WINDOW:-32}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$REPO/target/bench
PROXY=$REPO/target/release/doppel-bus-proxy
BENCH=$REPO/target/release/examples/bus_bench

die() { echo "busproxy.sh: $*" >&2; exit 1; }

# --- Tools -----------------------------------------------------------------------------------
missing=()
for t in dbus-daemon:dbus-daemon dbus-send:dbus-bin xdg-dbus-proxy:xdg-dbus-proxy python3:python3; do
  command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
[ ${#missing[@]} -eq 0 ] || die "missing tools; install them with: sudo apt-get install ${missing[*]}"
if [ ! -x "$PROXY" ] || [ ! -x "$BENCH" ]; then
  echo "building doppel-bus-proxy and the bus_bench example (release)" >&2
  (cd "$REPO" && cargo build --release -p doppel-core --bins --examples) >&2
fi

BUILT="doppel-bus-proxy built $(date -u -r "$PROXY" '+%F %T UTC'), checkout $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)"

# --- The bus, the service and the proxies ----------------------------------------------------
T=$(mktemp -d /tmp/doppel-busproxy.XXXXXX)
PIDS=()
CLIENT_PID=
cleanup() {
  exec 7<&- 8<&-
  if [ -n "$CLIENT_PID" ]; then kill "$CLIENT_PID" 2>/dev/null || true; fi
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT

BUS=unix:path=$T/bus
dbus-daemon --session --address="$BUS" --nofork --nopidfile 2>"$T/dbus.err" &
DAEMON_PID=$!
PIDS+=($!)
for _ in $(seq 100); do [ -S "$T/bus" ] && break; sleep 0.05; done
[ -S "$T/bus" ] || { cat "$T/dbus.err" >&2; die "the private bus did not start"; }

# zbus pipelines NEGOTIATE_UNIX_FD with BEGIN and Hello, which xdg-dbus-proxy 0.1.4 cannot
# parse (flatpak/xdg-dbus-proxy#21); with FLATPAK_ID set, zbus waits for each answer instead.
# It only changes the handshake, which is outside every timing; every path gets it.
export FLATPAK_ID=org.doppel.Bench

mkfifo "$T/service.out"
"$BENCH" serve "$BUS" >"$T/service.out" &
PIDS+=($!)
read -r -t 10 line <"$T/service.out" && [ "$line" = ready ] || die "the bench service did not start"

# Each proxy signals readiness on --fd (as Flatpak waits for xdg-dbus-proxy) and exits when the
# reader of that pipe goes, which cleanup does; we keep the read ends open on fds 7 and 8.
mkfifo "$T/doppel.ready" "$T/xdg.ready"
"$PROXY" "$BUS" "$T/doppel.sock" --talk=org.doppel.Bench --fd=3 3>"$T/doppel.ready" &
DOPPEL_PID=$!
PIDS+=($!)
exec 7<"$T/doppel.ready"
read -r -N 1 -t 10 -u 7 || die "doppel-bus-proxy did not start"
xdg-dbus-proxy "$BUS" "$T/xdg.sock" --filter --talk=org.doppel.Bench --fd=3 3>"$T/xdg.ready" &
XDG_PID=$!
PIDS+=($!)
exec 8<"$T/xdg.ready"
read -r -N 1 -t 10 -u 8 || die "xdg-dbus-proxy did not start"

declare -A ADDR=([direct]=$BUS [doppel]=unix:path=$T/doppel.sock [xdg]=unix:path=$T/xdg.sock)
declare -A PID=([doppel]=$DOPPEL_PID [xdg]=$XDG_PID)
PATHS=(direct doppel xdg)

# --- Checks: each path answers, and both proxies filter -------------------------------------
for p in "${PATHS[@]}"; do
  "$BENCH" latency "${ADDR[$p]}" --calls 1 --warmup 0 >/dev/null || die "$p: Echo failed"
done
# One extra connection on the bus, which no filtering proxy may list.
coproc SPARE { exec "$BENCH" hold "$BUS"; }
CLIENT_PID=$SPARE_PID  # saved: bash unsets SPARE_PID when it reaps the coprocess
read -r line <&"${SPARE[0]}"
uniques() {
  DBUS_SESSION_BUS_ADDRESS=$1 dbus-send --session --print-reply --dest=org.freedesktop.DBus \
    /org/freedesktop/DBus org.freedesktop.DBus.ListNames | grep -c '":1\.' || true
}
[ "$(uniques "$BUS")" -ge 4 ] || die "direct: expected the service, both proxies and a client listed"
for p in doppel xdg; do
  n=$(uniques "${ADDR[$p]}")
  [ "$n" -le 2 ] || die "$p: lists $n unique names; is it filtering?"
done
exec {SPARE[1]}>&-
wait "$CLIENT_PID" 2>/dev/null || true
CLIENT_PID=

# SETUP_ONLY=1: leave everything running for profiling by hand (perf, strace), then stop.
if [ "${SETUP_ONLY:-0}" = 1 ]; then
  cat >&2 <<EOF
bus:              $BUS (dbus-daemon pid $DAEMON_PID)
doppel-bus-proxy: ${ADDR[doppel]} (pid $DOPPEL_PID)
xdg-dbus-proxy:   ${ADDR[xdg]} (pid $XDG_PID)
client:           FLATPAK_ID=$FLATPAK_ID $BENCH throughput ADDRESS --calls 60000 --window 32
press Enter to stop
EOF
  read -r _ || true
  exit 0
fi

# --- Helpers ---------------------------------------------------------------------------------
# CPU time of every thread of a process, in ns.
cpu_ns() {
  local s=0 f a
  for f in /proc/"$1"/task/*/schedstat; do
    read -r a _ <"$f" || continue
    s=$((s + a))
  done
  echo "$s"
}
# "rss_kb":…,"pss_kb":…,"uss_kb":…,"anon_kb":…,"hwm_kb":… of a process. PSS depends on what
# else runs (shared pages are divided among the processes mapping them); USS counts a binary's
# pages as private while no other process maps them; Anonymous (heap, stacks) is what each
# further instance adds.
mem_json() {
  local hwm
  hwm=$(awk '/^VmHWM:/ {print $2}' /proc/"$1"/status)
  awk -v hwm="$hwm" '/^Rss:/ {r = $2} /^Pss:/ {p = $2} /^Private_(Clean|Dirty):/ {u += $2}
    /^Anonymous:/ {a = $2}
    END {printf "\"rss_kb\":%d,\"pss_kb\":%d,\"uss_kb\":%d,\"anon_kb\":%d,\"hwm_kb\":%d",
         r, p, u, a, hwm}' \
    /proc/"$1"/smaps_rollup
}
RES=$T/results.jsonl
: >"$RES"
emit() { echo "{\"round\":$1,\"path\":\"$2\",$3}" >>"$RES"; }
strip() { local j=$1; j=${j#\{}; echo "${j%\}}"; }
# Throughput of one target on one path, with the CPU time the proxy and the bus spent over the
# whole client run (warm-up and timed calls, connection set-up included).
tput() {
  local r=$1 p=$2 target=$3 c0=0 d0 j cpu
  [ "$p" = direct ] || c0=$(cpu_ns "${PID[$p]}")
  d0=$(cpu_ns "$DAEMON_PID")
  j=$("$BENCH" throughput "${ADDR[$p]}" --target "$target" --calls "$TPUT_CALLS" \
    --window "$WINDOW" --warmup 1000)
  cpu=",\"cpu_calls\":$((TPUT_CALLS + 1000)),\"daemon_cpu_ns\":$(($(cpu_ns "$DAEMON_PID") - d0))"
  [ "$p" = direct ] || cpu+=",\"proxy_cpu_ns\":$(($(cpu_ns "${PID[$p]}") - c0))"
  emit "$r" "$p" "$(strip "$j")$cpu"
}

# --- Rounds ----------------------------------------------------------------------------------
echo "== $ROUNDS rounds: latency ($LAT_CALLS Echo, $BUS_CALLS GetId), throughput ($TPUT_CALLS Echo, then GetId, $WINDOW outstanding)" >&2
for ((r = 0; r < ROUNDS; r++)); do
  order=("${PATHS[@]:r%3}" "${PATHS[@]:0:r%3}")
  for p in "${order[@]}"; do
    a=${ADDR[$p]}
    j=$("$BENCH" latency "$a" --target echo --calls "$LAT_CALLS" --warmup 200)
    emit "$r" "$p" "$(strip "$j")"
    j=$("$BENCH" latency "$a" --target bus --calls "$BUS_CALLS" --warmup 200)
    emit "$r" "$p" "$(strip "$j")"
    tput "$r" "$p" echo
    tput "$r" "$p" bus
    echo "   round $((r + 1))/$ROUNDS: $p done" >&2
  done
  # Memory after the round: idle (no client), then with one client connected.
  sleep 0.2
  for p in doppel xdg; do
    emit "$r" "$p" "\"mode\":\"memory\",\"clients\":0,$(mem_json "${PID[$p]}")"
    coproc IDLE { exec "$BENCH" hold "${ADDR[$p]}"; }
    CLIENT_PID=$IDLE_PID  # saved: bash unsets IDLE_PID when it reaps the coprocess
    read -r line <&"${IDLE[0]}" || die "$p: the idle client did not connect"
    sleep 0.2
    emit "$r" "$p" "\"mode\":\"memory\",\"clients\":1,$(mem_json "${PID[$p]}")"
    exec {IDLE[1]}>&-
    wait "$CLIENT_PID" 2>/dev/null || true
    CLIENT_PID=
  done
done

# --- Results ---------------------------------------------------------------------------------
mkdir -p "$OUT"
cp "$RES" "$OUT/busproxy.jsonl"
NPROC=$(find /proc -maxdepth 1 -name '[0-9]*' | wc -l)
# How many processes share GLib's pages with xdg-dbus-proxy (its PSS shrinks as they grow).
GLIBN=$(grep -l 'libgio-2.0' /proc/[0-9]*/maps 2>/dev/null | grep -vc "^/proc/$XDG_PID/" || true)
python3 - "$OUT/busproxy.jsonl" "$NPROC" "$ROUNDS" "$LAT_CALLS" "$BUS_CALLS" "$TPUT_CALLS" "$WINDOW" "$BUILT" "$GLIBN" \
  <<'PY' | tee "$OUT/busproxy.md"
import json, statistics, sys
path, nproc, rounds, lat_calls, bus_calls, tput_calls, window, built, glibn = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
med = statistics.median
P = ['direct', 'doppel', 'xdg']
label = {'direct': 'direct connection', 'doppel': 'doppel-bus-proxy', 'xdg': 'xdg-dbus-proxy'}

def sel(p, mode, target=None, clients=None):
    return [r for r in rows if r['path'] == p and r['mode'] == mode
            and (target is None or r.get('target') == target)
            and (clients is None or r.get('clients') == clients)]

# (mode, target, value of one row): every figure is the median over rounds of this value.
METRICS = {
    'lat': ('latency', 'echo', lambda r: r['median_us']),
    'p99': ('latency', 'echo', lambda r: r['p99_us']),
    'bus': ('latency', 'bus', lambda r: r['median_us']),
    'busp99': ('latency', 'bus', lambda r: r['p99_us']),
    'tput': ('throughput', 'echo', lambda r: r['calls_per_s']),
    'btput': ('throughput', 'bus', lambda r: r['calls_per_s']),
    'cpu': ('throughput', 'echo', lambda r: r['proxy_cpu_ns'] / r['cpu_calls'] / 1000),
    'bcpu': ('throughput', 'bus', lambda r: r['proxy_cpu_ns'] / r['cpu_calls'] / 1000),
    'dcpu': ('throughput', 'echo', lambda r: r['daemon_cpu_ns'] / r['cpu_calls'] / 1000),
    'ccpu': ('throughput', 'echo', lambda r: r['client_cpu_ns'] / r['calls'] / 1000),
}
def per_round(p, key):
    mode, target, f = METRICS[key]
    return {r['round']: f(r) for r in sel(p, mode, target)}
m = {p: {k: med(per_round(p, k).values()) for k in METRICS
         if p != 'direct' or k not in ('cpu', 'bcpu')} for p in P}

print(f'{rounds} rounds, the three paths interleaved; {nproc} processes on the host at the end. '
      f'Per round and path: {lat_calls} sequential Echo("hello") calls and {bus_calls} GetId '
      f'calls (latency), {tput_calls} Echo and {tput_calls} GetId calls with {window} '
      f'outstanding (throughput), each on a fresh connection. Medians over rounds. {built}.')
print()
print('| Path | Echo latency, median (µs) | Echo p99 (µs) | GetId latency, median (µs) '
      '| GetId p99 (µs) | Echo throughput (calls/s) | GetId throughput (calls/s) |')
print('|---|---:|---:|---:|---:|---:|---:|')
for p in P:
    x = m[p]
    print(f"| {label[p]} | {x['lat']:.1f} | {x['p99']:.1f} | {x['bus']:.1f} | {x['busp99']:.1f} "
          f"| {x['tput']:.0f} | {x['btput']:.0f} |")
print()
print('| CPU time per call, throughput runs (µs) | Proxy, Echo | Proxy, GetId | dbus-daemon, Echo '
      '| Client, Echo |')
print('|---|---:|---:|---:|---:|')
for p in P:
    x = m[p]
    c = lambda k: f'{x[k]:.1f}' if k in x else '–'
    print(f"| {label[p]} | {c('cpu')} | {c('bcpu')} | {c('dcpu')} | {c('ccpu')} |")
print()
print('| Ratio | Value (of the medians) | Range over rounds (same-round pairs) | Target | |')
print('|---|---:|---:|---:|---|')
def line(name, a, b, key, goal=None, lower_better=True):
    v = m[a][key] / m[b][key]
    ra, rb = per_round(a, key), per_round(b, key)
    rs = [ra[k] / rb[k] for k in ra if k in rb]
    verdict, g = '', '–'
    if goal is not None:
        ok = v <= goal if lower_better else v >= goal
        g = ('≤ ' if lower_better else '≥ ') + f'{goal:.2f}'
        miss = (v / goal - 1) if lower_better else (1 - v / goal)
        verdict = 'met' if ok else f'**not met** ({miss * 100:.0f} % {"over" if lower_better else "under"})'
    print(f'| {name} | {v:.2f} | {min(rs):.2f}–{max(rs):.2f} | {g} | {verdict} |')
line('Echo latency median, doppel / xdg-dbus-proxy', 'doppel', 'xdg', 'lat', 1.0)
line('Echo latency p99, doppel / xdg-dbus-proxy', 'doppel', 'xdg', 'p99')
line('GetId latency median, doppel / xdg-dbus-proxy', 'doppel', 'xdg', 'bus', 1.0)
line('Echo throughput, doppel / xdg-dbus-proxy', 'doppel', 'xdg', 'tput', 1.0, False)
line('GetId throughput, doppel / xdg-dbus-proxy', 'doppel', 'xdg', 'btput', 1.0, False)
line('Proxy CPU per Echo call, doppel / xdg-dbus-proxy', 'doppel', 'xdg', 'cpu')
line('Proxy CPU per GetId call, doppel / xdg-dbus-proxy', 'doppel', 'xdg', 'bcpu')
line('Echo latency median, doppel / direct', 'doppel', 'direct', 'lat')
line('Echo latency median, xdg-dbus-proxy / direct', 'xdg', 'direct', 'lat')
line('Echo throughput, doppel / direct', 'doppel', 'direct', 'tput', None, False)
line('Echo throughput, xdg-dbus-proxy / direct', 'xdg', 'direct', 'tput', None, False)
line('GetId throughput, doppel / direct', 'doppel', 'direct', 'btput', None, False)
line('GetId throughput, xdg-dbus-proxy / direct', 'xdg', 'direct', 'btput', None, False)
print()
print(f"Latency added per Echo round trip (proxy median − direct median): doppel-bus-proxy "
      f"{m['doppel']['lat'] - m['direct']['lat']:.1f} µs, xdg-dbus-proxy "
      f"{m['xdg']['lat'] - m['direct']['lat']:.1f} µs; per GetId round trip: "
      f"{m['doppel']['bus'] - m['direct']['bus']:.1f} µs and "
      f"{m['xdg']['bus'] - m['direct']['bus']:.1f} µs.")
print()
print('| Proxy memory after each round (median over rounds, MiB) | RSS | PSS | USS (private) '
      '| Anonymous | Peak RSS (VmHWM) |')
print('|---|---:|---:|---:|---:|---:|')
K = ('rss', 'pss', 'uss', 'anon')
mem = {}
for p in ('doppel', 'xdg'):
    for c in (0, 1):
        x = {k: med(r[f'{k}_kb'] for r in sel(p, 'memory', clients=c)) / 1024 for k in K}
        x['hwm'] = max(r['hwm_kb'] for r in sel(p, 'memory', clients=c)) / 1024
        mem[p, c] = x
        state = 'idle' if c == 0 else 'one idle client connected'
        print(f'| {label[p]}, {state} | ' + ' | '.join(f'{x[k]:.2f}' for k in K + ('hwm',)) + ' |')
ratio = {}
for c in (0, 1):
    ratio[c] = {k: mem['doppel', c][k] / mem['xdg', c][k] for k in K + ('hwm',)}
    state = 'idle' if c == 0 else 'one client'
    print(f'| doppel / xdg-dbus-proxy, {state} | '
          + ' | '.join(f'{ratio[c][k]:.2f}' for k in K + ('hwm',)) + ' |')
print()
print(f'{glibn} other processes on the host mapped libgio-2.0 at the end: xdg-dbus-proxy shares '
      f'GLib\'s pages with them, which lowers its PSS and USS; doppel-bus-proxy links everything but libc '
      f'statically, so its binary\'s pages are private until a second instance runs.')
for k, name in (('rss', 'RSS'), ('pss', 'PSS')):
    worst = max(ratio[0][k], ratio[1][k])
    print(f"Memory target on {name} (≤ xdg-dbus-proxy, idle and with a client): "
          + ('met.' if worst <= 1 else f'**not met** (ratio {worst:.2f}).'))
PY
echo "raw results: $OUT/busproxy.jsonl; table: $OUT/busproxy.md" >&2
