#!/usr/bin/env bash
# Writes a configuration for Debian's Janus 1.1.2 (the peer SFU of bench/loadtest.sh)
# into DIR: the VideoRoom plugin and the WebSocket transport only, bound to
# 127.0.0.1:PORT, ICE candidates on ICE_IP only, no event handlers, loggers or
# static rooms (the load tester creates its rooms).
# ICE_IP cannot be a loopback address: Janus skips loopback interfaces when it
# gathers (with `ice_enforce_list = "127.0.0.1"` it still gathered on every other
# interface, and in a namespace with only `lo` it failed with "Error gathering
# candidates"). bench/loadtest.sh gives it a veth address in its own namespace.
# Usage: bench/janus-config.sh DIR [PORT] [ICE_IP]
#   then: janus --configs-folder DIR --config DIR/janus.jcfg
set -euo pipefail
dir=${1:?usage: bench/janus-config.sh DIR [PORT]}
port=${2:-8188}
ice_ip=${3:-10.99.0.1}
lib=/usr/lib/x86_64-linux-gnu/janus
command -v janus >/dev/null || { apt-get update -qq && apt-get install -y -qq janus >/dev/null; }
mkdir -p "$dir/plugins" "$dir/transports" "$dir/events" "$dir/loggers"
ln -sf "$lib/plugins/libjanus_videoroom.so" "$dir/plugins/"
ln -sf "$lib/transports/libjanus_websockets.so" "$dir/transports/"
cat >"$dir/janus.jcfg" <<CFG
general: {
  configs_folder = "$dir"
  plugins_folder = "$dir/plugins"
  transports_folder = "$dir/transports"
  events_folder = "$dir/events"
  loggers_folder = "$dir/loggers"
  debug_level = 3
  session_timeout = 60
}
media: {
  rtp_port_range = "20000-40000"
}
nat: {
  nice_debug = false
  ice_enforce_list = "$ice_ip"
}
events: {
  broadcast = false
}
CFG
cat >"$dir/janus.transport.websockets.jcfg" <<CFG
general: {
  json = "plain"
  ws = true
  ws_port = $port
  ws_ip = "127.0.0.1"
  wss = false
}
admin: {
  admin_ws = false
  admin_wss = false
}
CFG
cat >"$dir/janus.plugin.videoroom.jcfg" <<CFG
general: {
}
CFG
