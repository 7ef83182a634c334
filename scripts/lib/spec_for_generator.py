# Writes a copy of the OpenAPI spec that openapi-python-client can type completely.
#   usage: spec_for_generator.py SPEC OUT
# poem-openapi documents a field whose type is a named schema as
#   {"description": d, "allOf": [{"$ref": X}, {"description": d}]}
# (OpenAPI 3.0 ignores siblings of $ref). openapi-python-client cannot take allOf of an enum
# ("Cannot take allOf a non-object") and drops every model holding one, so this replaces exactly
# that shape with {"$ref": X}: the same type, without the field's description. Nothing else changes.
import json
import sys


def collapse(node, counter):
    if isinstance(node, list):
        return [collapse(item, counter) for item in node]
    if not isinstance(node, dict):
        return node
    parts = node.get("allOf")
    if (
        isinstance(parts, list)
        and len(parts) == 2
        and set(parts[0]) == {"$ref"}
        and set(parts[1]) <= {"description"}
        and set(node) <= {"allOf", "description"}
    ):
        counter.append(parts[0]["$ref"])
        return {"$ref": parts[0]["$ref"]}
    return {key: collapse(value, counter) for key, value in node.items()}


def main():
    source, out = sys.argv[1:3]
    with open(source, encoding="utf-8") as file:
        spec = json.load(file)
    collapsed = []
    spec = collapse(spec, collapsed)
    with open(out, "w", encoding="utf-8") as file:
        json.dump(spec, file, indent=2)
    print(f"described references collapsed to plain $ref for the generator: {len(collapsed)}")


if __name__ == "__main__":
    main()
