#!/usr/bin/env bash
# TURN relay benchmark (docs/benchmarks.md): Meridian's relay (`meridian turn`,
# release build) and coturn (Debian's turnserver) on this machine, loaded in turn
# by the same coturn client, `turnutils_uclient`, over channels, UDP.
#
# Loads (override with LOADS="name:flags;..."):
#   light  -y -m 50  -n 5000 -l 1200 -z 1   50 clients, 1 message/ms each, 1200 bytes,
#                                           client to client through the relay
#   heavy  -y -m 100 -n 3000 -l 1200 -z 1   100 clients, client to client
#   peer   -m 50 -n 5000 -l 1200 -z 1 -e 127.0.0.1 -r 34800
#                                           50 clients to an echoing peer outside
#                                           the relay (coturn's turnutils_peer)
# Client to client, both allocations are on the relay; Meridian passes bound
# channels' data from one client to the other directly (a hairpin, see
# turn-relay/src/channel_data.rs), coturn through its relayed sockets. The peer load
# crosses the relayed sockets on both servers.
# For each run: messages the clients got back, messages per second over the
# client's own transmit time (whole seconds, as it prints them), loss, the server's CPU seconds
# (utime+stime from /proc), CPU microseconds per message received, and the
# server's peak RSS (VmHWM). Every message crosses the relay twice (client to
# relay to relay to client). RUNS runs per load and server
# (default 3), alternated; medians and Meridian/coturn ratios are printed.
# Servers are pinned to core 0, the client to core 1.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v turnserver >/dev/null && command -v turnutils_uclient >/dev/null || {
  apt-get update -qq && apt-get install -y -qq coturn >/dev/null
}
cargo build --release --bin meridian
BIN=target/release/meridian
RUNS=${RUNS:-3}
PEER_PORT=34800
LOADS=${LOADS:-"light:-y -m 50 -n 5000 -l 1200 -z 1;heavy:-y -m 100 -n 3000 -l 1200 -z 1;peer:-m 50 -n 5000 -l 1200 -z 1 -e 127.0.0.1 -r $PEER_PORT"}
SECRET=bench-turn-secret
OURS_PORT=34780
COTURN_PORT=34790
WORK=$(mktemp -d)
SERVER=
# The echoing peer for the peer load, on the client's core.
taskset -c 1 turnutils_peer -L 127.0.0.1 -p "$PEER_PORT" >/dev/null 2>&1 &
PEER=$!
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; kill "$PEER" 2>/dev/null; rm -rf "$WORK"' EXIT

start_ours() {
  RUST_LOG=warn taskset -c 0 "$BIN" turn --turn-listen "127.0.0.1:$OURS_PORT" --turn-relay-ip 127.0.0.1 \
    --turn-secret "$SECRET" --turn-allow-peer 127.0.0.0/8 --turn-bandwidth-cap 0 --turn-user-quota 1000 \
    >"$WORK/ours.log" 2>&1 &
  SERVER=$!
  PORT=$OURS_PORT
}

start_coturn() {
  # coturn as users run it for this, with loopback peers allowed for the comparison.
  taskset -c 0 turnserver -n --listening-ip 127.0.0.1 --relay-ip 127.0.0.1 --listening-port "$COTURN_PORT" \
    --use-auth-secret --static-auth-secret "$SECRET" --realm meridian --allow-loopback-peers \
    --no-tls --no-dtls --no-cli --no-tcp-relay --log-file stdout --simple-log \
    >"$WORK/coturn.log" 2>&1 &
  SERVER=$!
  PORT=$COTURN_PORT
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
peak_rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# One run: prints "received loss_percent cpu_seconds cpu_us_per_msg peak_rss_mib msgs_per_s".
run_one() {
  local server=$1 flags=$2
  "start_$server"
  sleep 1
  local before; before=$(cpu_ticks "$SERVER")
  # shellcheck disable=SC2086
  taskset -c 1 timeout 300 turnutils_uclient -u bench -W "$SECRET" -c $flags -p "$PORT" 127.0.0.1 >"$WORK/client.log" 2>&1 || true
  local after; after=$(cpu_ticks "$SERVER")
  local rss; rss=$(peak_rss_kb "$SERVER")
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
  local recv; recv=$(grep -o 'tot_recv_msgs=[0-9]*' "$WORK/client.log" | tail -n1 | cut -d= -f2)
  local loss; loss=$(grep -o 'Total lost packets [0-9]* ([0-9.]*%)' "$WORK/client.log" | tail -n1 | sed 's/.*(\(.*\)%)/\1/')
  local secs; secs=$(grep -o 'Total transmit time is [0-9]*' "$WORK/client.log" | tail -n1 | awk '{print $5}')
  local hz; hz=$(getconf CLK_TCK)
  awk -v r="${recv:-0}" -v l="${loss:-100}" -v c=$((after - before)) -v hz="$hz" -v m="$rss" -v t="${secs:-0}" \
    'BEGIN { printf "%d %.2f %.2f %.2f %.1f %.0f\n", r, l, c / hz, (r > 0 ? c / hz / r * 1e6 : 0), m / 1024, (t > 0 ? r / t : 0) }'
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "load | server | received | msgs/s | loss % | CPU s | CPU µs/msg | peak RSS MiB | runs (CPU µs/msg)"
IFS=';' read -ra loads <<<"$LOADS"
for load in "${loads[@]}"; do
  name=${load%%:*}; flags=${load#*:}
  : >"$WORK/ours.runs"; : >"$WORK/coturn.runs"
  for _ in $(seq 1 "$RUNS"); do
    run_one ours "$flags" >>"$WORK/ours.runs"
    run_one coturn "$flags" >>"$WORK/coturn.runs"
  done
  col() { cut -d' ' -f"$2" "$WORK/$1.runs" | median; }
  for server in ours coturn; do
    printf '%s | %s | %s | %s | %s | %s | %s | %s | %s\n' "$name" "$server" "$(col "$server" 1)" "$(col "$server" 6)" "$(col "$server" 2)" \
      "$(col "$server" 3)" "$(col "$server" 4)" "$(col "$server" 5)" "$(cut -d' ' -f4 "$WORK/$server.runs" | tr '\n' ' ')"
  done
  awk -v o="$(col ours 4)" -v c="$(col coturn 4)" -v n="$name" \
    'BEGIN { printf "%s | CPU per message, Meridian/coturn: %.2f\n", n, (c > 0 ? o / c : 0) }'
done
