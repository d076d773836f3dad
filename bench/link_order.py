#!/usr/bin/env python3
"""Turn callgrind profiles (recorded with --dump-instr=yes) of Ferry's processes into a linker symbol-ordering
file: every function of the binary that ran, so that the linker puts them next to each other. See
bench/link-order.sh and docs/performance.md ("Idle memory").

    bench/link_order.py BINARY OUT --connector FILE... --node FILE... [--node-later FILE...]

The functions are grouped by who ran them, each group in the binary's original order:

    connector only | connector and node | node (--node) | node, later phase only (--node-later)

so that each process maps one stretch of code: the connector the first two groups, a relay node the middle two,
and a node that also proxies the last three. (Kernel fault-around maps code in 64 KiB blocks, so functions of
one process interleaved with another's make both map the two; before this grouping a node mapped most of the
connector's code and the other way round.)
"""
import argparse
import bisect
import re
import subprocess
import sys


def executed_addresses(path, binary_suffix):
    """Addresses of the instructions that ran in the object whose path ends with binary_suffix."""
    objects, ob, last, out = {}, None, 0, set()
    for line in open(path, errors="replace"):
        if line.startswith(("ob=", "cob=")):
            m = re.match(r"c?ob=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
            if m and m.group(2):
                objects[m.group(1)] = m.group(2)
            if line.startswith("ob=") and m:
                ob = objects.get(m.group(1))
            continue
        if not line or line[0] not in "0123456789+-*":
            continue
        tok = line.split(None, 1)[0]
        if tok.startswith("0x"):
            last = int(tok, 16)
        elif tok[0] == "+":
            last += int(tok[1:], 16) if len(tok) > 1 else 0
        elif tok[0] == "-":
            last -= int(tok[1:], 16) if len(tok) > 1 else 0
        if ob and ob.endswith(binary_suffix):
            out.add(last)
    return out


def ran_functions(symbols, starts, binary, profiles):
    """Indexes (into symbols) of the functions of binary that ran in any of the profiles."""
    suffix = "/" + binary.rsplit("/", 1)[-1]
    ran = set()
    for p in profiles:
        for a in executed_addresses(p, suffix):
            i = bisect.bisect_right(starts, a) - 1
            if i >= 0 and symbols[i][0] <= a < symbols[i][0] + max(symbols[i][1], 1):
                ran.add(i)
    return ran


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary")
    ap.add_argument("out")
    ap.add_argument("--connector", nargs="+", required=True)
    ap.add_argument("--node", nargs="+", required=True)
    ap.add_argument("--node-later", nargs="*", default=[])
    a = ap.parse_args()
    nm = subprocess.run(["nm", "-S", "--defined-only", a.binary], capture_output=True, text=True,
                        check=True).stdout
    symbols = []
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tTwW":
            symbols.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
    symbols.sort()
    starts = [s[0] for s in symbols]
    connector = ran_functions(symbols, starts, a.binary, a.connector)
    node = ran_functions(symbols, starts, a.binary, a.node)
    later = ran_functions(symbols, starts, a.binary, a.node_later) - node
    groups = [
        ("connector only", connector - node - later),
        ("connector and node", connector & (node | later)),
        ("node", node - connector),
        ("node, later phase", later - connector),
    ]
    names, report = [], []
    for label, group in groups:
        size = sum(symbols[i][1] for i in group)
        report.append(f"{label} {len(group)} ({size / 1048576:.2f} MiB)")
        names += [symbols[i][2] for i in sorted(group)]
    with open(a.out, "w") as f:
        f.write("\n".join(dict.fromkeys(names)) + "\n")
    print(f"{len(names)} functions that ran, written to {a.out}: " + ", ".join(report), file=sys.stderr)


if __name__ == "__main__":
    main()
