#!/usr/bin/env bash
# render.sh OUTDIR [TERRAFORM ARGS...]
#
# Renders the two-region loopback deployment of terraform/tests/render with
# `terraform apply` of the config module alone (outputs only, no provider)
# and writes what each host would get:
#   OUTDIR/<region>/gateway.toml, sfu.toml, turn.toml   (region: eu-west, us-east)
#   OUTDIR/<region>/<role>.cloud-init.yaml
#   OUTDIR/<role>.service
#   OUTDIR/ports.json, exposure.json, regions.json
# then checks that every TOML parses (tomllib) and uses only keys, with the
# value types, of docs/meridian.example.toml.
#
# Region eu-west listens on 127.0.1.1, us-east on 127.0.2.1, the gateway on
# 127.0.0.1:7880 (plain HTTP); the TURN TLS pair is read from OUTDIR/tls
# (turn.crt, turn.key), which the caller creates. DATABASE_URL, when set,
# is the database the files name (default postgres://postgres@127.0.0.1:5432/test).
# Extra arguments go to `terraform apply`, e.g. -var 'ports={"turn":13478}'.
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 OUTDIR [terraform apply args...]" >&2
  exit 2
fi
out=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)

export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "${TF_CLI_CONFIG_FILE:-}" ] || [ ! -f "$TF_CLI_CONFIG_FILE" ]; then
  : >"$work/terraformrc"
  export TF_CLI_CONFIG_FILE="$work/terraformrc"
fi

# The root module, in a scratch directory so that no state lands in the tree.
mkdir "$work/root"
sed "s#\"../../modules/config\"#\"$repo/terraform/modules/config\"#" "$here/render/main.tf" >"$work/root/main.tf"
vars=(-var "tls_dir=$out/tls")
if [ -n "${DATABASE_URL:-}" ]; then
  vars+=(-var "database_url=$DATABASE_URL")
fi
terraform -chdir="$work/root" init -backend=false -input=false >"$work/init.log" ||
  { cat "$work/init.log" >&2; exit 1; }
terraform -chdir="$work/root" apply -auto-approve -input=false "${vars[@]}" "$@" >"$work/apply.log" ||
  { cat "$work/apply.log" >&2; exit 1; }
terraform -chdir="$work/root" output -json >"$work/outputs.json"

python3 - "$work/outputs.json" "$out" "$repo/docs/meridian.example.toml" <<'PY'
import json, pathlib, sys, tomllib

outputs = json.loads(pathlib.Path(sys.argv[1]).read_text())
out = pathlib.Path(sys.argv[2])
example = tomllib.loads(pathlib.Path(sys.argv[3]).read_text())
v = {k: o["value"] for k, o in outputs.items()}

# What a rendered file may hold: the example's keys with their types.
allowed = {s: {k: type(x) for k, x in keys.items()} for s, keys in example.items()}

problems = []
for role, by_region in v["toml"].items():
    for region, text in by_region.items():
        path = out / region / f"{role}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            problems.append(f"{path}: does not parse: {e}")
            continue
        for section, keys in doc.items():
            if section not in allowed:
                problems.append(f"{path}: [{section}] is not a section of docs/meridian.example.toml")
                continue
            for key, value in keys.items():
                want = allowed[section].get(key)
                if want is None:
                    problems.append(f"{path}: {section}.{key} is not a key of docs/meridian.example.toml")
                elif type(value) is not want:
                    problems.append(f"{path}: {section}.{key} is {type(value).__name__}, the example's is {want.__name__}")
        if role in ("gateway", "sfu") and set(doc) != {"api", "database", role}:
            problems.append(f"{path}: sections {sorted(doc)}; want api, database, {role}")
        if role == "turn" and set(doc) != {"turn"}:
            problems.append(f"{path}: sections {sorted(doc)}; want turn only")

for role, by_region in v["cloud_init"].items():
    for region, text in by_region.items():
        (out / region / f"{role}.cloud-init.yaml").write_text(text)
for role, text in v["systemd_units"].items():
    (out / f"meridian-{role}.service").write_text(text)
for name in ("ports", "exposure", "regions"):
    (out / f"{name}.json").write_text(json.dumps(v[name], indent=2, sort_keys=True) + "\n")

for p in problems:
    print(f"FAIL {p}", file=sys.stderr)
files = sorted(str(p.relative_to(out)) for p in out.rglob("*.toml"))
print(f"render: {len(files)} TOML files in {out} ({', '.join(files)}): {len(problems)} problems")
sys.exit(1 if problems else 0)
PY
