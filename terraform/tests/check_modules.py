#!/usr/bin/env python3
"""Static checks of the Terraform modules, for what `terraform validate` cannot
see offline (the AWS modules need a provider binary that cannot be downloaded
here) and for what it never checks.

    check_modules.py --ports PORTS.json --exposure EXPOSURE.json [DIR...]

PORTS.json and EXPOSURE.json are the config module's `ports` and `exposure`
outputs (`terraform output -json`, written by render.sh). DIRs default to
every module and example under terraform/.

Checks, each failure naming the file and block:
  interface   every variable has a type and a description, every output a
              description;
  references  every var.X is declared and every local.X defined in its module;
              every module call passes only variables the module declares and
              every variable it requires, and module.M.OUT names an output M has;
  ports       in the AWS modules, every port a security group rule opens (and
              every listener, target group, health check and database port) is
              a var.ports.KEY reference, never a number; each ingress rule
              matches a rule of `exposure` (same ports keys, a protocol it
              lists, a source it allows: 0.0.0.0/0 only where it says
              "internet"); and, the other way, every exposure rule is opened
              for each protocol and source it lists; no port number is written
              out in a module's files, templates included.
Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

try:
    import hcl2
except ImportError:  # run.sh installs it; say so plainly otherwise
    sys.exit("check_modules.py needs python-hcl2 (pip install python-hcl2)")

TERRAFORM = pathlib.Path(__file__).resolve().parent.parent

# Which module opens the ports of which role (exposure[*].role).
ROLE_MODULE = {
    "gateway_lb": "gateway",
    "gateway": "gateway",
    "sfu": "region",
    "turn": "region",
    "database": "database",
}
AWS_MODULES = {"network", "peering", "region", "gateway", "database", "egress"}

# How a rule's source is written -> the exposure source it stands for.
INTERNET = {"0.0.0.0/0", "::/0"}
SOURCE_VARS = {
    "var.monitoring_cidrs": "monitoring",
    "var.remote_gateway_cidrs": "gateways",
    "var.client_cidrs": "nodes",
}
# A rule admitting another security group: which one it is, by the reference.
SOURCE_GROUPS = {
    "var.gateway_security_group_id": "gateways",
    "aws_security_group.lb.id": "load_balancer",
    "aws_security_group.gateway.id": "gateways",
}
META_ARGS = {"source", "providers", "count", "for_each", "depends_on", "version"}
PORT_ATTRS = {"port", "from_port", "to_port"}


def unq(value):
    """python-hcl2 >= 7 keeps string quotes; older versions strip them."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def expr(value):
    """The expression inside "${...}", or None for a literal."""
    value = unq(value) if not (isinstance(value, str) and value.startswith("${")) else value
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        return value[2:-1].strip()
    return None


def label(key):
    return unq(key)


class Module:
    """One directory of .tf files, parsed."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.name = path.name
        self.variables: dict[str, dict] = {}
        self.outputs: dict[str, dict] = {}
        self.locals: set[str] = set()
        self.modules: dict[str, dict] = {}
        self.resources: list[tuple[str, str, dict, str]] = []
        self.text: dict[str, str] = {}
        for f in sorted(path.glob("*.tf")):
            self.text[f.name] = f.read_text()
            with f.open() as fh:
                doc = hcl2.load(fh)
            for block in doc.get("variable", []):
                for k, v in block.items():
                    self.variables[label(k)] = v | {"__file": f.name}
            for block in doc.get("output", []):
                for k, v in block.items():
                    self.outputs[label(k)] = v | {"__file": f.name}
            for block in doc.get("locals", []):
                self.locals.update(k for k in block if not k.startswith("__"))
            for block in doc.get("module", []):
                for k, v in block.items():
                    self.modules[label(k)] = v | {"__file": f.name}
            for block in doc.get("resource", []):
                for rtype, named in block.items():
                    for rname, body in named.items():
                        self.resources.append((label(rtype), label(rname), body, f.name))

    def code(self) -> str:
        """All .tf text without comments (for reference scans)."""
        out = []
        for text in self.text.values():
            for line in text.splitlines():
                stripped = line.lstrip()
                if stripped.startswith("#") or stripped.startswith("//"):
                    continue
                out.append(re.sub(r"\s+#\s.*$", "", line))
        return "\n".join(out)


class Checker:
    def __init__(self, ports: dict, exposure: dict):
        self.ports = ports
        self.exposure = exposure
        self.errors: list[str] = []
        self.opened: list[dict] = []  # every ingress rule found, for the reverse check

    def fail(self, where: str, message: str):
        self.errors.append(f"{where}: {message}")

    # -- interface ---------------------------------------------------------------

    def interface(self, m: Module):
        for name, v in m.variables.items():
            where = f"{m.path.relative_to(TERRAFORM)}/{v['__file']}: variable {name}"
            if "type" not in v:
                self.fail(where, "has no type")
            if not str(unq(v.get("description", ""))).strip():
                self.fail(where, "has no description")
        for name, o in m.outputs.items():
            where = f"{m.path.relative_to(TERRAFORM)}/{o['__file']}: output {name}"
            if not str(unq(o.get("description", ""))).strip():
                self.fail(where, "has no description")

    # -- references --------------------------------------------------------------

    def references(self, m: Module, all_modules: dict[pathlib.Path, Module]):
        rel = m.path.relative_to(TERRAFORM)
        code = m.code()
        for name in sorted(set(re.findall(r"\bvar\.([A-Za-z_][\w-]*)", code))):
            if name not in m.variables:
                self.fail(f"{rel}", f"var.{name} is not declared")
        for name in sorted(set(re.findall(r"\blocal\.([A-Za-z_][\w-]*)", code))):
            if name not in m.locals:
                self.fail(f"{rel}", f"local.{name} is not defined")
        for name in sorted(set(re.findall(r"\bmodule\.([A-Za-z_][\w-]*)", code))):
            if name not in m.modules:
                self.fail(f"{rel}", f"module.{name} is not called here")
        for call, body in m.modules.items():
            where = f"{rel}/{body['__file']}: module {call}"
            source = unq(body.get("source", ""))
            if not str(source).startswith("."):
                self.fail(where, f"source {source!r}: only local modules (nothing can be downloaded)")
                continue
            target_path = (m.path / source).resolve()
            target = all_modules.get(target_path) or Module(target_path)
            args = {k for k in body if not k.startswith("__")} - META_ARGS
            for a in sorted(args - set(target.variables)):
                self.fail(where, f"passes {a}, which {source} does not declare")
            required = {n for n, v in target.variables.items() if "default" not in v}
            for a in sorted(required - args):
                self.fail(where, f"does not pass {a}, which {source} requires")
            for out in sorted(set(re.findall(rf"\bmodule\.{re.escape(call)}\.([A-Za-z_][\w-]*)", code))):
                if out not in target.outputs:
                    self.fail(where, f"module.{call}.{out}: {source} has no such output")

    # -- ports -------------------------------------------------------------------

    def port_key(self, where: str, attr: str, value) -> str | None:
        e = expr(value)
        if e is None:
            self.fail(where, f"{attr} = {unq(value)!r} is written out: use var.ports.<key>")
            return None
        match = re.fullmatch(r"var\.ports\.([A-Za-z_]\w*)", e)
        if not match:
            self.fail(where, f"{attr} = {e}: not a var.ports.<key> reference")
            return None
        if match.group(1) not in self.ports:
            self.fail(where, f"{attr} = {e}: the config module's ports has no {match.group(1)}")
            return None
        return match.group(1)

    def source_of(self, where: str, body: dict) -> str | None:
        cidr = body.get("cidr_ipv4") or body.get("cidr_ipv6")
        group = body.get("referenced_security_group_id") or body.get("source_security_group_id")
        blocks = body.get("cidr_blocks")
        if cidr is not None:
            e = expr(cidr)
            if e is None:
                if unq(cidr) in INTERNET:
                    return "internet"
                self.fail(where, f"source {unq(cidr)!r} is written out: take it from a variable")
                return None
            if e in ("each.value", "each.key"):
                fe = expr(body.get("for_each", ""))
                inner = re.sub(r"^toset\((.*)\)$", r"\1", fe or "")
                if inner in SOURCE_VARS:
                    return SOURCE_VARS[inner]
                self.fail(where, f"for_each = {fe}: not one of {sorted(SOURCE_VARS)}")
                return None
            if e in SOURCE_VARS:
                return SOURCE_VARS[e]
            self.fail(where, f"source {e}: not one of {sorted(SOURCE_VARS)}")
            return None
        if group is not None:
            e = expr(group)
            if e in SOURCE_GROUPS:
                return SOURCE_GROUPS[e]
            self.fail(where, f"source group {e}: not one of {sorted(SOURCE_GROUPS)}")
            return None
        if blocks is not None:
            self.fail(where, "cidr_blocks: use one aws_vpc_security_group_ingress_rule per source")
            return None
        self.fail(where, "rule without a source")
        return None

    def rule(self, m: Module, where: str, direction: str, body: dict):
        protocol = str(unq(body.get("ip_protocol", body.get("protocol", "")))).lower()
        if direction == "egress":
            if protocol in ("-1", "all"):
                return
            for attr in ("from_port", "to_port"):
                self.port_key(where, attr, body.get(attr))
            return
        keys = [self.port_key(where, attr, body.get(attr)) for attr in ("from_port", "to_port")]
        source = self.source_of(where, body)
        if None in keys or source is None:
            return
        matches = [
            (name, r)
            for name, r in self.exposure.items()
            if [r["from_port"], r["to_port"]] == keys and ROLE_MODULE.get(r["role"]) == m.name
        ]
        if not matches:
            self.fail(where, f"opens ports {keys[0]}..{keys[1]}, which no exposure rule of this module's roles names")
            return
        name, r = matches[0]
        if protocol not in r["protocols"]:
            self.fail(where, f"opens {name} over {protocol!r}; exposure says {r['protocols']}")
        if source not in r["sources"]:
            self.fail(where, f"admits {source} to {name}; exposure allows only {r['sources']}")
        self.opened.append({"module": m.name, "rule": name, "protocol": protocol, "source": source})

    def ports_in(self, m: Module):
        rel = m.path.relative_to(TERRAFORM)
        for rtype, rname, body, fname in m.resources:
            where = f"{rel}/{fname}: {rtype}.{rname}"
            if rtype == "aws_vpc_security_group_ingress_rule":
                self.rule(m, where, "ingress", body)
            elif rtype == "aws_vpc_security_group_egress_rule":
                self.rule(m, where, "egress", body)
            elif rtype == "aws_security_group_rule":
                self.rule(m, where, str(unq(body.get("type", "ingress"))), body)
            elif rtype == "aws_security_group":
                for direction in ("ingress", "egress"):
                    for block in body.get(direction, []):
                        self.rule(m, f"{where} {direction}", direction, block)
                    for dyn in body.get("dynamic", []):
                        for dname, d in dyn.items():
                            if label(dname) == direction:
                                for block in d.get("content", []):
                                    self.rule(m, f"{where} dynamic {direction}", direction, block | {"for_each": d.get("for_each")})
            else:
                self.other_ports(where, body)

    def other_ports(self, where: str, body: dict):
        """Listener, target group, health check, database ports: var.ports only."""
        for k, v in body.items():
            if k in PORT_ATTRS:
                self.port_key(where, k, v)
            elif isinstance(v, list):
                for item in v:
                    if isinstance(item, dict):
                        self.other_ports(f"{where} {k}", item)

    def no_written_ports(self, m: Module):
        """No port number spelt out anywhere in the module, templates included."""
        numbers = {str(p) for p in self.ports.values()}
        rel = m.path.relative_to(TERRAFORM)
        files = [f for f in m.path.rglob("*") if f.is_file() and f.suffix in {".tf", ".tftpl", ".sh", ".service", ".timer"}]
        for f in files:
            for n, line in enumerate(f.read_text().splitlines(), 1):
                for number in re.findall(r"(?<![\w.:/-])\d{3,5}(?![\w.])", line):
                    if number in numbers:
                        self.fail(f"{f.relative_to(TERRAFORM)}:{n}", f"port {number} written out: use var.ports")

    def reverse(self):
        """Every exposure rule opened, for each protocol and each source."""
        for name, r in self.exposure.items():
            module = ROLE_MODULE.get(r["role"])
            for protocol in r["protocols"]:
                for source in r["sources"]:
                    if not any(
                        o["rule"] == name and o["protocol"] == protocol and o["source"] == source and o["module"] == module
                        for o in self.opened
                    ):
                        self.fail(
                            f"modules/{module}",
                            f"exposure {name} ({r['what']}) is never opened over {protocol} to {source}",
                        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ports", required=True, type=pathlib.Path, help="the config module's ports output (JSON)")
    parser.add_argument("--exposure", required=True, type=pathlib.Path, help="the config module's exposure output (JSON)")
    parser.add_argument("dirs", nargs="*", type=pathlib.Path, help="module directories (default: all of terraform/)")
    args = parser.parse_args()

    ports = json.loads(args.ports.read_text())
    exposure = json.loads(args.exposure.read_text())
    dirs = [d.resolve() for d in args.dirs] or sorted(
        {f.parent for f in TERRAFORM.rglob("*.tf") if ".terraform" not in f.parts and "fixtures" not in f.parts}
    )
    modules = {d: Module(d) for d in dirs}
    checker = Checker(ports, exposure)
    checked_ports = False
    for d, m in modules.items():
        checker.interface(m)
        checker.references(m, modules)
        if d.parent.name == "modules" and m.name in AWS_MODULES or d.parent.name == "fixtures":
            checker.ports_in(m)
            checker.no_written_ports(m)
            checked_ports = True
    if not args.dirs:
        checker.reverse()
    for e in checker.errors:
        print(f"FAIL {e}")
    print(
        f"check_modules: {len(modules)} directories, "
        f"{sum(len(m.variables) for m in modules.values())} variables, "
        f"{sum(len(m.outputs) for m in modules.values())} outputs, "
        f"{len(checker.opened)} ingress rules{' checked against exposure' if checked_ports else ''}: "
        f"{len(checker.errors)} problems"
    )
    return 1 if checker.errors else 0


if __name__ == "__main__":
    sys.exit(main())
