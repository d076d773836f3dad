#!/usr/bin/env python3
"""Turn callgrind profiles (recorded with --dump-instr=yes) of Ferry's processes into a linker symbol-ordering
file: every function of the binary that ran, in their original order, so that the linker puts them next to each
other. See bench/link-order.sh and docs/performance.md ("Idle memory").

    bench/link_order.py BINARY OUT CALLGRIND_FILE...
"""
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


def main():
    binary, out_path, profiles = sys.argv[1], sys.argv[2], sys.argv[3:]
    nm = subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True, text=True, check=True).stdout
    symbols = []
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tTwW":
            symbols.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
    symbols.sort()
    starts = [s[0] for s in symbols]
    suffix = "/" + binary.rsplit("/", 1)[-1]
    ran = set()
    for p in profiles:
        for a in executed_addresses(p, suffix):
            i = bisect.bisect_right(starts, a) - 1
            if i >= 0 and symbols[i][0] <= a < symbols[i][0] + max(symbols[i][1], 1):
                ran.add(i)
    names, size = [], 0
    for i in sorted(ran):
        names.append(symbols[i][2])
        size += symbols[i][1]
    with open(out_path, "w") as f:
        f.write("\n".join(dict.fromkeys(names)) + "\n")
    print(f"{len(names)} functions that ran, {size / 1048576:.2f} MiB of code, written to {out_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
