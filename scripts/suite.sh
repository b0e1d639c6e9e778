# shellcheck shell=bash disable=SC2154
# Shared by the offline check suites (terraform/tests/run.sh, monitoring/test.sh);
# sourced, not run. Set `suite` (the name in messages) before sourcing, and
# `work` (a scratch directory) before the first `step`.
#   missing WHAT        a dependency is absent: under CI=true the suite fails
#                       (exit 1), elsewhere it says SKIPPED and exits 0.
#   step NAME CMD...    runs CMD with its output in $work, shown on failure;
#                       counts it in `passed` or `failed`.
#   suite_end           prints "<suite>: P passed, F failed (S s)" and returns
#                       non-zero when any step failed.
ci=${CI:-false}
start=$(date +%s)
passed=0
failed=0

missing() {
  if [ "$ci" = true ]; then
    echo "FAIL $suite: $1 is missing and CI=true" >&2
    echo "$suite: 0 passed, 1 failed"
    exit 1
  fi
  echo "SKIPPED $suite: $1 is missing"
  exit 0
}

step() {
  local name=$1
  shift
  local t0
  t0=$(date +%s)
  local log="$work/log-${name//\//_}"
  if "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "ok   $name ($(($(date +%s) - t0)) s)"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
    sed 's/^/     /' "$log"
  fi
}

suite_end() {
  echo "$suite: $passed passed, $failed failed ($(($(date +%s) - start)) s)"
  [ "$failed" = 0 ]
}
