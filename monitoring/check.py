#!/usr/bin/env python3
"""Static checks of monitoring/ that promtool does not make; run by test.sh.

  coverage   every alert of rules/alerts.yml has a `for:`, a severity, a summary
             and a description, and a test in rules/*_test.yml where it fires
             and one where it stays silent; every recording rule is queried by a
             promql_expr_test
  registered the known metrics (KNOWN_METRICS, kept in test.sh) are exactly the
             ones the Rust sources register: a metric renamed, added or removed
             in the code fails here until the list, the rules and the dashboard
             follow
  names      every metric the rules, their tests, the dashboard and the Grafana
             variables name is a known metric (with its exposition suffixes),
             a recorded series, or `up`
  dashboard  the JSON parses, every panel has targets, and their expressions
             (template variables filled in) are written to a rules file for
             promtool check rules (--dashboard-rules)
  ports      prometheus.yml scrapes the ports terraform/modules/config's
             `ports` defaults to

Usage: check.py ROOT [--dashboard-rules OUT] [--names-only FILE...]
"""

import json
import os
import re
import sys
from pathlib import Path

import yaml

SUFFIXES = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
# An identifier that looks like one of ours; label values such as
# job="meridian-sfu" do not match (a hyphen, no underscore after meridian).
NAME = re.compile(r"(?<![A-Za-z0-9_:])((?:meridian[_:]|process_)[A-Za-z0-9_:]*)")

errors = []


def fail(msg):
    errors.append(msg)


def known_metrics():
    """(type, base name) pairs from KNOWN_METRICS: one `type name` a line."""
    out = []
    for line in os.environ.get("KNOWN_METRICS", "").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        kind, name = line.split()
        if kind not in SUFFIXES:
            fail(f"KNOWN_METRICS: {name} has unknown type {kind}")
            continue
        out.append((kind, name))
    if not out:
        fail("KNOWN_METRICS is empty")
    return out


def registered(root):
    """Base names the Rust sources register: `sub_registry_with_prefix("p")` +
    `.register("n", ...)`, a top-level `.register("n", ...)`, and the names a
    `Collector` encodes (string literals that look like metric names)."""
    names = set()
    for path in sorted([*root.glob("*/src/**/*.rs"), *root.glob("src/**/*.rs")]):
        if path.parts[len(root.parts)] in ("target", "fuzz", "bench"):
            continue
        text = path.read_text()
        prefixes = re.findall(r'sub_registry_with_prefix\(\s*"([a-z0-9_]+)"\s*\)', text)
        regs = re.findall(r'\.register\(\s*"([a-z0-9_]+)"', text)
        if len(set(prefixes)) > 1:
            fail(f"{path}: more than one metric prefix; teach check.py which register() goes with which")
        for n in regs:
            names.add(f"{prefixes[0]}_{n}" if prefixes else n)
        if "impl Collector for" in text:
            body = text.split("#[cfg(test)]", 1)[0]
            names.update(re.findall(r'"((?:process|meridian)_[a-z0-9_]+)"', body))
    return names


def exposed(known):
    return {name + s for kind, name in known for s in SUFFIXES[kind]}


def names_in(text):
    return set(NAME.findall(text))


def check_names(where, text, allowed):
    for n in sorted(names_in(text) - allowed):
        fail(f"{where}: names {n}, which no role exports and no rule records")


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def rules_of(doc):
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            yield rule


def coverage(rules_dir, alerts, records):
    firing, silent, queried = set(), set(), ""
    for test_file in sorted(rules_dir.glob("*_test.yml")):
        doc = load(test_file)
        for test in doc.get("tests", []):
            for a in test.get("alert_rule_test", []) or []:
                (firing if a.get("exp_alerts") else silent).add(a["alertname"])
            for q in test.get("promql_expr_test", []) or []:
                queried += q["expr"] + "\n"
    for rule in alerts:
        name = rule["alert"]
        if "for" not in rule:
            fail(f"alert {name}: no `for:`")
        if (rule.get("labels") or {}).get("severity") not in ("critical", "warning"):
            fail(f"alert {name}: severity label is not critical or warning")
        ann = rule.get("annotations") or {}
        for key in ("summary", "description"):
            if not ann.get(key):
                fail(f"alert {name}: no {key} annotation")
        if name not in firing:
            fail(f"alert {name}: no test where it fires")
        if name not in silent:
            fail(f"alert {name}: no test where it stays silent")
    for name in records:
        if not re.search(re.escape(name) + r"(?![A-Za-z0-9_:])", queried):
            fail(f"recording rule {name}: no promql_expr_test queries it")
        if not name.startswith("meridian:"):
            fail(f"recording rule {name}: not named meridian:...")


def dashboard(path, allowed, rules_out):
    try:
        dash = json.loads(path.read_text())
    except ValueError as e:
        fail(f"{path}: not JSON: {e}")
        return
    exprs = []
    for panel in dash.get("panels", []):
        if panel.get("type") == "row":
            continue
        targets = panel.get("targets") or []
        if not targets:
            fail(f"{path}: panel {panel.get('title')!r} has no targets")
        for t in targets:
            exprs.append((panel.get("title"), t.get("expr", "")))
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        if var.get("type") == "query":
            check_names(f"{path}: variable {var['name']}", q, allowed)
    for title, expr in exprs:
        if not expr.strip():
            fail(f"{path}: panel {title!r} has an empty expression")
        check_names(f"{path}: panel {title!r}", expr, allowed)
    if rules_out:
        filled = [re.sub(r"\$\{?[A-Za-z_]+\}?", ".*", e) for _, e in exprs]
        doc = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(filled)]}]}
        Path(rules_out).write_text(yaml.safe_dump(doc, sort_keys=False))
    print(f"dashboard: {len(exprs)} expressions in {len(dash.get('panels', []))} panels")


def ports(root):
    variables = (root / "terraform/modules/config/variables.tf").read_text()
    want = {}
    for key in ("gateway_listen", "sfu_metrics", "turn_metrics"):
        m = re.search(rf"{key}\s*=\s*optional\(number,\s*(\d+)\)", variables)
        if not m:
            fail(f"terraform/modules/config/variables.tf: no default for ports.{key}")
            continue
        want[key] = m.group(1)
    jobs = {"gateway_listen": "meridian-gateway", "sfu_metrics": "meridian-sfu", "turn_metrics": "meridian-turn"}
    config = load(root / "monitoring/prometheus.yml")
    by_job = {j["job_name"]: j for j in config.get("scrape_configs", [])}
    for key, job in jobs.items():
        if key not in want:
            continue
        scrape = by_job.get(job)
        if scrape is None:
            fail(f"prometheus.yml: no job {job}")
            continue
        targets = [r.get("replacement", "") for r in scrape.get("relabel_configs", [])
                   if r.get("target_label") == "__address__"]
        targets += [t for s in scrape.get("static_configs", []) for t in s.get("targets", [])]
        used = {t.rsplit(":", 1)[-1] for t in targets}
        if used != {want[key]}:
            fail(f"prometheus.yml: job {job} scrapes port(s) {sorted(used)}, ports.{key} is {want[key]}")
    print(f"ports: {', '.join(f'{k} {v}' for k, v in want.items())}")


def main():
    args = sys.argv[1:]
    root = Path(args.pop(0)).resolve()
    rules_out = None
    if args[:1] == ["--dashboard-rules"]:
        rules_out = args[1]
        args = args[2:]
    known = known_metrics()
    alerts_doc = load(root / "monitoring/rules/alerts.yml")
    recording_doc = load(root / "monitoring/rules/recording.yml")
    records = [r["record"] for r in rules_of(recording_doc)]
    allowed = exposed(known) | set(records) | {"up"}

    if args[:1] == ["--names-only"]:
        # The checker's own test: these files must fail.
        for f in args[1:]:
            check_names(f, Path(f).read_text(), allowed)
    else:
        alerts = [r for r in rules_of(alerts_doc) if "alert" in r]
        coverage(root / "monitoring/rules", alerts, records)
        print(f"coverage: {len(alerts)} alerts, {len(records)} recording rules")

        code = registered(root)
        listed = {name for _, name in known}
        for n in sorted(code - listed):
            fail(f"the code registers {n}, which KNOWN_METRICS in monitoring/test.sh does not list")
        for n in sorted(listed - code):
            fail(f"KNOWN_METRICS lists {n}, which no Rust source registers (renamed or removed?)")
        print(f"registered: {len(code)} metrics in the Rust sources")

        for f, doc in [("rules/alerts.yml", alerts_doc), ("rules/recording.yml", recording_doc)]:
            for rule in rules_of(doc):
                check_names(f"{f}: {rule.get('alert') or rule.get('record')}", rule["expr"], allowed)
        for path in sorted((root / "monitoring/rules").glob("*_test.yml")):
            for test in load(path).get("tests", []):
                text = "\n".join([s["series"] for s in test.get("input_series", [])] +
                                  [q["expr"] for q in test.get("promql_expr_test", []) or []])
                check_names(f"rules/{path.name}: {test.get('name')}", text, allowed)
        dashboard(root / "monitoring/grafana/meridian.json", allowed, rules_out)
        ports(root)

    for e in errors:
        print(f"  {e}", file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
