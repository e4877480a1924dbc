"""The event JSON Schema (draft 2020-12, ``stream/event.schema.json``) and a validator
that needs no dependency (``jsonschema`` is used when installed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

SCHEMA_PATH = Path(__file__).with_name("event.schema.json")


def load_schema() -> dict:
    """The event JSON Schema (draft 2020-12) shipped beside this module."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_event(record: dict, schema: dict | None = None) -> None:
    """Raise ``ValueError`` naming the first field of ``record`` that breaks the schema.

    Uses ``jsonschema`` when it is installed, otherwise a small validator for the
    keywords the schema uses (type, const, enum, required, properties,
    additionalProperties, items, prefixItems, min/maxItems, minimum, pattern,
    $ref to $defs, oneOf, allOf, if/then/else).
    """
    schema = load_schema() if schema is None else schema
    try:
        import jsonschema   # optional: not a dependency
    except ImportError:
        _check(record, schema, schema, "$")
        return
    err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(record))
    if err is not None:
        path = "$" + "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in err.absolute_path)
        raise ValueError(f"{path}: {err.message}")


_JSON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is_type(value, name: str) -> bool:
    if name in ("integer", "number"):
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (name == "number" and isinstance(value, float))
    return isinstance(value, _JSON_TYPES[name])


def _check(value, schema: dict, root: dict, path: str) -> None:  # noqa: C901 (a flat list of keywords)
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"{path}: only local $ref are supported, got {ref}")
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        _check(value, target, root, path)
    for sub in schema.get("allOf", ()):
        _check(value, sub, root, path)
    if "if" in schema:
        try:
            _check(value, schema["if"], root, path)
            branch = schema.get("then")
        except ValueError:
            branch = schema.get("else")
        if branch is not None:
            _check(value, branch, root, path)
    if "oneOf" in schema:
        errors = []
        for sub in schema["oneOf"]:
            try:
                _check(value, sub, root, path)
            except ValueError as err:
                errors.append(str(err))
        matched = len(schema["oneOf"]) - len(errors)
        if matched != 1:
            raise ValueError(f"{path}: matches {matched} of oneOf, expected 1 ({'; '.join(errors)})")
    if "type" in schema:
        names = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
        if not any(_is_type(value, n) for n in names):
            raise ValueError(f"{path}: expected {' or '.join(names)}, got {type(value).__name__} {value!r:.60}")
    if "const" in schema and value != schema["const"]:
        raise ValueError(f"{path}: expected {schema['const']!r}, got {value!r:.60}")
    if "enum" in schema and value not in schema["enum"]:
        raise ValueError(f"{path}: {value!r:.60} is not one of {schema['enum']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise ValueError(f"{path}: {value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise ValueError(f"{path}: {value} is above the maximum {schema['maximum']}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        raise ValueError(f"{path}: {value!r:.60} does not match {schema['pattern']}")
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                raise ValueError(f"{path}: missing required field {key!r}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                _check(item, props[key], root, f"{path}.{key}")
            elif extra is False:
                raise ValueError(f"{path}: unexpected field {key!r}")
            elif isinstance(extra, dict):
                _check(item, extra, root, f"{path}.{key}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise ValueError(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise ValueError(f"{path}: more than {schema['maxItems']} items")
        prefix = schema.get("prefixItems", [])
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else schema.get("items")
            if sub is False:
                raise ValueError(f"{path}: unexpected item {i}")
            if isinstance(sub, dict):
                _check(item, sub, root, f"{path}[{i}]")
