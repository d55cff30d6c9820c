#!/usr/bin/env python3
"""Engines are decided by what they declare, never by name (docs/DESIGN.md,
"Engines").

Fails when a C file of broker/, worker/, gw/, client/ or tools/ outside
worker/engines/ (the engine registry and the engines themselves) compares a
string with the name of an engine: strcmp/strncmp/strcasecmp/strncasecmp
with an engine name literal in the same call. The engine names are read
from the engines' `.name = "..."` lines.

--self-test builds a small tree with one such compare and checks that the
check fails on it and passes without it.
"""
import argparse
import os
import re
import sys
import tempfile

DIRS = ("broker", "worker", "gw", "client", "tools")
ALLOWED = os.path.join("worker", "engines") + os.sep


def engine_names(root):
    names = set()
    d = os.path.join(root, "worker", "engines")
    for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if f.endswith(".c"):
            with open(os.path.join(d, f), encoding="utf-8", errors="replace") as fh:
                names.update(re.findall(r'\.name\s*=\s*"([A-Za-z0-9._-]+)"', fh.read()))
    return names


def check(root):
    names = engine_names(root)
    if not names:
        print("check-engine-names: no engine names found under worker/engines/")
        return 1
    alt = "|".join(re.escape(n) for n in sorted(names))
    pat = re.compile(r'\bstr(?:n)?(?:case)?cmp\s*\(([^;{}]*?)"(?:%s)"' % alt)
    bad = []
    for top in DIRS:
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for f in files:
                if not f.endswith((".c", ".h")):
                    continue
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, root)
                if rel.startswith(ALLOWED):
                    continue
                with open(path, encoding="utf-8", errors="replace") as fh:
                    text = fh.read()
                for m in pat.finditer(text):
                    line = text.count("\n", 0, m.start()) + 1
                    bad.append("%s:%d: compares an engine name; decide by the engine's "
                               "capabilities (engine_t.caps, TT_CAP_*)" % (rel, line))
    for b in bad:
        print(b)
    return 1 if bad else 0


def self_test():
    with tempfile.TemporaryDirectory() as t:
        os.makedirs(os.path.join(t, "worker", "engines"))
        os.makedirs(os.path.join(t, "broker", "ops"))
        with open(os.path.join(t, "worker", "engines", "engine_x.c"), "w") as fh:
            fh.write('const engine_t engine_x = {\n    .name = "qemu",\n};\n'
                     'static int s(const char *n) { return strcmp(n, "qemu"); }\n')
        victim = os.path.join(t, "broker", "ops", "env_ops.c")
        with open(victim, "w") as fh:
            fh.write('int f(const char *e) { return e && caps(e); }\n')
        if check(t) != 0:
            print("self-test: a clean tree failed")
            return 1
        with open(victim, "a") as fh:
            fh.write('int g(const char *e)\n{\n    return strcmp(e,\n                  "qemu") == 0;\n}\n')
        if check(t) == 0:
            print("self-test: a strcmp on \"qemu\" outside worker/engines/ passed")
            return 1
    print("self-test: ok")
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.path.join(os.path.dirname(__file__), ".."))
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    return self_test() if a.self_test else check(os.path.abspath(a.root))


if __name__ == "__main__":
    sys.exit(main())
