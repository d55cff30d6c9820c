#!/usr/bin/env python3
"""opsgen: the client request stubs, generated from the op registry.

Reads schema/ops.def (one TT_OP row per operation) and the Request.op
oneof of schema/ttfleet.proto (the message type of each op) and writes one
of:

  --c-header FILE   ttclient_ops.h: a declaration per row,
                    int ttclient_op_FIELD(ttclient_t *, Ttfleet__MSG *, Ttfleet__Reply **)
  --c-source FILE   ttclient_ops.c: their definitions (each calls ttclient_op())
  --python FILE     ttfleet/_ops.py: OPS (the rows as data) and the mixins
                    Ops / AsyncOps with a method per row for ttfleet.Client
                    and ttfleet.aio.Client

Run at build time (CMake for libttclient, setup.py for the Python
package); its output is never committed. It works from the rows alone: a
new row with its Request.op case gets its stubs with no other edit. A row
whose field is not a Request.op case of the .proto is an error.

usage: opsgen.py OPS_DEF TTFLEET_PROTO (--c-header|--c-source|--python) OUT
"""

import os
import re
import sys

COLUMNS = ("case", "field", "handler", "service", "flags", "method", "path", "params", "query",
           "ok", "cli")
SERVICES = {"ENV": "tt.env", "ADMIN": "tt.admin"}


def _split_args(text):
    """The top-level comma-separated arguments of text (parentheses and
    string literals respected)."""
    args, depth, cur, quote = [], 0, "", False
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            cur += ch
            if ch == "\\" and i + 1 < len(text):
                cur += text[i + 1]
                i += 1
            elif ch == '"':
                quote = False
        elif ch == '"':
            quote = True
            cur += ch
        elif ch == "(":
            depth += 1
            cur += ch
        elif ch == ")":
            depth -= 1
            cur += ch
        elif ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
        else:
            cur += ch
        i += 1
    args.append(cur.strip())
    return args


def _strings(text):
    """The string literals of TT_ARGS("a", "b")."""
    return tuple(re.findall(r'"((?:[^"\\]|\\.)*)"', text))


def _string(text, where):
    m = re.fullmatch(r'"((?:[^"\\]|\\.)*)"', text)
    if not m:
        raise SystemExit("opsgen: %s: %r is not a string literal" % (where, text))
    return m.group(1)


def read_rows(path):
    """The TT_OP rows of ops.def as dicts (COLUMNS), in file order."""
    with open(path) as f:
        text = f.read()
    # comments out, string literals kept ("/v1/envs/*" is not a comment)
    text = re.sub(r'"(?:[^"\\\n]|\\.)*"|/\*.*?\*/|//[^\n]*',
                  lambda m: m.group(0) if m.group(0)[0] == '"' else " ", text, flags=re.S)
    rows = []
    for m in re.finditer(r"\bTT_OP\s*\(", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            if text[i] == "(":
                depth += 1
            elif text[i] == ")":
                depth -= 1
            elif text[i] == '"':
                i = text.index('"', i + 1)
            i += 1
        if depth:
            raise SystemExit("opsgen: %s: an unclosed TT_OP(" % path)
        args = _split_args(text[m.end():i - 1])
        where = "%s: row %d" % (path, len(rows) + 1)
        if len(args) != len(COLUMNS):
            raise SystemExit("opsgen: %s: %d columns, want %d" % (where, len(args), len(COLUMNS)))
        row = dict(zip(COLUMNS, args))
        if row["service"] not in SERVICES:
            raise SystemExit("opsgen: %s: service %s is not ENV or ADMIN" % (where, row["service"]))
        if not re.fullmatch(r"[a-z][a-z0-9_]*", row["field"]):
            raise SystemExit("opsgen: %s: field %r is not a lower-case name" % (where, row["field"]))
        flags = set(re.findall(r"TT_OPF_([A-Z_]+)", row["flags"]))
        if "CHANGE" in flags:  # ttops.h: CHANGE = RECORD | AUDIT
            flags.remove("CHANGE")
            flags |= {"RECORD", "AUDIT"}
        if "NEED_BODY" in flags:  # NEED_BODY includes BODY
            flags.add("BODY")
        row["flags"] = tuple(sorted(flags))
        row["path"] = _string(row["path"], where)
        row["cli"] = _string(row["cli"], where)
        row["params"] = _strings(row["params"])
        row["query"] = _strings(row["query"])
        row["ok"] = int(row["ok"])
        rows.append(row)
    if not rows:
        raise SystemExit("opsgen: %s has no TT_OP row" % path)
    return rows


def read_request_ops(path):
    """{field: (message type, field number)} of the Request.op oneof, and
    the C prefix of the package's types ("Ttfleet__")."""
    with open(path) as f:
        text = re.sub(r"//[^\n]*", "", f.read())
    pkg = re.search(r"^\s*package\s+([\w.]+)\s*;", text, re.M)
    if not pkg:
        raise SystemExit("opsgen: %s has no package" % path)
    prefix = "".join(p[:1].upper() + p[1:] + "__" for p in pkg.group(1).split("."))
    req = re.search(r"\bmessage\s+Request\s*\{", text)
    if not req:
        raise SystemExit("opsgen: %s has no message Request" % path)
    oneof = re.compile(r"\boneof\s+op\s*\{([^}]*)\}").search(text, req.end())
    if not oneof:
        raise SystemExit("opsgen: %s: Request has no oneof op" % path)
    ops = {}
    for m in re.finditer(r"([A-Za-z_][\w.]*)\s+([a-z_]\w*)\s*=\s*(\d+)\s*;", oneof.group(1)):
        ops[m.group(2)] = (m.group(1), int(m.group(3)))
    return ops, prefix


def _c_type(msg, prefix):
    return prefix + "__".join(msg.split("."))


def _joined(rows, ops, proto):
    for row in rows:
        if row["field"] not in ops:
            raise SystemExit("opsgen: ops.def row %s: Request.op has no field %s in %s"
                             % (row["case"], row["field"], proto))
        row["message"], row["number"] = ops[row["field"]]
    return rows


HEADER = """/* Generated by schema/opsgen.py from schema/ops.def and schema/ttfleet.proto
 * at build time. Do not edit: change the registry. */
"""


def c_header(rows, prefix):
    out = [HEADER, "#ifndef TTCLIENT_OPS_H", "#define TTCLIENT_OPS_H", "",
           "/* One request function per operation of the registry: sends msg (NULL:",
           " * the op's message with every field at its default) as the op, to the",
           " * op's service (tt.admin instead of tt.env when the message has a",
           " * field `all` that is set), like ttclient_call(). */"]
    for row in rows:
        out.append("int ttclient_op_%s(ttclient_t *self, %s *msg, %sReply **reply_p);"
                   % (row["field"], _c_type(row["message"], prefix), prefix))
    out += ["", "#endif", ""]
    return "\n".join(out)


def c_source(rows, prefix):
    out = [HEADER, '#include "ttclient.h"', ""]
    for row in rows:
        out += ["int ttclient_op_%s(ttclient_t *self, %s *msg, %sReply **reply_p)"
                % (row["field"], _c_type(row["message"], prefix), prefix),
                "{",
                "    return ttclient_op(self, %sREQUEST__OP_%s, msg, reply_p);"
                % (prefix.upper(), row["case"]),
                "}", ""]
    return "\n".join(out)


def python(rows):
    out = ['"""The op registry (schema/ops.def) as data, and a low-level method per op.',
           "",
           "Generated by schema/opsgen.py from schema/ops.def and schema/ttfleet.proto",
           'when the package is built. Do not edit: change the registry."""',
           "",
           "from typing import Any, Dict, NamedTuple, Optional, Tuple",
           "",
           "",
           "class Op(NamedTuple):",
           "    field: str  # the Request.op field, \"env_create\"",
           "    number: int  # its field number (the op case)",
           "    message: str  # its message type, \"EnvCreate\"",
           "    service: str  # \"tt.env\" or \"tt.admin\"",
           "    flags: Tuple[str, ...]  # TT_OPF_* names without the prefix",
           "    method: str  # the REST method, \"NONE\" when it has no route",
           "    path: str",
           "    params: Tuple[str, ...]",
           "    query: Tuple[str, ...]",
           "    ok: int",
           "    cli: str",
           "",
           "",
           "OPS: Dict[str, Op] = {"]
    for row in rows:
        out.append("    %r: Op(%r, %d, %r, %r, %r, %r, %r, %r, %r, %d, %r)," % (
            row["field"], row["field"], row["number"], row["message"],
            SERVICES[row["service"]], row["flags"], row["method"], row["path"],
            row["params"], row["query"], row["ok"], row["cli"]))
    out += ["}", "", ""]
    for cls, kw, aw in (("Ops", "def", ""), ("AsyncOps", "async def", "await ")):
        out += ["class %s:" % cls,
                '    """A method per registry op: its message\'s fields positionally in the',
                "    message's order or by name; returns the Reply's result (the Reply when",
                "    it has none) and raises the status's exception (ttfleet.errors) on",
                "    anything but OK. Each retries like call(), but an op flagged ONCE",
                "    (not idempotent: env_exec, env_copy) is sent once; the higher-level",
                '    env_exec, env_cp_put and env_cp_get split and bound those."""', ""]
        for row in rows:
            out += ["    %s %s(self, *args: Any, request_id: Optional[str] = None,"
                    % (kw, row["field"]),
                    "            **fields: Any) -> Any:",
                    '        """%s (%s, %s): the %s message."""'
                    % (row["field"], SERVICES[row["service"]],
                       "cli: " + row["cli"] if row["cli"] else "no ttctl command",
                       row["message"]),
                    "        return %sself._registry_call(%r, args, fields, request_id)"
                    % (aw, row["field"]), ""]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv):
    if len(argv) != 5 or argv[3] not in ("--c-header", "--c-source", "--python"):
        sys.stderr.write(__doc__.strip().splitlines()[-1] + "\n")
        return 2
    ops_def, proto, mode, out_path = argv[1:]
    ops, prefix = read_request_ops(proto)
    rows = _joined(read_rows(ops_def), ops, proto)
    if mode == "--c-header":
        text = c_header(rows, prefix)
    elif mode == "--c-source":
        text = c_source(rows, prefix)
    else:
        text = python(rows)
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
