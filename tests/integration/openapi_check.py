"""Checks ttgw's answers against docs/openapi.yaml.

check(method, path, status, body) finds the document's path template that
matches the concrete path (a template segment `{x}` matches any one
segment; literal segments win over templates), requires the method there,
requires the status among the operation's responses (or a `default`), and
validates a JSON body against the response's schema with python3-jsonschema
(Draft 2020-12, the dialect of OpenAPI 3.1). It raises AssertionError with
what did not match, so an undocumented route or field fails the test.
"""

import os
import re

import jsonschema
import yaml

import harness

_doc = None


def doc():
    global _doc
    if _doc is None:
        with open(os.path.join(harness.SOURCE, "docs", "openapi.yaml")) as f:
            _doc = yaml.safe_load(f)
    return _doc


def _resolve(node):
    """Follows a local $ref (one level at a time) in the document."""
    while isinstance(node, dict) and "$ref" in node and len(node) == 1:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = doc()
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def find_path(path):
    """The template of the document's paths that path matches, or None."""
    path = path.split("?", 1)[0]
    segs = [s for s in path.split("/") if s]
    best = None
    for template in doc()["paths"]:
        tsegs = [s for s in template.split("/") if s]
        if len(tsegs) != len(segs):
            continue
        literal = 0
        ok = True
        for t, s in zip(tsegs, segs):
            if t.startswith("{") and t.endswith("}"):
                continue
            if t != s:
                ok = False
                break
            literal += 1
        if ok and (best is None or literal > best[0]):
            best = (literal, template)
    return best[1] if best else None


def operation(method, path):
    template = find_path(path)
    assert template, "path %s is not in docs/openapi.yaml" % path
    item = _resolve(doc()["paths"][template])
    op = item.get(method.lower())
    assert op, "%s %s (%s) is not in docs/openapi.yaml" % (method, path, template)
    return template, _resolve(op)


def check(method, path, status, body, content_type="application/json"):
    template, op = operation(method, path)
    responses = op["responses"]
    resp = responses.get(str(status)) or responses.get("default")
    assert resp, "%s %s answered %d, not documented (has %s)" % (
        method, template, status, ", ".join(responses))
    resp = _resolve(resp)
    content = resp.get("content", {})
    ctype = content_type.split(";")[0].strip()
    assert ctype in content, "%s %s %d: content type %s not documented (%s)" % (
        method, template, status, ctype, ", ".join(content))
    schema = content[ctype].get("schema")
    if schema and ctype == "application/json":
        resolver = jsonschema.RefResolver("", doc())
        validator = jsonschema.Draft202012Validator(schema, resolver=resolver)
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
        assert not errors, "%s %s %d: body does not match the schema: %s\nbody: %r" % (
            method, template, status, "; ".join(
                "%s at %s" % (e.message, "/".join(map(str, e.path))) for e in errors[:5]),
            body)
    return template


def check_schema(name, value):
    """Validates value against components/schemas/NAME."""
    resolver = jsonschema.RefResolver("", doc())
    validator = jsonschema.Draft202012Validator({"$ref": "#/components/schemas/" + name},
                                                resolver=resolver)
    validator.validate(value)


def server_routes():
    """(method, path template) of every route ttgw serves: the registry's
    rows with a REST route (schema/ops.def) and gw/gw.c's own table, with
    `*` written as `{}`."""
    with open(os.path.join(harness.SOURCE, "schema", "ops.def")) as f:
        ops = f.read()
    routes = [(m, p) for m, p in re.findall(r'^TT_OP\([^"]*?\b(GET|POST|PATCH|DELETE|PUT),\s*"([^"]+)"',
                                           ops, re.M)]
    with open(os.path.join(harness.SOURCE, "gw", "gw.c")) as f:
        text = f.read()
    table = text[text.index("static const s_route_t s_own_routes[] = {"):]
    table = table[:table.index("};")]
    return routes + re.findall(r'\{"([A-Z]+)", "([^"]+)"', table)
