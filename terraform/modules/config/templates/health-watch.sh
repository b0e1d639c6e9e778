#!/bin/sh
# health-watch ROLE URL: restart meridian-ROLE after three failed GET URL in a
# row. A unit that is not active (starting, stopping, draining) is not judged.
set -u
role=$1
url=$2
state=/run/meridian-health-$role
if ! systemctl is-active --quiet "meridian-$role"; then
  echo 0 >"$state"
  exit 0
fi
if curl -fsS -m 3 -o /dev/null "$url"; then
  echo 0 >"$state"
  exit 0
fi
n=$(($(cat "$state" 2>/dev/null || echo 0) + 1))
echo "$n" >"$state"
if [ "$n" -ge 3 ]; then
  logger -t meridian-health "$url failed $n times in a row; restarting meridian-$role"
  echo 0 >"$state"
  systemctl restart "meridian-$role"
fi
