#!/usr/bin/env python3
"""Checks custom resources against the schemas of the CRDs that define them, as the
API server does under kubectl's strict field validation: types, enums, required
fields, and no field the schema does not name (unless it preserves unknown fields).

usage: check-custom-resources.py CRDS.yaml [--valid FILE...] [--invalid FILE...]

--valid: every custom resource in these files must be admitted.
--invalid: each file holds one custom resource that must be refused; its first line
  `# expect: TEXT` names what the refusal must say, so it is refused for its reason.
Documents of other API groups are left to kubernetes-validate.
"""

import argparse
import sys

import jsonschema
import yaml


def strict(schema):
    """The schema with unknown fields refused where the API server refuses them."""
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
    if isinstance(schema.get("items"), dict):
        schema["items"] = strict(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = strict(schema["additionalProperties"])
    return schema


def load_crds(path):
    """(apiVersion, kind) -> validator of the whole object."""
    validators = {}
    with open(path, encoding="utf-8") as f:
        for doc in yaml.safe_load_all(f):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                schema = strict(version["schema"]["openAPIV3Schema"])
                # every object has these; the API server checks them itself
                schema["properties"].update(
                    apiVersion={"type": "string"},
                    kind={"type": "string"},
                    metadata={"type": "object"},
                )
                api_version = f"{spec['group']}/{version['name']}"
                validators[(api_version, spec["names"]["kind"])] = (
                    jsonschema.Draft7Validator(schema)
                )
    return validators


def custom_resources(path, validators):
    """(label, errors) per custom resource in the file; errors are strings."""
    with open(path, encoding="utf-8") as f:
        docs = list(yaml.safe_load_all(f))
    out = []
    for i, doc in enumerate(docs, start=1):
        if not doc:
            continue
        key = (doc.get("apiVersion", ""), doc.get("kind", ""))
        if key[0].split("/")[0] not in {v.split("/")[0] for v, _ in validators}:
            continue  # not a group our CRDs define: a built-in kind
        label = f"{path}: document {i}: {key[1]} {doc.get('metadata', {}).get('name')}"
        validator = validators.get(key)
        if validator is None:
            out.append((label, [f"no CRD defines {key[0]} {key[1]}"]))
            continue
        errors = [
            f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
            for e in validator.iter_errors(doc)
        ]
        out.append((label, errors))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("crds")
    parser.add_argument("--valid", nargs="*", default=[])
    parser.add_argument("--invalid", nargs="*", default=[])
    args = parser.parse_args()
    validators = load_crds(args.crds)
    failed = False
    for path in args.valid:
        for label, errors in custom_resources(path, validators):
            for error in errors:
                print(f"{label}: {error}", file=sys.stderr)
                failed = True
    for path in args.invalid:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
        expect = first.removeprefix("# expect:").strip()
        found = custom_resources(path, validators)
        if not first.startswith("# expect:") or len(found) != 1:
            print(f"{path}: needs `# expect: TEXT` and one custom resource", file=sys.stderr)
            failed = True
            continue
        label, errors = found[0]
        if not any(expect in e for e in errors):
            print(f"{label}: admitted, or refused for another reason than {expect!r}: {errors}",
                  file=sys.stderr)
            failed = True
        else:
            print(f"{label}: refused as expected ({expect})")
    if failed:
        sys.exit(1)
    print(f"custom resources checked against {len(validators)} CRD versions")


if __name__ == "__main__":
    main()
