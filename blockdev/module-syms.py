#!/usr/bin/env python3
"""module-syms.py OUT MODULE... - the dynamic list (ld --dynamic-list)
of the symbols block driver modules take from the executable that
loads them: every undefined, unversioned symbol of the modules (a
versioned one comes from a shared library: glibc; weak ones are the
toolchain's).  Names the
executable does not define are ignored by the linker."""
import subprocess
import sys


def main():
    out, mods = sys.argv[1], sys.argv[2:]
    names = set()
    for mod in mods:
        nm = subprocess.run(["nm", "-D", "--undefined-only", mod],
                            check=True, capture_output=True, text=True)
        for line in nm.stdout.splitlines():
            kind, name = line.split()[-2:]
            if kind == "U" and "@" not in name:
                names.add(name)
    with open(out, "w") as f:
        f.write("{\n")
        for name in sorted(names):
            f.write("    %s;\n" % name)
        f.write("};\n")


if __name__ == "__main__":
    main()
