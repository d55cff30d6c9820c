#!/usr/bin/env python3
"""Checks that the tests docs/SECURITY.md and docs/RELIABILITY.md name exist.

A doc names a test in backquotes: a ctest name (`integration.gateway`), then
the test functions of that ctest it means (`test_request_deadline`,
`Slowloris.test_request_deadline`, `s_test_copy_rate`), in the same paragraph
or list item. This script reads the ctest registrations of a configured
build (the CTestTestfile.cmake files under --build) and fails (exit 1, one
line per finding) when:
  - a backquoted name that looks like a ctest name (unit.*, integration.*,
    crash.*, lint.*, bench.*, packaging.*) is not a registered test;
  - a backquoted test function has no ctest name before it in its paragraph;
  - a test function is not among those its ctest runs: for a Python test, a
    method of a class the ctest's unittest targets (or a function of the
    pytest file) found with ast; for a C test program, a function defined in
    the program's source (tests/.../<program>.c) and called there;
  - a paragraph with an odd number of backquotes;
  - a backquoted source path (`broker/auth/auth.c`, `tests/fuzz/`) that is
    not in the tree;
  - a control (a paragraph that starts with a bold title under "## Controls"
    in SECURITY.md) or a guarantee (a "###" section under "## Guarantees" in
    RELIABILITY.md) names no test at all: a claim without a test belongs in
    the "Not covered / known gaps" section.
Usage: check-doc-tests.py --root SRC --build BUILD [DOC ...]
"""
import argparse
import ast
import os
import re
import shlex
import sys

CTEST_LIKE = re.compile(r"^(?:unit|integration|crash|lint|bench|packaging)(?:\.[A-Za-z0-9_]+)+$")
FUNC = re.compile(r"^(?:(?P<cls>[A-Z][A-Za-z0-9_]*)\.)?(?P<fn>(?:s_)?test_[A-Za-z0-9_]+)$")
SOURCE = re.compile(r"^(?:broker|worker|gw|client|store|schema|tools|tests|docs|packaging)/"
                    r"[A-Za-z0-9_./-]*$")
SPAN = re.compile(r"`([^`]+)`")  # a code span may wrap onto the next line
ADD_TEST = re.compile(r"^add_test\(\s*(\S+)\s+(.*)\)\s*$")
WORKDIR = re.compile(r'^set_tests_properties\(\s*(\S+)\s+PROPERTIES\s.*\bWORKING_DIRECTORY\s+"([^"]*)"')
DOCS = ("docs/SECURITY.md", "docs/RELIABILITY.md")


def read_ctests(build):
    """{name: (argv, workdir)} from every CTestTestfile.cmake under build."""
    tests, dirs = {}, {}
    for top, _, files in os.walk(build):
        if "CTestTestfile.cmake" not in files:
            continue
        with open(os.path.join(top, "CTestTestfile.cmake"), encoding="utf-8") as f:
            for line in f:
                m = ADD_TEST.match(line.strip())
                if m:
                    name = m.group(1).strip("[]=")
                    tests[name] = shlex.split(m.group(2))
                    continue
                m = WORKDIR.match(line.strip())
                if m:
                    dirs[m.group(1).strip("[]=")] = m.group(2)
    return {n: (argv, dirs.get(n, "")) for n, argv in tests.items()}


class PyScope:
    """The test methods a unittest or pytest command runs: {class: {methods}}
    (class "" for pytest's module-level functions)."""

    def __init__(self, path, classes):
        self.path = path
        self.methods = {}
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        defined = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
        wanted = classes if classes else [c for c in defined]
        for cls in wanted:
            self.methods[cls] = self._methods(defined, cls, set())
        if not classes:
            self.methods[""] = {n.name for n in tree.body
                                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}

    def _methods(self, defined, cls, seen):
        node = defined.get(cls)
        if node is None or cls in seen:
            return set()
        seen.add(cls)
        names = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for base in node.bases:
            if isinstance(base, ast.Name):
                names |= self._methods(defined, base.id, seen)
        return names

    def has(self, cls, fn):
        if cls:
            return fn in self.methods.get(cls, set())
        return any(fn in m for m in self.methods.values())


class CScope:
    """A C test program's source: a function is there when it is defined and
    called at least once more in the file."""

    def __init__(self, path):
        self.path = path
        with open(path, encoding="utf-8") as f:
            self.text = f.read()

    def has(self, cls, fn):
        if cls:
            return False
        defined = re.search(r"^[A-Za-z_][^;{}()]*\b%s\s*\(" % re.escape(fn), self.text, re.M)
        uses = len(re.findall(r"\b%s\s*\(" % re.escape(fn), self.text))
        return bool(defined) and uses >= 2


def find_source(root, program):
    """tests/**/<program>.c for a test program of the build."""
    want = os.path.basename(program) + ".c"
    for top, _, files in os.walk(os.path.join(root, "tests")):
        if want in files:
            return os.path.join(top, want)
    return None


def scopes_for(root, name, argv, workdir, problems):
    """What the ctest runs, as scopes that can answer has(cls, fn)."""
    if len(argv) >= 3 and argv[1:3] == ["-m", "unittest"]:
        targets = [a for a in argv[3:] if not a.startswith("-")]
        by_module = {}
        for t in targets:
            module, _, cls = t.partition(".")
            by_module.setdefault(module, [])
            if cls:
                by_module[module].append(cls)
        out = []
        for module, classes in by_module.items():
            path = os.path.join(workdir, module + ".py")
            if not os.path.exists(path):
                problems.append("%s: runs %s, not found" % (name, path))
                continue
            out.append(PyScope(path, classes))
        return out
    if len(argv) >= 3 and argv[1:3] == ["-m", "pytest"]:
        return [PyScope(a, []) for a in argv[3:] if a.endswith(".py")]
    if argv and not os.path.basename(argv[0]) in ("sh", "bash", "python3"):
        src = find_source(root, argv[0])
        if src:
            return [CScope(src)]
    return []


def blocks(path):
    """(line number, section, subsection, text) of each paragraph and list
    item, outside code blocks."""
    out, cur, start, h2, h3 = [], [], 0, "", ""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")

    def flush():
        if cur:
            out.append((start, h2, h3, "\n".join(cur)))
            cur.clear()

    fenced = False
    for i, line in enumerate(lines, 1):
        if line.startswith("```"):  # a code block is not prose: skipped whole
            flush()
            fenced = not fenced
            continue
        if fenced:
            continue
        if line.startswith("#"):
            flush()
            if line.startswith("### "):
                h3 = line[4:].strip()
            elif line.startswith("## "):
                h2, h3 = line[3:].strip(), ""
            continue
        if not line.strip() or re.match(r"^\s*[-*] ", line):
            flush()
        if line.strip():
            if not cur:
                start = i
            cur.append(line)
    flush()
    return out


def check_doc(root, path, ctests, problems):
    rel = os.path.relpath(path, root)
    cache = {}
    proven = {}  # control or guarantee -> (line, named a test)
    control = None
    for line, h2, h3, text in blocks(path):
        if rel.endswith("SECURITY.md") and h2 == "Controls":
            m = re.match(r"^\*\*([^*]+)\*\*", text)
            if m:
                control = (line, m.group(1))
                proven[control] = False
        elif rel.endswith("RELIABILITY.md") and h2 == "Guarantees" and h3:
            control = (line, h3)
            proven.setdefault(control, False)
        else:
            control = None
        current = None
        if text.count("`") % 2:
            problems.append("%s:%d: a backquote without its pair (the names after it are not read)"
                            % (rel, line))
        for span in SPAN.findall(text):
            span = " ".join(span.split())
            if SOURCE.match(span) and not os.path.exists(os.path.join(root, span)):
                problems.append("%s:%d: `%s` is not in the tree" % (rel, line, span))
                continue
            if CTEST_LIKE.match(span):
                if span not in ctests:
                    problems.append("%s:%d: `%s` is not a ctest name" % (rel, line, span))
                    current = None
                    continue
                current = span
                if control:
                    proven[control] = True
                continue
            m = FUNC.match(span)
            if not m:
                continue
            if current is None:
                problems.append("%s:%d: `%s` follows no ctest name in its paragraph" % (rel, line, span))
                continue
            if current not in cache:
                argv, workdir = ctests[current]
                cache[current] = scopes_for(root, current, argv, workdir, problems)
            scopes = cache[current]
            if not scopes:
                problems.append("%s:%d: cannot tell which functions `%s` runs (for `%s`)"
                                % (rel, line, current, span))
            elif not any(s.has(m.group("cls"), m.group("fn")) for s in scopes):
                problems.append("%s:%d: `%s` is not a test that `%s` runs (%s)"
                                % (rel, line, span, current,
                                   ", ".join(os.path.relpath(s.path, root) for s in scopes)))
    for (line, title), ok in proven.items():
        if not ok:
            problems.append("%s:%d: %r names no test: prove it or move it to the gaps" % (rel, line, title))
    if not proven:
        problems.append("%s: no control or guarantee found (headings changed?)" % rel)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--build", required=True)
    ap.add_argument("docs", nargs="*")
    args = ap.parse_args()
    ctests = read_ctests(args.build)
    problems = []
    if not ctests:
        problems.append("%s: no CTestTestfile.cmake with tests (not a configured build?)" % args.build)
    for doc in args.docs or [os.path.join(args.root, d) for d in DOCS]:
        check_doc(args.root, doc, ctests, problems)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
