"""The event records against their JSON Schema (``stream/event.schema.json``, draft 2020-12),
checked by the ``jsonschema`` package (the test extra): for the tests only."""

from __future__ import annotations

import functools

import jsonschema

from microgesture.stream.events import load_schema


def validate_event(record: dict, schema: dict | None = None) -> None:
    """Raise ``ValueError("$.field: why")`` naming the field of ``record`` that breaks the
    schema (the most relevant error, by ``jsonschema.exceptions.best_match``)."""
    validator = _shipped() if schema is None else jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(record))
    if error is not None:
        path = "$" + "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in error.absolute_path)
        raise ValueError(f"{path}: {error.message}")


@functools.lru_cache(maxsize=1)
def _shipped() -> jsonschema.Draft202012Validator:
    """The shipped schema's validator; the schema itself is checked against draft 2020-12."""
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)
