#!/usr/bin/env bash
# terraform/tests/run.sh: every offline check of terraform/.
#
#   fmt         terraform fmt -check -recursive terraform/
#   validate    init -backend=false + validate of the provider-free modules
#               (config, egress, tests/render, tests/templates)
#   test        terraform test of the config module (tests/*.tftest.hcl)
#   render      render.sh: apply the config module alone for two regions on
#               loopback, write the files, check them against
#               docs/meridian.example.toml
#   scripts     the platform scripts rendered and checked with sh -n (and
#               ShellCheck, when installed)
#   static      check_modules.py over every module and example (python-hcl2)
#   checker     check_modules.py reports each planted mistake of tests/fixtures
#
# Needs terraform (>= 1.9) and python3 with python-hcl2 (installed with pip
# when missing). Without them it says SKIPPED and exits 0, unless CI=true:
# then it fails. Nothing is downloaded by terraform; no state lands in the tree.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tf=$(cd "$here/.." && pwd)
# shellcheck disable=SC2034 # read by scripts/suite.sh
suite=terraform
# shellcheck source=../../scripts/suite.sh
. "$tf/../scripts/suite.sh"

command -v terraform >/dev/null || missing "terraform (/usr/local/bin/terraform, >= 1.9)"
command -v python3 >/dev/null || missing "python3"
if ! python3 -c 'import hcl2' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check 'python-hcl2>=7,<9' >/dev/null 2>&1 || true
  python3 -c 'import hcl2' 2>/dev/null || missing "python-hcl2 (pip install python-hcl2)"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0
if [ -z "${TF_CLI_CONFIG_FILE:-}" ] || [ ! -f "$TF_CLI_CONFIG_FILE" ]; then
  : >"$work/terraformrc"
  export TF_CLI_CONFIG_FILE="$work/terraformrc"
fi

# A provider-free module, initialised and validated with its data directory
# outside the tree.
validate() {
  local dir=$1
  local data="$work/data/${dir//\//_}"
  TF_DATA_DIR=$data terraform -chdir="$tf/$dir" init -backend=false -input=false &&
    TF_DATA_DIR=$data terraform -chdir="$tf/$dir" validate
}

config_test() {
  TF_DATA_DIR="$work/data/config-test" terraform -chdir="$tf/modules/config" init -backend=false -input=false &&
    TF_DATA_DIR="$work/data/config-test" terraform -chdir="$tf/modules/config" test
}

scripts() {
  local data="$work/data/templates"
  TF_DATA_DIR=$data terraform -chdir="$tf/tests/templates" init -backend=false -input=false >/dev/null &&
    TF_DATA_DIR=$data terraform -chdir="$tf/tests/templates" apply -auto-approve -input=false \
      -state="$work/templates.tfstate" >/dev/null &&
    TF_DATA_DIR=$data terraform -chdir="$tf/tests/templates" output -state="$work/templates.tfstate" -json scripts >"$work/scripts.json" || return 1
  mkdir -p "$work/scripts"
  python3 -c '
import json, pathlib, sys
for name, text in json.load(open(sys.argv[1])).items():
    pathlib.Path(sys.argv[2], name).write_text(text)
' "$work/scripts.json" "$work/scripts" || return 1
  local s rc=0
  for s in "$work"/scripts/*; do
    sh -n "$s" || { echo "sh -n: $(basename "$s")"; rc=1; }
    if command -v shellcheck >/dev/null; then
      shellcheck -s sh "$s" || rc=1
    fi
  done
  local count
  count=$(find "$work/scripts" -type f | wc -l)
  if command -v shellcheck >/dev/null; then
    echo "$count scripts, sh -n and shellcheck clean"
  else
    echo "$count scripts, sh -n clean (no shellcheck)"
  fi
  return $rc
}

static() {
  python3 "$here/check_modules.py" --ports "$work/render/ports.json" --exposure "$work/render/exposure.json"
}

# The checker must report each planted mistake; a checker that passes
# everything would make `static` worthless.
checker() {
  local log="$work/checker.out"
  if python3 "$here/check_modules.py" --ports "$work/render/ports.json" --exposure "$work/render/exposure.json" \
    "$here/fixtures/region" >"$log" 2>&1; then
    echo "check_modules.py passed tests/fixtures/region, which is wrong on purpose"
    cat "$log"
    return 1
  fi
  local rc=0 want
  for want in \
    "variable undescribed: has no description" \
    "variable untyped: has no type" \
    "output undescribed: has no description" \
    "var.somewhere is not declared" \
    "passes colour, which ../../../modules/egress does not declare" \
    "does not pass region_id" \
    "signal_to_the_world: admits internet to sfu_signal" \
    "ssh: from_port = 22 is written out" \
    "ice_over_tcp: opens sfu_udp over 'tcp'" \
    "ports has no rtmp" \
    "aws_lb_target_group.literal: port = 7881 is written out" \
    "port 7881 written out"; do
    grep -qF -- "$want" "$log" || { echo "not reported: $want"; rc=1; }
  done
  [ $rc = 0 ] && echo "all $(grep -c '^FAIL' "$log") planted mistakes reported"
  return $rc
}

step fmt terraform fmt -check -recursive -diff "$tf"
for dir in modules/config modules/egress tests/render tests/templates; do
  step "validate:$dir" validate "$dir"
done
step "test:modules/config" config_test
step render "$here/render.sh" "$work/render"
step scripts scripts
if [ -f "$work/render/ports.json" ]; then
  step static static
  step checker checker
else
  failed=$((failed + 2))
  echo "FAIL static, checker: render wrote no ports.json"
fi

suite_end
