"""First validation pass: JSON Schema, turned into `Issue`s with stable codes and did-you-mean."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING, Any

from .errors import Issue
from .loading import Path_, SourceMap
from .resources import schema
from .schema_gates import digest, fills_defaults, gate_document, module_name
from .timestamps import TIMESTAMP_EXAMPLES, TIMESTAMP_PATTERN

if TYPE_CHECKING:
    import jsonschema

# jsonschema keyword -> our stable error code
_CODES = {
    "type": "schema-type",
    "required": "schema-required",
    "additionalProperties": "schema-unknown-field",
    "enum": "schema-enum",
    "const": "schema-const",
    "minimum": "schema-range",
    "maximum": "schema-range",
    "exclusiveMinimum": "schema-range",
    "exclusiveMaximum": "schema-range",
    "pattern": "schema-pattern",
    "minLength": "schema-length",
    "maxLength": "schema-length",
    "minItems": "schema-length",
    "maxItems": "schema-length",
    "minProperties": "schema-length",
    "maxProperties": "schema-length",
    "uniqueItems": "schema-unique",
}


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    import difflib  # only a mistake needs it

    match = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean `{match[0]}`?" if match else ""


def not_one_of(value: Any, options: Iterable[Any]) -> str:
    """The message for a value outside a closed set: the set as JSON, and a did-you-mean."""
    options = list(options)
    shown = ", ".join(f"`{_show(o)}`" for o in options)
    hint = did_you_mean(value, [o for o in options if isinstance(o, str)]) if isinstance(value, str) else ""
    return f"`{_show(value)}` is not one of {shown}{hint}"


@cache
def validator(name: str) -> jsonschema.protocols.Validator:
    # imported here: ~50 ms at start-up, and only invalid input (the slow path) needs its reports
    import jsonschema

    definition = schema(name)
    cls = jsonschema.validators.validator_for(definition)
    cls.check_schema(definition)
    return cls(definition)


@cache
def fast_validator(name: str, definition: str | None = None) -> Any:
    """A shipped schema (or one of its `$defs`) compiled by fastjsonschema into Python: ~5 us a
    check instead of jsonschema's ~95 us. It only gates; on failure jsonschema writes the report.
    The gate generated ahead of time (schema_gates.py) is used while it matches the schema."""
    try:
        generated = importlib.import_module(f".gates.{module_name(name, definition)}", __package__)
    except ImportError:
        generated = None
    if generated is not None and digest(name) == generated.SCHEMA_SHA256:
        return generated.gate
    import fastjsonschema  # only for a schema edited since its gate was generated

    return fastjsonschema.compile(gate_document(name, definition), use_default=fills_defaults(name))


def fast_valid(name: str, data: Any, definition: str | None = None) -> bool:
    """Whether `data` is valid against the named schema (or its definition), by the fast gate."""
    try:
        fast_validator(name, definition)(data)
    except ValueError:  # a generated gate's GateRefused, or fastjsonschema's JsonSchemaException
        return False
    return True


def schema_issues(name: str, data: Any, source: SourceMap) -> list[Issue]:
    """Every schema violation of `data` against the named schema, sorted by position."""
    issues: list[Issue] = []
    required_seen = set()
    for error in validator(name).iter_errors(data):
        if error.validator == "required":
            # jsonschema raises one `required` error per missing field, and each is translated
            # into the whole list of missing fields: translate one per object
            where = (tuple(error.absolute_path), id(error.schema))
            if where in required_seen:
                continue
            required_seen.add(where)
        issues.extend(_translate(error, source))
    return sorted(issues, key=lambda i: (i.line or 0, i.column or 0, i.path))


def _show(value: Any, *, as_json: bool = True) -> str:
    """A value as the user wrote it: JSON (`null`, `true`, `"text"`), or a string bare."""
    if isinstance(value, str) and not as_json:
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError):  # not JSON at all: a Python caller's object
            text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _translate(error: jsonschema.ValidationError, source: SourceMap) -> list[Issue]:
    path: Path_ = tuple(error.absolute_path)
    keyword = error.validator
    code = _CODES.get(str(keyword), "schema-invalid")
    value = error.instance
    name = path[-1] if path else "document"
    if keyword == "additionalProperties":
        allowed = error.schema.get("properties", {})
        return [
            source.issue(code, path + (extra,), f"unknown field `{extra}`{did_you_mean(extra, allowed)}", key=True)
            for extra in value
            if extra not in allowed
        ]
    if keyword == "required":
        import difflib

        missing = [field for field in error.validator_value if field not in value]
        # a misspelt key is reported once, as an unknown field with a did-you-mean
        extras = [key for key in value if key not in error.schema.get("properties", {})]
        return [
            source.issue(code, path + (field,), f"missing required field `{field}`")
            for field in missing
            if not difflib.get_close_matches(field, extras, n=1, cutoff=0.6)
        ]
    if keyword == "type":
        wanted = error.validator_value
        wanted = " or ".join(wanted) if isinstance(wanted, list) else wanted
        message = f"`{name}` must be of type {wanted}, got `{_show(value)}` ({_json_type(value)})"
    elif keyword == "enum":
        message = not_one_of(value, error.validator_value)
    elif keyword == "const":
        message = f"`{name}` must be `{_show(error.validator_value)}`, got `{_show(value)}`"
    elif keyword in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        relation = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[keyword]
        message = f"`{name}` must be {relation} {error.validator_value}, got `{_show(value)}`"
    elif keyword == "pattern" and error.validator_value == TIMESTAMP_PATTERN:
        message = f"`{_show(value, as_json=False)}` is not a valid `{name}`: write an ISO-8601 timestamp {TIMESTAMP_EXAMPLES}"
    elif keyword == "pattern":
        # the schema's own words say what is expected better than its regular expression
        expected = error.schema.get("description") or f"must match `{error.validator_value}`"
        message = f"`{_show(value, as_json=False)}` is not a valid `{name}`: {expected[0].lower() + expected[1:].rstrip('.')}"
    elif keyword in ("minLength", "minItems"):
        message = f"`{name}` must not be shorter than {error.validator_value}"
    elif keyword == "minProperties":
        message = f"`{name}` must have at least {error.validator_value} field{'s' * (error.validator_value != 1)}"
    elif keyword == "maxProperties":
        message = f"`{name}` must have at most {error.validator_value} field{'s' * (error.validator_value != 1)}"
    elif keyword in ("maxLength", "maxItems"):
        message = f"`{name}` must not be longer than {error.validator_value}"
    elif keyword == "uniqueItems":
        message = f"`{name}` lists the same item twice"
    else:
        message = error.message
    return [source.issue(code, path, message)]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"
