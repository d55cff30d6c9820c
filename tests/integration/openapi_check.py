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
    table = text[text.index("static const gw_route_t s_own_routes[] = {"):]
    table = table[:table.index("};")]
    return routes + re.findall(r'\{"([A-Z]+)", "([^"]+)"', table)


def op_routes():
    """(method, path with `*`, op field) of every registry row with a REST
    route (schema/ops.def)."""
    with open(os.path.join(harness.SOURCE, "schema", "ops.def")) as f:
        ops = f.read()
    return [(m, p, f) for f, m, p in re.findall(
        r'^TT_OP\(\s*\w+,\s*(\w+),[^"]*?\b(GET|POST|PATCH|DELETE|PUT),\s*"([^"]+)"', ops, re.M)]


# ---- the document against the protobuf schema, both ways ----
#
# A schema of components/schemas that stands for a message of
# schema/ttfleet.proto says so with `x-proto: MessageName` (an enum:
# `x-proto-enum: EnumName`). drift() checks every such schema against the
# message's descriptor (protoc's Python output, harness.pb2()): every field of
# the message is a property and every property a field (less the fields the
# route takes from its path, listed in `x-path`, plus the ones the gateway
# adds, listed in `x-gateway`), with a type that fits the field's; a response
# schema (one with `required`) requires every field, since pbjson writes them
# all. Then every route of gw/gw.c's table with an op: its path, query and
# body parameters together are exactly the fields of the op's message.

_INTS = ("TYPE_INT32", "TYPE_INT64", "TYPE_UINT32", "TYPE_UINT64", "TYPE_SINT32",
         "TYPE_SINT64", "TYPE_FIXED32", "TYPE_FIXED64", "TYPE_SFIXED32", "TYPE_SFIXED64")
_WIDE = ("TYPE_INT64", "TYPE_UINT64", "TYPE_SINT64", "TYPE_FIXED64", "TYPE_SFIXED64")


def _proto_schemas():
    """{message or enum name: schema name} of the x-proto annotations."""
    out = {}
    for name, schema in doc()["components"]["schemas"].items():
        for key in ("x-proto", "x-proto-enum"):
            if key in schema:
                assert schema[key] not in out, "two schemas for %s" % schema[key]
                out[schema[key]] = name
    return out


def _type_name(fd, num):
    for name, value in fd.__class__.__dict__.items():
        if name.startswith("TYPE_") and value == num:
            return name
    raise AssertionError("type %d" % num)


def _check_value(where, field, prop, by_proto, problems):
    """prop (one value, not the array) fits field's type."""
    t = _type_name(field, field.type)
    types = prop.get("type")
    types = types if isinstance(types, list) else [types]
    if t in _INTS:
        want = ["integer", "string"] if t in _WIDE else ["integer"]
        if "integer" not in types or any(x not in want for x in types if x):
            problems.append("%s: %s is %s, documented as %r" % (where, field.name, t, types))
    elif t in ("TYPE_DOUBLE", "TYPE_FLOAT"):
        if types != ["number"]:
            problems.append("%s: %s is %s, documented as %r" % (where, field.name, t, types))
    elif t == "TYPE_BOOL":
        if types != ["boolean"]:
            problems.append("%s: %s is bool, documented as %r" % (where, field.name, types))
    elif t == "TYPE_STRING":
        if types != ["string"]:
            problems.append("%s: %s is string, documented as %r" % (where, field.name, types))
    elif t == "TYPE_BYTES":
        if types != ["string"] or prop.get("contentEncoding") != "base64":
            problems.append("%s: %s is bytes: a base64 string" % (where, field.name))
    elif t == "TYPE_MESSAGE":
        want = by_proto.get(field.message_type.name)
        ref = prop.get("$ref", "")
        if not want or ref != "#/components/schemas/" + want:
            problems.append("%s: %s is %s, documented as %r (schema for it: %s)" % (
                where, field.name, field.message_type.name, prop, want))
    elif t == "TYPE_ENUM":
        want = by_proto.get(field.enum_type.name)
        ref = prop.get("$ref", "")
        if not want or ref != "#/components/schemas/" + want:
            problems.append("%s: %s is enum %s, documented as %r" % (
                where, field.name, field.enum_type.name, prop))
    else:
        problems.append("%s: %s has type %s, which this check does not know" % (
            where, field.name, t))


def json_enum_names(enum):
    """The values of an enum descriptor as ttgw writes them (gw/pbjson.h):
    without the prefix every value shares, lower case; Status as named."""
    names = [v.name for v in enum.values]
    if enum.name == "Status" or len(names) < 2:
        return names
    prefix = ""
    for i, c in enumerate(names[0]):
        if c == "_" and all(n.startswith(names[0][:i + 1]) for n in names):
            prefix = names[0][:i + 1]
        elif c == "_":
            break
    return [n[len(prefix):].lower() for n in names]


def drift():
    """A list of every disagreement between the document and the protobuf
    schema (empty when they agree)."""
    pb = harness.pb2()
    by_proto = _proto_schemas()
    problems = []
    schemas = doc()["components"]["schemas"]
    for name, schema in schemas.items():
        if "x-proto-enum" in schema:
            enum = pb.DESCRIPTOR.enum_types_by_name.get(schema["x-proto-enum"])
            if not enum:
                problems.append("%s: no enum %s in the schema" % (name, schema["x-proto-enum"]))
                continue
            names = json_enum_names(enum)
            if sorted(schema.get("enum", [])) != sorted(names):
                problems.append("%s: enum %r, the schema has %r" % (
                    name, schema.get("enum"), names))
            continue
        if "x-proto" not in schema:
            continue
        msg = pb.DESCRIPTOR.message_types_by_name.get(schema["x-proto"])
        if not msg:
            problems.append("%s: no message %s in the schema" % (name, schema["x-proto"]))
            continue
        where = "components/schemas/%s (%s)" % (name, msg.name)
        props = schema.get("properties", {})
        path_fields = set(schema.get("x-path", []))
        extra = set(schema.get("x-gateway", []))
        fields = {f.name: f for f in msg.fields}
        for f in sorted(set(fields) - set(props) - path_fields):
            problems.append("%s: field %s is not documented" % (where, f))
        for p in sorted(set(props) - set(fields) - extra):
            problems.append("%s: property %s is not a field of the message" % (where, p))
        for p in sorted(set(props) & path_fields):
            problems.append("%s: %s comes from the path, not the body" % (where, p))
        if schema.get("additionalProperties") is not False:
            problems.append("%s: additionalProperties must be false" % where)
        if "required" in schema:
            missing = set(fields) - set(schema["required"])
            if missing:
                problems.append("%s: a response has every field; not required: %s" % (
                    where, ", ".join(sorted(missing))))
        for fname, f in fields.items():
            prop = props.get(fname)
            if prop is None:
                continue
            if f.label == f.LABEL_REPEATED:
                if prop.get("type") != "array" or "items" not in prop:
                    problems.append("%s: %s is repeated, documented as %r" % (where, fname, prop))
                    continue
                prop = prop["items"]
            _check_value(where, f, prop, by_proto, problems)
    # the routes: path + query + body == the op's fields
    request = pb.DESCRIPTOR.message_types_by_name["Request"]
    routes = op_routes()
    if len(routes) < 10:
        problems.append("schema/ops.def: only %d REST routes read" % len(routes))
    for method, path, op_name in routes:
        concrete = path.replace("*", "x")
        template, op = operation(method, concrete)
        item = _resolve(doc()["paths"][template])
        where = "%s %s (%s)" % (method, template, op_name)
        params = [_resolve(p) for p in item.get("parameters", []) + op.get("parameters", [])]
        names = {p["name"] for p in params if p.get("in") in ("path", "query")}
        body = set()
        rb = op.get("requestBody")
        if rb:
            schema = _resolve(_resolve(rb)["content"]["application/json"]["schema"])
            body = set(schema.get("properties", {}))
            if schema.get("x-proto") != request.fields_by_name[op_name].message_type.name:
                problems.append("%s: the body schema is not x-proto: %s" % (
                    where, request.fields_by_name[op_name].message_type.name))
        msg = request.fields_by_name[op_name].message_type
        fields = {f.name for f in msg.fields}
        for f in sorted(fields - names - body):
            problems.append("%s: field %s of %s is neither a parameter nor in the body" % (
                where, f, msg.name))
        # path and query parameters must be fields (the body's are checked above)
        for n in sorted(names - fields):
            problems.append("%s: parameter %s is not a field of %s" % (where, n, msg.name))
    return problems
