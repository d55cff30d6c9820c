#!/usr/bin/env python3
"""Checks that the daemons never hand a command line to a shell or to a PATH search.

docs/SECURITY.md "No shell": ttbroker, ttworker and ttgw (and the store and
schema code they link) start programs only with execve/execv and an argv
they built. This script fails (exit 1, one line per finding) on a call, in
a .c or .h file under broker/, worker/, gw/, store/ or schema/, to system,
popen, or an exec that searches PATH or takes a variable argument list
(execvp, execvpe, execlp, execl, execle), or to posix_spawnp. Comments and
string literals are ignored. The one allowed call is in ALLOWED, with why.
Usage: check-no-shell.py [--root DIR]
"""
import argparse
import os
import re
import sys

DIRS = ("broker", "worker", "gw", "store", "schema")
BANNED = ("system", "popen", "execvp", "execvpe", "execlp", "execl", "execle", "posix_spawnp")
# (file, call): why it is not a host shell or a host PATH search
ALLOWED = {
    ("worker/engines/engine_process_guest.c", "execvpe"): "a tenant's `env exec` argv, run after the command "
    "entered the VM's namespaces and took its confinement: PATH is searched in the VM's root",
}
CALL = re.compile(r"\b(%s)\s*\(" % "|".join(BANNED))
# comments, string and character literals, in one pass so a quote inside a
# comment (or a comment marker inside a string) is read right
LEXEMES = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)


def strip(text):
    """The code with comments and literals blanked, newlines kept."""
    return LEXEMES.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = ap.parse_args()
    problems, seen = [], 0
    for d in DIRS:
        for top, _, files in os.walk(os.path.join(args.root, d)):
            for name in sorted(files):
                if not name.endswith((".c", ".h")):
                    continue
                path = os.path.join(top, name)
                with open(path, encoding="utf-8", errors="replace") as f:
                    code = strip(f.read())
                seen += 1
                rel = os.path.relpath(path, args.root)
                for m in CALL.finditer(code):
                    if (rel, m.group(1)) in ALLOWED:
                        continue
                    line = code.count("\n", 0, m.start()) + 1
                    problems.append("%s:%d: calls %s()" % (rel, line, m.group(1)))
    if not seen:
        problems.append("%s: no C files under %s" % (args.root, ", ".join(DIRS)))
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
