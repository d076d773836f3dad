#!/usr/bin/env python3
"""Holds the system calls that `ferry serve` and `ferry connector` made (strace -f logs, scripts/check-deploy)
against the hardening of their systemd units: SystemCallFilter (groups expanded by `systemd-analyze
syscall-filter`, with @default, which systemd always allows), MemoryDenyWriteExecute (no mapping both writable
and executable) and RestrictAddressFamilies (the socket families used).

Only what follows the exec of the ferry binary counts (the trace starts with setpriv, which drops root).

usage: deploy-syscalls.py UNIT_DIR SERVE_TRACE CONNECTOR_TRACE
"""
import re
import subprocess
import sys

unitdir, traces = sys.argv[1], {"ferry.service": sys.argv[2], "ferry-connector.service": sys.argv[3]}
groups = {}


def group(name):
    if name not in groups:
        out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True,
                             check=True).stdout
        calls = set()
        for line in out.splitlines()[1:]:
            item = line.strip()
            if item and not item.startswith("#"):
                calls |= group(item) if item.startswith("@") else {item}
        groups[name] = calls
    return groups[name]


failed = False
for unit, trace in traces.items():
    text = open(unitdir.rstrip("/") + "/" + unit).read()
    allowed, denied = set(), set()
    for line in re.findall(r"^SystemCallFilter=(.*)$", text, re.M):
        names = set()
        for item in line.lstrip("~").split():
            names |= group(item) if item.startswith("@") else {item}
        (denied if line.startswith("~") else allowed).update(names)
    allowed = (allowed | group("@default")) - denied
    families = set(re.search(r"^RestrictAddressFamilies=(.*)$", text, re.M).group(1).split())
    log = open(trace).read()
    # from the exec of ferry on: what ran before it (setpriv dropping root, env) is not Ferry's
    execs = [m.end() for m in re.finditer(r'^\d+ +execve\("[^"]*/ferry", .*= 0$', log, re.M)]
    if not execs:
        problems = [f"{trace}: no execve of ferry"]
    log = log[execs[-1]:] if execs else ""
    calls = set(re.findall(r"^\d+ +([a-z_0-9]+)\(", log, re.M))
    outside = sorted(calls - allowed)
    wx = [l for l in re.findall(r"^\d+ +(?:mmap|mprotect|pkey_mprotect)\(.*$", log, re.M)
          if "PROT_WRITE" in l and "PROT_EXEC" in l]
    used = set(re.findall(r"socket\((AF_[A-Z0-9]+)", log))
    problems = [] if execs else problems
    if not calls:
        problems.append("no system calls traced")
    if outside:
        problems.append(f"calls outside its SystemCallFilter: {outside}")
    if wx:
        problems.append(f"memory both writable and executable: {wx[:2]}")
    if used - families:
        problems.append(f"socket families outside RestrictAddressFamilies: {sorted(used - families)}")
    if problems:
        failed = True
        print(f"{unit}: " + "; ".join(problems))
    else:
        print(f"{unit}: {len(calls)} distinct system calls, all allowed; sockets {sorted(used)}")
sys.exit(1 if failed else 0)
