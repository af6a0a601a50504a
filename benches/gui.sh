#!/bin/bash
# GUI benchmark (issue 4): start to first frame, and idle resident memory, of doppel-gui with
# 20 profiles, next to a minimal libadwaita window built the same way
# (gui/examples/baseline.rs: same crate, same release profile). Target: at most 1.5x the
# baseline's start time and memory.
#
# Run as root from anywhere: `sudo bash benches/gui.sh`. It builds the two programs (cargo) but
# installs nothing: it says what is missing. Everything measured runs as the unprivileged user
# doppel-bench (created if missing, as benches/launch.sh does) with a fresh HOME and XDG
# directories in a temporary directory, on a private Xvfb display and a private session bus
# (GDK_BACKEND=x11, GSK_RENDERER=cairo: Xvfb has no GL; NO_AT_BRIDGE=1 and GTK_A11Y=none: no
# accessibility bus). The bus activates the portals on the first start and keeps them, as a
# desktop session does.
#
# Start-up: both programs are started by the same waiter (firstframe.py below). It times from
# the spawn to the window's first frame: the first DAMAGE to the window, after it is mapped,
# that leaves something other than the black the X server paints a new window with. hyperfine
# times the whole waiter command too (Python's start and the program's exit included). The runs
# are split into rounds that time both programs in alternating order, so that drift in the
# machine's load falls on both.
#   - "Cold start" first means a fresh process with the file cache warm: the usual case.
#   - With COLD_RUNS > 0 it also times starts after `echo 3 > /proc/sys/vm/drop_caches`
#     (hyperfine --prepare): GTK, libadwaita, icons and fonts then come from disk. This drops
#     the page cache of the whole machine.
#
# Memory: each program is started, left idle IDLE seconds after its first frame (doppel-gui
# re-reads the profiles every second), and its smaps_rollup is read (RSS, PSS, USS).
#
# Knobs (environment):
#   RUNS (20) timed runs of each, in ROUNDS (4) rounds, each round with WARMUP (2) untimed runs;
#   COLD_RUNS (10) rounds of one run with the page cache dropped, 0 skips them;
#   MEM_RUNS (5), IDLE (5 s); PROFILES (20);
#   BENCH_APPS: the desktop ids the profiles cycle through, those installed
#     (default: org.telegram.desktop display-im6.q16 vim);
#   SKIP_BUILD=1: use the binaries already in target/release;
#   USER_CSS: a style sheet both programs load as the user's gtk.css, to try a style change
#     without a rebuild, e.g. USER_CSS='.icon-dropshadow { -gtk-icon-shadow: none; }'.
# Results: the JSON, per-run logs, screenshots and gui.md (the tables) in target/bench/gui/
# (gui-p<N>/ with another PROFILES, gui-css/ with USER_CSS).
set -euo pipefail

RUNS=${RUNS:-20}
ROUNDS=${ROUNDS:-4}
WARMUP=${WARMUP:-2}
COLD_RUNS=${COLD_RUNS:-10}
MEM_RUNS=${MEM_RUNS:-5}
IDLE=${IDLE:-5}
PROFILES=${PROFILES:-20}
SKIP_BUILD=${SKIP_BUILD:-0}
USER_CSS=${USER_CSS:-}
BENCH_APPS=${BENCH_APPS:-org.telegram.desktop display-im6.q16 vim}
BUSER=doppel-bench
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$REPO/target/bench/gui
[ "$PROFILES" != 20 ] && OUT=$OUT-p$PROFILES
[ -n "$USER_CSS" ] && OUT=$OUT-css
USER_PATH=/usr/local/bin:/usr/bin:/bin

die() { echo "gui.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (sudo bash benches/gui.sh): it creates a test user"

# --- Tools (installs nothing: says what to install) -----------------------------------------
missing=()
for t in hyperfine:hyperfine Xvfb:xvfb dbus-daemon:dbus setpriv:util-linux python3:python3 \
         import:imagemagick; do
  PATH=$USER_PATH:$PATH command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
LIBS=$(ldconfig -p)
for l in libX11.so.6:libx11-6 libXdamage.so.1:libxdamage1; do
  grep -qF "${l%%:*}" <<<"$LIBS" || missing+=("${l#*:}")
done
[ ${#missing[@]} -eq 0 ] || die "missing tools; install them with: apt-get install ${missing[*]}"
PY=$(PATH=$USER_PATH command -v python3) || die "python3 must be in the test user's PATH, $USER_PATH"

if [ "$SKIP_BUILD" != 1 ]; then
  command -v cargo >/dev/null || die "no cargo on root's PATH: build as yourself, then SKIP_BUILD=1"
  (cd "$REPO" && cargo build --release -p doppel-core -p doppel-gui --bin doppel --bin doppel-gui \
    --example baseline) >&2
fi
for b in doppel doppel-gui examples/baseline; do
  [ -x "$REPO/target/release/$b" ] || die "no target/release/$b: run cargo build --release --workspace \
and cargo build --release -p doppel-gui --examples"
done

# --- The test user ---------------------------------------------------------------------------
id "$BUSER" >/dev/null 2>&1 || useradd -m -s /bin/bash "$BUSER"
BUID=$(id -u "$BUSER")
BGID=$(id -g "$BUSER")

# --- A world-readable copy of what the user runs, and its own HOME and XDG dirs ----------------
T=$(mktemp -d /tmp/doppel-gui-bench.XXXXXX)
XVFB_PID=
DBUS_PID=
cleanup() {
  set +e
  # What our bus activated (the portals) has reparented to init; it is known by its
  # XDG_RUNTIME_DIR, which only this run uses.
  local p
  for p in $(pgrep -u "$BUID" 2>/dev/null); do
    if grep -qzxF "XDG_RUNTIME_DIR=$T/run" "/proc/$p/environ" 2>/dev/null; then
      kill "$p" 2>/dev/null
    fi
  done
  if [ -n "$DBUS_PID" ]; then kill "$DBUS_PID" 2>/dev/null; wait "$DBUS_PID" 2>/dev/null; fi
  if [ -n "$XVFB_PID" ]; then kill "$XVFB_PID" 2>/dev/null; wait "$XVFB_PID" 2>/dev/null; fi
  mountpoint -q "$T/run/doc" 2>/dev/null && umount -l "$T/run/doc"
  rm -rf "$T"
}
trap cleanup EXIT
chmod 0755 "$T"
mkdir -p "$T/bin" "$T/share/doppel" "$T/json" "$T/home" "$T/run"
cp "$REPO/target/release/doppel" "$REPO/target/release/doppel-gui" "$T/bin/"
cp "$REPO/target/release/examples/baseline" "$T/bin/baseline"
cp -r "$REPO/profiles" "$T/share/doppel/profiles"
chown "$BUID:$BGID" "$T/json" "$T/home" "$T/run"
chmod 0700 "$T/run"

cd "$T/home"
H=$T/home
AS_USER=(setpriv --reuid "$BUID" --regid "$BGID" --init-groups env -i
  HOME="$H" USER="$BUSER" LOGNAME="$BUSER" LANG=C.UTF-8 PATH="$USER_PATH"
  XDG_RUNTIME_DIR="$T/run" XDG_CONFIG_HOME="$H/.config" XDG_DATA_HOME="$H/.local/share"
  XDG_CACHE_HOME="$H/.cache" XDG_DATA_DIRS="$T/share:/usr/share")

# --- A display and a session bus of our own --------------------------------------------------
DISPLAY_NUM=
for n in $(seq 90 199); do
  [ -e "/tmp/.X$n-lock" ] || [ -e "/tmp/.X11-unix/X$n" ] && continue
  "${AS_USER[@]}" Xvfb ":$n" -screen 0 1600x1000x24 -nolisten tcp >"$T/xvfb.log" 2>&1 &
  XVFB_PID=$!
  for _ in $(seq 100); do
    [ -S "/tmp/.X11-unix/X$n" ] && break
    kill -0 "$XVFB_PID" 2>/dev/null || break
    sleep 0.05
  done
  if [ -S "/tmp/.X11-unix/X$n" ] && kill -0 "$XVFB_PID" 2>/dev/null; then DISPLAY_NUM=$n; break; fi
  wait "$XVFB_PID" 2>/dev/null || true
  XVFB_PID=
done
[ -n "$DISPLAY_NUM" ] || { cat "$T/xvfb.log" >&2; die "Xvfb did not start"; }
"${AS_USER[@]}" dbus-daemon --session --address="unix:path=$T/run/bus" --nofork --nopidfile \
  >"$T/dbus.log" 2>&1 &
DBUS_PID=$!
for _ in $(seq 100); do [ -S "$T/run/bus" ] && break; sleep 0.05; done
[ -S "$T/run/bus" ] || die "the private session bus did not start"
GUI_ENV=(DISPLAY=":$DISPLAY_NUM" DBUS_SESSION_BUS_ADDRESS="unix:path=$T/run/bus"
  GDK_BACKEND=x11 GSK_RENDERER=cairo NO_AT_BRIDGE=1 GTK_A11Y=none)

# --- The profiles: PROFILES of them, over the installed apps -----------------------------------
# The same apps every time if they are installed (what the rows show hardly matters: a row of
# a command with no desktop entry costs the window as much as one of Telegram), else the first
# three `doppel apps` lists, else `sh`.
mapfile -t INSTALLED < <("${AS_USER[@]}" "$T/bin/doppel" apps 2>/dev/null | awk 'NR > 1 {print $1}')
APPS=()
for a in $BENCH_APPS; do
  for i in "${INSTALLED[@]}"; do [ "$i" = "$a" ] && APPS+=("$a"); done
done
[ ${#APPS[@]} -gt 0 ] || APPS=("${INSTALLED[@]:0:3}")
[ ${#APPS[@]} -gt 0 ] || APPS=(sh)
for ((i = 1; i <= PROFILES; i++)); do
  id=$(printf 'bench-%02d' "$i")
  if ! "${AS_USER[@]}" "$T/bin/doppel" create "$id" --app "${APPS[$(((i - 1) % ${#APPS[@]}))]}" \
    --name "Bench $i" >/dev/null 2>>"$T/create.log"; then
    cat "$T/create.log" >&2
    die "doppel create $id failed"
  fi
done
n=$("${AS_USER[@]}" "$T/bin/doppel" list | grep -c '^bench-') || true
[ "$n" = "$PROFILES" ] || die "doppel list shows $n profiles, not $PROFILES"
echo "== $PROFILES profiles over: ${APPS[*]}" >&2
if [ -n "$USER_CSS" ]; then
  mkdir -p "$H/.config/gtk-4.0"
  printf '%s\n' "$USER_CSS" >"$H/.config/gtk-4.0/gtk.css"
  chown -R "$BUID:$BGID" "$H/.config/gtk-4.0"
  echo "== both programs load this gtk.css: $USER_CSS" >&2
fi

# --- The waiter: spawn, then wait for the first frame --------------------------------------
cat >"$T/firstframe.py" <<'PY'
"""Starts a program and waits for its window's first frame on the X display.

usage: firstframe.py TITLE LOG [IDLE_SECONDS [SCREENSHOT]] -- PROGRAM [ARG...]

Before starting PROGRAM it watches the root window for new top-level windows and puts a
DAMAGE object on each as it is created. The first frame is the first damage to the window
titled TITLE, after it is mapped, that leaves something other than black in its header bar
(the X server paints a newly mapped window black; that is not the app's frame). It appends
one JSON line to LOG: milliseconds from the spawn to the map and to the first frame and, with
IDLE_SECONDS, the program's smaps_rollup after that many seconds of idling past its first
frame (then a screenshot of the screen, if asked). Then it ends the program (SIGTERM).
"""
import ctypes, json, select, subprocess, sys, time

title, log = sys.argv[1].encode(), sys.argv[2]
rest = sys.argv[3:]
idle, shot = None, None
if rest[0] != '--':
    idle = float(rest.pop(0))
if rest[0] != '--':
    shot = rest.pop(0)
argv = rest[1:]

X = ctypes.CDLL('libX11.so.6')
XD = ctypes.CDLL('libXdamage.so.1')
X.XOpenDisplay.restype = ctypes.c_void_p
X.XOpenDisplay.argtypes = [ctypes.c_char_p]
X.XDefaultRootWindow.restype = ctypes.c_ulong
X.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
X.XSelectInput.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_long]
X.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
X.XFlush.argtypes = [ctypes.c_void_p]
X.XPending.argtypes = [ctypes.c_void_p]
X.XNextEvent.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
X.XConnectionNumber.argtypes = [ctypes.c_void_p]
X.XFetchName.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(ctypes.c_char_p)]
X.XFree.argtypes = [ctypes.c_void_p]
X.XSetErrorHandler.argtypes = [ctypes.c_void_p]
X.XGetImage.restype = ctypes.c_void_p
X.XGetImage.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int,
                        ctypes.c_uint, ctypes.c_uint, ctypes.c_ulong, ctypes.c_int]
X.XGetPixel.restype = ctypes.c_ulong
X.XGetPixel.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
X.XDestroyImage.argtypes = [ctypes.c_void_p]
XD.XDamageQueryExtension.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int),
                                     ctypes.POINTER(ctypes.c_int)]
XD.XDamageCreate.restype = ctypes.c_ulong
XD.XDamageCreate.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int]

class Any(ctypes.Structure):  # XCreateWindowEvent / XMapEvent: w2 is the window
    _fields_ = [('type', ctypes.c_int), ('serial', ctypes.c_ulong), ('send_event', ctypes.c_int),
                ('display', ctypes.c_void_p), ('w1', ctypes.c_ulong), ('w2', ctypes.c_ulong)]
class Damage(ctypes.Structure):  # XDamageNotifyEvent
    _fields_ = [('type', ctypes.c_int), ('serial', ctypes.c_ulong), ('send_event', ctypes.c_int),
                ('display', ctypes.c_void_p), ('drawable', ctypes.c_ulong),
                ('damage', ctypes.c_ulong), ('level', ctypes.c_int), ('more', ctypes.c_int),
                ('timestamp', ctypes.c_ulong), ('x', ctypes.c_short), ('y', ctypes.c_short),
                ('width', ctypes.c_ushort), ('height', ctypes.c_ushort)]
class Event(ctypes.Union):
    _fields_ = [('any', Any), ('damage', Damage), ('pad', ctypes.c_long * 24)]

CREATE_NOTIFY, MAP_NOTIFY, SUBSTRUCTURE_NOTIFY_MASK = 16, 19, 1 << 19
REPORT_RAW_RECTANGLES, Z_PIXMAP = 0, 2

# A window can be gone before we look at it (GTK makes short-lived ones): ignore X errors.
ERROR_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)(lambda d, e: 0)
X.XSetErrorHandler(ERROR_HANDLER)

dpy = X.XOpenDisplay(None)
if not dpy:
    sys.exit('firstframe: cannot open the display')
ev_base, err_base = ctypes.c_int(), ctypes.c_int()
if not XD.XDamageQueryExtension(dpy, ctypes.byref(ev_base), ctypes.byref(err_base)):
    sys.exit('firstframe: the X server has no DAMAGE extension')
DAMAGE_NOTIFY = ev_base.value
root = X.XDefaultRootWindow(dpy)
X.XSelectInput(dpy, root, SUBSTRUCTURE_NOTIFY_MASK)
X.XSync(dpy, 0)

def name_of(w):
    p = ctypes.c_char_p()
    if not X.XFetchName(dpy, w, ctypes.byref(p)) or p.value is None:
        return None
    name = p.value
    X.XFree(p)
    return name

def drawn(w):
    """Whether a row through the window's header bar (or the top of the screen) shows
    anything but black."""
    width = 200
    im = X.XGetImage(dpy, w, 0, 20, width, 1, 0xFFFFFFFF, Z_PIXMAP)
    if not im:
        return False
    try:
        return any(X.XGetPixel(im, x, 0) & 0xFFFFFF for x in range(width))
    finally:
        X.XDestroyImage(im)

# The test for a frame assumes the window appears over black: nothing else may be on screen.
if drawn(root):
    sys.exit('firstframe: the screen is not clear (a window from an earlier run is still up?)')

t0 = time.monotonic()
child = subprocess.Popen(argv)
mapped, t_map, t_frame, blank = None, None, None, 0
deadline = t0 + 60
fd = X.XConnectionNumber(dpy)
ev = Event()
while t_frame is None:
    while X.XPending(dpy):
        X.XNextEvent(dpy, ctypes.byref(ev))
        now = time.monotonic()
        t = ev.any.type
        if t == CREATE_NOTIFY:
            XD.XDamageCreate(dpy, ev.any.w2, REPORT_RAW_RECTANGLES)
            X.XFlush(dpy)
        elif t == MAP_NOTIFY and mapped is None and name_of(ev.any.w2) == title:
            mapped, t_map = ev.any.w2, now
        elif t == DAMAGE_NOTIFY and mapped is not None and ev.damage.drawable == mapped:
            if drawn(mapped):
                t_frame = now
                break
            blank += 1
    if t_frame is not None:
        break
    if child.poll() is not None:
        sys.exit(f'firstframe: {argv[0]} exited ({child.returncode}) before its first frame '
                 '(an instance already running on this session bus takes over a second start)')
    if time.monotonic() > deadline:
        child.kill()
        sys.exit(f'firstframe: no first frame of a window titled {title.decode()!r} in 60 s')
    select.select([fd], [], [], 0.1)

rec = {'pid': child.pid, 'map_ms': (t_map - t0) * 1000, 'frame_ms': (t_frame - t0) * 1000,
       'blank_damages': blank}
if idle is not None:
    time.sleep(idle)
    if child.poll() is not None:
        sys.exit(f'firstframe: {argv[0]} exited ({child.returncode}) while idle')
    for line in open(f'/proc/{child.pid}/smaps_rollup'):
        k, _, v = line.partition(':')
        if v.strip().endswith('kB'):
            rec[k.lower() + '_kb'] = int(v.split()[0])
    for line in open(f'/proc/{child.pid}/status'):
        k, _, v = line.partition(':')
        if k in ('VmHWM', 'Threads'):
            rec[k.lower()] = int(v.split()[0])
    if shot:
        subprocess.run(['import', '-window', 'root', shot], check=False)
child.terminate()
try:
    child.wait(5)
except subprocess.TimeoutExpired:
    child.kill()
    child.wait()
with open(log, 'a') as f:
    f.write(json.dumps(rec) + '\n')
PY
chmod 0644 "$T/firstframe.py"

# hyperfine starts the waiter as the user, without a shell: the command line is the same for
# both programs but for the title, the log and the binary.
waiter() {  # waiter NAME TITLE LOG -> the command line
  local bin=$T/bin/$1
  echo "${AS_USER[*]} ${GUI_ENV[*]} $PY $T/firstframe.py '$2' $3 -- $bin"
}
NPROC=$(find /proc -maxdepth 1 -name '[0-9]*' | wc -l)
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== $NPROC processes on the host, load average $LOAD; display :$DISPLAY_NUM" >&2

# A first start of each, untimed: the bus activates the portals (as a desktop session has them
# running), and it checks that both windows come up.
for p in doppel-gui:Doppel "baseline:Doppel Baseline"; do
  "${AS_USER[@]}" "${GUI_ENV[@]}" "$PY" "$T/firstframe.py" "${p#*:}" "$T/json/check.jsonl" -- \
    "$T/bin/${p%%:*}" || die "${p%%:*}: no window"
done

# --- Start-up ---------------------------------------------------------------------------------
# hyperfine runs all of one command, then all of the other; on this shared machine load drifts
# within seconds, so the runs are split into rounds, each timing both programs, in alternating
# order. Each waiter appends a line per run to its log; a round's warm-up lines are dropped.
HF=(hyperfine -N --style basic)
title_of() { [ "$1" = baseline ] && echo 'Doppel Baseline' || echo Doppel; }
rounds() {  # rounds KIND ROUNDS RUNS_PER_ROUND WARMUP [hyperfine options...]
  local kind=$1 nrounds=$2 per=$3 w=$4 k p args before
  shift 4
  for ((k = 0; k < nrounds; k++)); do
    args=()
    for p in baseline doppel-gui; do
      touch "$T/json/all-$kind-$p.jsonl"
      chown "$BUID:$BGID" "$T/json/all-$kind-$p.jsonl"
    done
    for p in $( ((k % 2)) && echo doppel-gui baseline || echo baseline doppel-gui); do
      args+=(-n "$p" "$(waiter "$p" "$(title_of "$p")" "$T/json/all-$kind-$p.jsonl")")
    done
    before=("$(wc -l <"$T/json/all-$kind-baseline.jsonl")" "$(wc -l <"$T/json/all-$kind-doppel-gui.jsonl")")
    "${HF[@]}" -w "$w" -r "$per" "$@" --export-json "$T/json/start-$kind-$k.json" "${args[@]}" >&2
    tail -n "+$((before[0] + w + 1))" "$T/json/all-$kind-baseline.jsonl" \
      >>"$T/json/frames-$kind-baseline.jsonl"
    tail -n "+$((before[1] + w + 1))" "$T/json/all-$kind-doppel-gui.jsonl" \
      >>"$T/json/frames-$kind-doppel-gui.jsonl"
  done
}
echo "== start to first frame, file cache warm: $ROUNDS rounds of $((RUNS / ROUNDS)) runs" >&2
rounds warm "$ROUNDS" $((RUNS / ROUNDS)) "$WARMUP"
if [ "$COLD_RUNS" -gt 0 ]; then
  echo "== start to first frame, page cache dropped before each run: $COLD_RUNS rounds of 1" >&2
  rounds cold "$COLD_RUNS" 1 0 --prepare "sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches'"
fi

# --- Idle memory: alternating runs -----------------------------------------------------------
echo "== idle memory ($MEM_RUNS runs each, ${IDLE} s idle after the first frame)" >&2
for ((i = 1; i <= MEM_RUNS; i++)); do
  for p in "baseline:Doppel Baseline" doppel-gui:Doppel; do
    name=${p%%:*}
    args=("$IDLE")
    [ "$i" = 1 ] && args+=("$T/json/$name.png")
    "${AS_USER[@]}" "${GUI_ENV[@]}" "$PY" "$T/firstframe.py" "${p#*:}" \
      "$T/json/mem-$name.jsonl" "${args[@]}" -- "$T/bin/$name" || die "$name: memory run $i failed"
  done
done

# --- Results ----------------------------------------------------------------------------------
rm -rf "$OUT"
mkdir -p "$OUT"
cp "$T"/json/* "$OUT/"
COMMIT=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(cd "$REPO" && git status --porcelain --untracked-files=no -- gui core 2>/dev/null) || DIRTY=
[ -n "$DIRTY" ] && COMMIT="$COMMIT (gui/ or core/ with uncommitted changes)"
VERSIONS="GTK $(dpkg-query -W -f '${Version}' libgtk-4-1 2>/dev/null || echo '?'), \
libadwaita $(dpkg-query -W -f '${Version}' libadwaita-1-0 2>/dev/null || echo '?'), \
Xvfb $(dpkg-query -W -f '${Version}' xvfb 2>/dev/null || echo '?'), $(hyperfine --version)"
"$PY" - "$OUT" "$RUNS" "$COLD_RUNS" "$PROFILES" "$IDLE" "$NPROC" "$LOAD" "$COMMIT" "$VERSIONS" \
  "$USER_CSS" "${APPS[*]}" <<'PY' | tee "$OUT/gui.md"
import json, os, statistics, sys
out, runs, cold_runs, profiles, idle, nproc, load, commit, versions, css, apps = sys.argv[1:]
runs, cold_runs = int(runs), int(cold_runs)
med = statistics.median
TARGET = 1.5

def verdict(r):
    return 'met' if r <= TARGET else f'**not met** ({(r / TARGET - 1) * 100:.0f} % over)'

print(f'Commit {commit}; {profiles} profiles (apps: {apps}); {os.cpu_count()} cores, {nproc} processes on the '
      f'host, load average {load} at the start; {versions}.')
if css:
    print(f'Both programs loaded this gtk.css: `{css}`.')
print()
print('| Start to first frame (ms, median) | Baseline | doppel-gui | Ratio | Target | |')
print('|---|---:|---:|---:|---:|---|')
for kind, n, label in (('warm', runs, 'file cache warm'), ('cold', cold_runs, 'page cache dropped')):
    if n == 0:
        continue
    f = {p: [json.loads(l) for l in open(f'{out}/frames-{kind}-{p}.jsonl')]
         for p in ('baseline', 'doppel-gui')}
    times = {p: [] for p in f}
    k = 0
    while os.path.exists(f'{out}/start-{kind}-{k}.json'):
        for r in json.load(open(f'{out}/start-{kind}-{k}.json'))['results']:
            times[r['command']] += r['times']
        k += 1
    m = {p: med(r['map_ms'] for r in f[p]) for p in f}
    fr = {p: med(r['frame_ms'] for r in f[p]) for p in f}
    whole = {p: med(times[p]) * 1000 for p in f}
    n = len(f['baseline'])
    r = fr['doppel-gui'] / fr['baseline']
    print(f'| {label}, {n} runs: spawn → first frame | {fr["baseline"]:.0f} | '
          f'{fr["doppel-gui"]:.0f} | {r:.2f} | ≤ {TARGET} | {verdict(r)} |')
    print(f'| {label}: spawn → window mapped | {m["baseline"]:.0f} | {m["doppel-gui"]:.0f} | '
          f'{m["doppel-gui"] / m["baseline"]:.2f} | | |')
    print(f'| {label}: mapped → first frame | {fr["baseline"] - m["baseline"]:.0f} | '
          f'{fr["doppel-gui"] - m["doppel-gui"]:.0f} | | | |')
    print(f'| {label}: hyperfine, whole waiter command | {whole["baseline"]:.0f} | '
          f'{whole["doppel-gui"]:.0f} | {whole["doppel-gui"] / whole["baseline"]:.2f} | | |')
print()
mem = {p: [json.loads(l) for l in open(f'{out}/mem-{p}.jsonl')] for p in ('baseline', 'doppel-gui')}
print(f'| Idle memory after {idle} s (MiB, median of {len(mem["baseline"])}) | Baseline | '
      f'doppel-gui | Ratio | Target | |')
print('|---|---:|---:|---:|---:|---|')
for key, label, target in (('rss_kb', 'RSS', True), ('pss_kb', 'PSS', True), ('uss', 'USS (private)', False),
                           ('vmhwm', 'Peak RSS (VmHWM)', False), ('threads', 'Threads', False)):
    v = {}
    for p, rows in mem.items():
        if key == 'uss':
            v[p] = med(r['private_clean_kb'] + r['private_dirty_kb'] for r in rows) / 1024
        elif key == 'threads':
            v[p] = med(r['threads'] for r in rows)
        else:
            v[p] = med(r[key] for r in rows) / 1024
    r = v['doppel-gui'] / v['baseline']
    fmt = '{:.0f}' if key == 'threads' else '{:.1f}'
    tail = f'≤ {TARGET} | {verdict(r)}' if target else ' |'
    print(f'| {label} | {fmt.format(v["baseline"])} | {fmt.format(v["doppel-gui"])} | '
          f'{r:.2f} | {tail} |')
PY
echo "hyperfine JSON, per-run logs, screenshots and the tables: $OUT/" >&2
