#!/usr/bin/env bash
# Flood figures (docs/benchmarks.md, issue 11 item 7): a release `meridian dev`
# (gateway + SFU + TURN relay in one process) under floods, with real clients
# served at the same time. Flooders: bench/flood.py (stdlib Python).
#
# (a) TURN: unauthenticated Allocate requests from TURN_SOURCES spoofed source
#     addresses (raw socket, 10.76.0.0/15) at each rate of TURN_RATES (packets/s;
#     0 = as fast as one Python process sends, ~190k/s here), while coturn's turnutils_uclient relays client
#     to client through the same relay (UCLIENT flags). RUNS runs each without and
#     with the flood, alternated, then one run with BIG_SOURCES sources (more than
#     the gate's 65 536-source table holds). Per run: the client's loss, packets
#     the flooder sent and its rate, the gate's counters (/metrics deltas), the
#     kernel's UDP receive-buffer drops, and the relay's RSS before, peak and after.
# (b) Signal: through the gateway, WS_DROP TCP connections to /rtc dropped without
#     a token (after connect, mid request line, or an upgrade without a token: 401),
#     and WS_GARBAGE upgrades with a valid token that send garbage binary frames;
#     meanwhile well-behaved clients join (mint a token, open /rtc, wait for the
#     JoinResponse) every JOIN_INTERVAL s. RUNS runs, after a baseline without flood.
#     Per run: join successes and latency, flood outcomes, RSS before/peak/after.
#
# Everything runs in a network namespace of its own (`ip netns`, removed on exit):
# 10.78.0.1 on its loopback for Meridian, and `ip route add local 10.76.0.0/15 dev
# lo` so the flooders own 131 070 source addresses. Meridian is pinned to core 0,
# flooders and clients to core 1. Every loop is bounded by count and time.
#
# Defaults: RUNS=3, TURN_SOURCES=50000, BIG_SOURCES=120000, TURN_RATES="20000 0",
# UCLIENT="-y -c -m 10 -n 1000 -l 200" (10 clients, 50 msgs/s each, 20 s),
# WS_DROP=20000, WS_GARBAGE=2000, FLOOD_SECS=25, JOIN_INTERVAL=0.25,
# PARTS="turn signal" (either or both); NO_BUILD=1
# uses the release build as it is. Figures and logs go to OUT (target/flood).
set -euo pipefail
cd "$(dirname "$0")/.."
NS=${FLOOD_NS:-meridian-flood-$$}
if [ -z "${FLOOD_IN_NETNS:-}" ]; then
  command -v turnutils_uclient >/dev/null || { apt-get update -qq && apt-get install -y -qq coturn >/dev/null; }
  [ -n "${NO_BUILD:-}" ] || nice -n 10 cargo build --release -p meridian --bin meridian
  ip netns add "$NS"
  # Processes left in the namespace are ours (it was made above); then the namespace
  # goes, and with it its addresses and routes.
  trap 'for p in $(ip netns pids "$NS" 2>/dev/null); do kill "$p" 2>/dev/null || true; done; sleep 0.5; ip netns del "$NS" 2>/dev/null || true' EXIT
  ip netns exec "$NS" env FLOOD_IN_NETNS=1 FLOOD_NS="$NS" bash "$0" "$@"
  exit $?
fi

RUNS=${RUNS:-3}
TURN_SOURCES=${TURN_SOURCES:-50000}
BIG_SOURCES=${BIG_SOURCES:-120000}
TURN_RATES=${TURN_RATES:-"20000 0"}
UCLIENT=${UCLIENT:-"-y -c -m 10 -n 1000 -l 200"}
WS_DROP=${WS_DROP:-20000}
WS_GARBAGE=${WS_GARBAGE:-2000}
FLOOD_SECS=${FLOOD_SECS:-25}
JOIN_INTERVAL=${JOIN_INTERVAL:-0.25}
PARTS=${PARTS:-"turn signal"}
IP=10.78.0.1
GW=$IP:7880
SECRET=flood-turn-secret
BIN=target/release/meridian
FLOOD="python3 bench/flood.py"
WORK=$(mktemp -d)
OUT=${OUT:-target/flood}
mkdir -p "$OUT"
MERIDIAN=
SAMPLER=
BG=()
cleanup() {
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
  for p in "${BG[@]}"; do kill "$p" 2>/dev/null; done
  [ -n "$MERIDIAN" ] && kill "$MERIDIAN" 2>/dev/null
  cp "$WORK"/*.log "$OUT"/ 2>/dev/null
  rm -rf "$WORK"
}
trap 'cleanup || true' EXIT

ip link set lo up
ip addr add "$IP/32" dev lo
ip route add local 10.76.0.0/15 dev lo
ulimit -n "$(ulimit -Hn)"

start_meridian() { # log name
  taskset -c 0 "$BIN" dev --bind "$IP" --turn-secret "$SECRET" >"$WORK/$1.log" 2>&1 &
  MERIDIAN=$!
  for _ in $(seq 1 100); do grep -qs "Meridian dev is up" "$WORK/$1.log" && break; sleep 0.2; done
  grep -q "Meridian dev is up" "$WORK/$1.log" || { cat "$WORK/$1.log"; echo "meridian dev did not start" >&2; exit 1; }
  sleep 1
}
stop_meridian() { kill "$MERIDIAN"; wait "$MERIDIAN" 2>/dev/null || true; MERIDIAN=; }

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$MERIDIAN/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# RSS sampled every 0.2 s from sampler_start to sampler_stop, which prints the peak (KiB).
sampler_start() {
  (while kill -0 "$MERIDIAN" 2>/dev/null; do rss_kb; sleep 0.2; done) >"$WORK/rss" &
  SAMPLER=$!
}
sampler_stop() { kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=; sort -n "$WORK/rss" | tail -n1; }
metric() { # name [substring]: the value summed over the series of name whose line holds substring
  curl -s "http://$GW/metrics" | awk -v m="$1" -v f="${2:-}" 'index($0, m) == 1 && index($0, f) { s += $NF } END { printf "%d", s }'
}
rcvbuf_errors() { awk '/^Udp:/ { if (++n == 2) print $6 }' /proc/net/snmp; }
lines() { wc -l <"$WORK/$1.log"; }

# --- (a) TURN -----------------------------------------------------------------
uclient() { # prints "sent received loss_percent"
  # shellcheck disable=SC2086
  taskset -c 1 timeout 120 turnutils_uclient -u flood -W "$SECRET" $UCLIENT -p 3478 "$IP" >"$WORK/uclient" 2>&1 || true
  local s r l
  s=$(grep -o 'tot_send_msgs=[0-9]*' "$WORK/uclient" | tail -n1 | cut -d= -f2)
  r=$(grep -o 'tot_recv_msgs=[0-9]*' "$WORK/uclient" | tail -n1 | cut -d= -f2)
  l=$(grep -o 'Total lost packets [0-9]* ([0-9.]*%)' "$WORK/uclient" | tail -n1 | sed 's/.*(\(.*\)%)/\1/')
  echo "${s:-0} ${r:-0} ${l:-100}"
}

turn_run() { # label sources(0 = no flood) rate(packets/s, 0 = max)
  local label=$1 sources=$2 rate_limit=${3:-0} g=meridian_turn_gate_requests_total
  local c0 f0 r0 k0 n0 rss0
  c0=$(metric "$g" 'outcome="challenged"')
  f0=$(metric "$g" 'outcome="refused"')
  r0=$(metric "$g" 'outcome="rate_limited"')
  k0=$(rcvbuf_errors); n0=$(lines turn); rss0=$(rss_kb)
  sampler_start
  local flood=
  if [ "$sources" -gt 0 ]; then
    taskset -c 1 $FLOOD turn --dst "$IP:3478" --source-count "$sources" --duration "$FLOOD_SECS" \
      --rate "$rate_limit" --count 5000000 >"$WORK/flood.out" &
    flood=$!
    BG+=("$flood")
    sleep 1
  fi
  local uc; uc=$(uclient)
  [ -n "$flood" ] && wait "$flood"
  sleep 2.5 # the gate's counters reach /metrics every 2 s
  local peak; peak=$(sampler_stop)
  sleep 3
  local after; after=$(rss_kb)
  local sent=0 rate=0
  if [ -n "$flood" ]; then
    sent=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sent"])' "$WORK/flood.out")
    rate=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rate"])' "$WORK/flood.out")
  fi
  printf '%s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s\n' \
    "$label" "$sources" "$sent" "$rate" $uc \
    "$(($(metric "$g" 'outcome="challenged"') - c0))" \
    "$(($(metric "$g" 'outcome="refused"') - f0))" \
    "$(($(metric "$g" 'outcome="rate_limited"') - r0))" \
    "$(metric meridian_turn_gate_sources)" \
    "$(($(rcvbuf_errors) - k0))" "$(mib "$rss0")" "$(mib "$peak")" "$(mib "$after")" "$(($(lines turn) - n0))"
}

if [[ " $PARTS " == *" turn "* ]]; then
start_meridian turn
echo "## (a) TURN: unauthenticated Allocate flood vs. turnutils_uclient $UCLIENT"
echo "run | flood sources | flood packets | flood pkt/s | client sent | client received | client loss % | challenged | refused | rate_limited | gate sources (after) | UDP rcvbuf drops | RSS before MiB | RSS peak MiB | RSS after MiB | log lines"
for i in $(seq 1 "$RUNS"); do
  turn_run "no flood $i" 0
  for r in $TURN_RATES; do turn_run "flood $i at ${r/#0/max} pkt/s" "$TURN_SOURCES" "$r"; done
done
turn_run "flood big, at max pkt/s" "$BIG_SOURCES" 0
turn_run "no flood after" 0
echo "relay RSS at the end: $(mib "$(rss_kb)") MiB, peak over the whole part (VmHWM): $(awk '/VmHWM/ {printf "%.1f", $2/1024}' /proc/$MERIDIAN/status) MiB"
echo "log lines at level WARN or above: $(grep -cE ' (WARN|ERROR) ' "$WORK/turn.log" || true); log file: $OUT/turn.log"
stop_meridian
fi

# --- (b) signal -------------------------------------------------------------------
[[ " $PARTS " == *" signal "* ]] || exit 0
start_meridian signal
$FLOOD mint --gw "$GW" --count 200 >"$WORK/tokens"
echo
echo "## (b) signal: /rtc floods through the gateway vs. well-behaved joins every ${JOIN_INTERVAL} s"
echo "run | good joins ok/attempted | join p50 ms | join p95 ms | join max ms | drop flood (conns, conn/s) | drop outcomes | garbage flood (conns, conn/s) | garbage outcomes | RSS before MiB | RSS peak MiB | RSS after MiB | log lines"
signal_run() { # label flood(0/1)
  local label=$1 flood=$2 rss0 n0 pids=()
  rss0=$(rss_kb); n0=$(lines signal)
  sampler_start
  if [ "$flood" = 1 ]; then
    taskset -c 1 $FLOOD ws-drop --gw "$GW" --sources 10.76.0.0/15 --count "$WS_DROP" --concurrency 100 \
      --duration "$FLOOD_SECS" >"$WORK/drop.out" &
    pids+=($!)
    taskset -c 1 $FLOOD ws-garbage --gw "$GW" --sources 10.76.0.0/15 --tokens "$WORK/tokens" --count "$WS_GARBAGE" \
      --concurrency 32 --duration "$FLOOD_SECS" >"$WORK/garbage.out" &
    pids+=($!)
    BG+=("${pids[@]}")
    sleep 1
  fi
  local joins_n; joins_n=$(awk -v d="$FLOOD_SECS" -v i="$JOIN_INTERVAL" 'BEGIN { printf "%d", (d - 2) / i }')
  taskset -c 1 $FLOOD joins --gw "$GW" --count "$joins_n" --interval "$JOIN_INTERVAL" --duration "$FLOOD_SECS" >"$WORK/joins.out"
  for p in "${pids[@]}"; do wait "$p" || true; done
  local peak; peak=$(sampler_stop)
  sleep 5
  python3 - "$label" "$flood" "$WORK" "$(mib "$rss0")" "$(mib "$peak")" "$(mib "$(rss_kb)")" "$(($(lines signal) - n0))" <<'EOF'
import json, sys
label, flood, work, r0, rp, ra, logs = sys.argv[1:]
j = json.load(open(f"{work}/joins.out"))
def f(name):
    if flood != "1":
        return "-", "-"
    d = json.load(open(f"{work}/{name}.out"))
    return f"{sum(d['outcomes'].values())}, {d['rate']}", "; ".join(f"{k}: {v}" for k, v in sorted(d["outcomes"].items()))
(dn, do), (gn, go) = f("drop"), f("garbage")
fails = "" if not j["failures"] else " (" + "; ".join(f"{k}: {v}" for k, v in j["failures"].items()) + ")"
print(f"{label} | {j['joined']}/{j['attempted']}{fails} | {j['latency_ms_p50']} | {j['latency_ms_p95']} | {j['latency_ms_max']} | {dn} | {do} | {gn} | {go} | {r0} | {rp} | {ra} | {logs}")
EOF
}
signal_run "no flood" 0
for i in $(seq 1 "$RUNS"); do signal_run "flood $i" 1; done
signal_run "no flood after" 0
echo "gateway join refusals: $(curl -s "http://$GW/metrics" | grep -E '^meridian_gateway_join_refusals' | tr '\n' ' ')"
echo "SFU signal refusals: $(curl -s "http://$GW/metrics" | grep -E '^meridian_sfu_signal_refusals' | tr '\n' ' ')"
echo "meridian RSS at the end: $(mib "$(rss_kb)") MiB, VmHWM $(awk '/VmHWM/ {printf "%.1f", $2/1024}' /proc/$MERIDIAN/status) MiB"
echo "log lines at level WARN or above: $(grep -cE ' (WARN|ERROR) ' "$WORK/signal.log" || true); log file: $OUT/signal.log"
stop_meridian
