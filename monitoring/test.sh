#!/usr/bin/env bash
# monitoring/test.sh: every offline check of monitoring/.
#
#   rules      promtool check rules on alerts.yml and recording.yml
#   config     promtool check config on prometheus.yml (and the rules it loads)
#   unit       promtool test rules on every rules/*_test.yml
#   static     check.py: each alert has for/severity/summary/description and a
#              firing and a silent test, each recording rule a query test; the
#              metrics below are exactly those the Rust sources register; the
#              rules, tests and dashboard name only those (or recorded ones);
#              prometheus.yml scrapes the ports terraform's config module uses
#   dashboard  grafana/meridian.json's expressions through promtool check rules
#   checker    check.py must refuse a metric name nobody exports
#
# Needs promtool (Debian's `prometheus` package, installed with apt-get when
# missing and run as root) and python3 with PyYAML (python3-yaml). Without them
# it says SKIPPED and exits 0, unless CI=true: then it fails. Offline.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck disable=SC2034 # read by scripts/suite.sh
suite=monitoring
# shellcheck source=../scripts/suite.sh
. "$root/scripts/suite.sh"

# The metrics the roles export: `type name`, the name as registered (counters
# gain _total, histograms _bucket/_sum/_count). check.py fails when this list
# and the Rust sources disagree, so a renamed metric cannot leave the rules and
# the dashboard silently looking at nothing.
KNOWN_METRICS='
# runtime (every role): runtime/src/health.rs, runtime/src/process.rs
counter   meridian_task_failures
counter   process_cpu_seconds
gauge     process_resident_memory_bytes
gauge     meridian_process_cpus
gauge     meridian_host_memory_bytes
# gateway: gateway/src/metrics.rs
histogram meridian_gateway_join_duration_seconds
counter   meridian_gateway_routing_decisions
counter   meridian_gateway_join_refusals
counter   meridian_gateway_http_responses
# SFU node: sfu/src/metrics.rs
gauge     meridian_sfu_rooms
gauge     meridian_sfu_participants
gauge     meridian_sfu_tracks
gauge     meridian_sfu_capacity
counter   meridian_sfu_forwarded_bytes
counter   meridian_sfu_heartbeat_failures
counter   meridian_sfu_signal_refusals
gauge     meridian_sfu_turn_relay_up
histogram meridian_sfu_subscriber_loss_ratio
histogram meridian_sfu_publisher_loss_ratio
histogram meridian_sfu_subscriber_jitter_seconds
histogram meridian_sfu_subscriber_rtt_seconds
gauge     meridian_sfu_webhook_queue
counter   meridian_sfu_webhook_delivered
counter   meridian_sfu_webhook_failures
counter   meridian_sfu_webhook_dropped
# TURN relay: turn-relay/src/metrics.rs
gauge     meridian_turn_allocations
counter   meridian_turn_gate_requests
gauge     meridian_turn_gate_sources
counter   meridian_turn_allocate_errors
'
export KNOWN_METRICS

# apt_install PACKAGE: as root with apt-get only; quiet; never fatal by itself.
apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 0
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$1" >/dev/null 2>&1 ||
    { apt-get update >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$1" >/dev/null 2>&1; } || true
}

command -v promtool >/dev/null || apt_install prometheus
command -v promtool >/dev/null || missing "promtool (apt-get install prometheus)"
command -v python3 >/dev/null || missing "python3"
python3 -c 'import yaml' 2>/dev/null || apt_install python3-yaml
python3 -c 'import yaml' 2>/dev/null || missing "PyYAML (apt-get install python3-yaml)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$here" || exit 1
step rules promtool check rules rules/alerts.yml rules/recording.yml
step config promtool check config prometheus.yml
tests=(rules/*_test.yml)
step unit promtool test rules "${tests[@]}"
step static python3 "$here/check.py" "$root" --dashboard-rules "$work/dashboard-rules.yml"
dashboard() {
  [ -s "$work/dashboard-rules.yml" ] || { echo "check.py wrote no dashboard expressions"; return 1; }
  promtool check rules "$work/dashboard-rules.yml"
}
step dashboard dashboard

# The name check must refuse what nobody exports; one that passes everything
# would make `static` worthless.
checker() {
  printf 'rate(meridian_sfu_forwarded_byte_total[5m])\nmeridian:sfu_lod:ratio\nprocess_cpu_seconds\n' >"$work/bad.promql"
  local out="$work/checker.out"
  if python3 "$here/check.py" "$root" --names-only "$work/bad.promql" >"$out" 2>&1; then
    echo "check.py accepted unknown metric names"
    return 1
  fi
  local rc=0 want
  for want in meridian_sfu_forwarded_byte_total meridian:sfu_lod:ratio "names process_cpu_seconds,"; do
    grep -qF "$want" "$out" || { echo "check.py did not report: $want"; rc=1; }
  done
  [ $rc = 0 ] && echo "check.py reports each planted name"
  cat "$out"
  return $rc
}
step checker checker

suite_end
