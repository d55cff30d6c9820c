#!/usr/bin/env python3
"""Checks the include order of broker/ and worker/ against docs/DESIGN.md.

DESIGN.md lists each daemon's wings bottom to top under the headings
"### Broker wings, bottom to top" and "### Worker wings, bottom to top":
one list item per wing, its folder first in backquotes (`broker/core/`;
the daemon's own folder, `broker/`, is the loop on top); the list ends at
the next heading or the first unindented line after it. A file may include
the headers of its own wing and of the wings listed before it. This script
fails (exit 1, one line per finding) on:
  - an #include "..." that reaches a wing listed after the file's own;
  - a .c or .h file in a folder the list does not name;
  - an include cycle between modules (x.c and x.h are one module);
  - a list that cannot be read (heading missing, no wings, a folder twice).
Headers that are not in the daemon's tree (schema/, store/, system) are not
checked here. Usage: check-includes.py [--root DIR] [--design FILE]
"""
import argparse
import os
import re
import sys

DAEMONS = ("broker", "worker")
ITEM = re.compile(r"^\s*(?:[-*]|\d+\.)\s+`([^`]+)`")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def read_wings(design, daemon, problems):
    """The daemon's wing folders (relative to the daemon, "" for the top),
    bottom to top, from the list under its heading."""
    heading = "### %s wings, bottom to top" % daemon.capitalize()
    wings = []
    inside = False
    with open(design, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                if inside:
                    break
                inside = line.strip().lower() == heading.lower()
                continue
            if not inside:
                continue
            m = ITEM.match(line)
            if not m:
                if wings and line.strip() and not line[0].isspace():
                    break  # the list ended: the first unindented line after it
                continue
            path = m.group(1).strip().rstrip("/")
            if path != daemon and not path.startswith(daemon + "/"):
                problems.append("%s: wing %r under %r is not in %s/" % (design, path, heading, daemon))
                continue
            wing = path[len(daemon) + 1:] if path != daemon else ""
            if wing in wings:
                problems.append("%s: wing %r listed twice" % (design, path))
            wings.append(wing)
    if not wings:
        problems.append("%s: no list under a heading %r" % (design, heading))
    return wings


def sources(root, daemon):
    out = []
    for dirpath, _dirs, files in os.walk(os.path.join(root, daemon)):
        for name in files:
            if name.endswith((".c", ".h")):
                out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def wing_of(path, daemon):
    rel = os.path.dirname(path)[len(daemon):].strip("/")
    return rel


def find_cycle(graph):
    """One cycle in graph (node -> set of nodes) as a list, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {n: WHITE for n in graph}
    stack = []

    def visit(n):
        colour[n] = GREY
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if colour.get(m, WHITE) == GREY:
                return stack[stack.index(m):] + [m]
            if colour.get(m, WHITE) == WHITE:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        colour[n] = BLACK
        return None

    sys.setrecursionlimit(10000)
    for n in sorted(graph):
        if colour[n] == WHITE:
            found = visit(n)
            if found:
                return found
    return None


def check_daemon(root, design, daemon, problems):
    wings = read_wings(design, daemon, problems)
    if not wings:
        return
    rank = {w: i for i, w in enumerate(wings)}
    files = sources(root, daemon)
    by_name = {}
    for f in files:
        by_name.setdefault(os.path.basename(f), []).append(f)
    graph = {}
    for f in files:
        wing = wing_of(f, daemon)
        if wing not in rank:
            problems.append("%s: folder %s/ is not a wing listed in %s" % (f, os.path.dirname(f), design))
            continue
        module = os.path.splitext(f)[0]
        graph.setdefault(module, set())
        with open(os.path.join(root, f), encoding="utf-8", errors="replace") as src:
            for lineno, line in enumerate(src, 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                name = m.group(1)
                here = os.path.normpath(os.path.join(os.path.dirname(f), name))
                if here in files:
                    target = here
                elif "/" not in name and len(by_name.get(name, [])) == 1:
                    target = by_name[name][0]
                elif "/" not in name and by_name.get(name):
                    problems.append("%s:%d: \"%s\" names more than one header in %s/: %s" %
                                    (f, lineno, name, daemon, ", ".join(by_name[name])))
                    continue
                else:
                    continue  # not the daemon's own header (schema/, store/, system)
                twing = wing_of(target, daemon)
                if twing not in rank:
                    continue  # reported as a file in an unlisted folder
                if rank[twing] > rank[wing]:
                    problems.append("%s:%d: includes %s from wing %s/, above its own wing %s/" %
                                    (f, lineno, target, os.path.join(daemon, twing).rstrip("/"),
                                     os.path.join(daemon, wing).rstrip("/")))
                tmod = os.path.splitext(target)[0]
                if tmod != module:
                    graph[module].add(tmod)
    cycle = find_cycle(graph)
    if cycle:
        problems.append("%s: include cycle between modules: %s" % (daemon, " -> ".join(cycle)))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.path.dirname(here), help="the source tree (default: this script's ..)")
    ap.add_argument("--design", help="the design doc (default: ROOT/docs/DESIGN.md)")
    args = ap.parse_args()
    design = args.design or os.path.join(args.root, "docs", "DESIGN.md")
    problems = []
    try:
        for daemon in DAEMONS:
            check_daemon(args.root, design, daemon, problems)
    except OSError as e:
        print("check-includes: %s" % e, file=sys.stderr)
        return 1
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print("check-includes: %d problem(s); the wing order is in %s" % (len(problems), design), file=sys.stderr)
        return 1
    print("check-includes: broker/ and worker/ include only down the wing order of %s" % design)
    return 0


if __name__ == "__main__":
    sys.exit(main())
