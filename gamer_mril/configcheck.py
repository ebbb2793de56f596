"""The configuration checked against ``schemas/config.schema.yaml`` with messages a user
can act on.

Snakemake's own ``validate`` prints the failing part of the schema after its message,
hundreds of lines for a typo. :func:`check_config` instead reports every problem on one
line each: the key path (``training.restarts``), where the value came from (which config
file, or ``--config`` on the command line), what is wrong and what is allowed, with the
nearest valid key for an unknown one (``trainig`` -> ``training``). Before it checks, it
reads text that spells a number as that number where the schema wants one (and ``true`` /
``false`` where it wants a boolean): ``snakemake --config 'training={restarts: 3}'``
gives the text ``'3'``, because Snakemake reads nested values on the command line as
text. The workflow still runs Snakemake's ``validate`` afterwards, which fills in the
schema's defaults.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from pathlib import Path

from .errors import ConfigError

#: How the schema's types read in a message.
TYPE_WORDS = {"integer": "a whole number", "number": "a number", "string": "text",
              "boolean": "true or false", "array": "a list", "object": "a mapping of keys "
              "to values", "null": "null"}

_TRUE, _FALSE = {"true", "yes", "on"}, {"false", "no", "off"}


def load_schema(path) -> dict:
    """The schema file (YAML or JSON) as a mapping."""
    import yaml

    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def _types(schema: Mapping) -> list:
    kind = schema.get("type")
    return [kind] if isinstance(kind, str) else list(kind or [])


def _as_number(text: str, kind: str):
    """``text`` as an int (``kind`` integer: a whole number, ``3`` or ``3.0``) or a float
    (``number``), or None."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    if kind == "integer":
        if not value.is_integer():
            return None
        return int(value)
    stripped = text.strip()
    try:
        return int(stripped)
    except ValueError:
        return value


def _convert(value: str, schema: Mapping):
    """``value`` (text) converted to the number or boolean ``schema`` wants, or ``value``
    itself where the schema takes text or no conversion fits."""
    kinds = _types(schema)
    if not kinds or "string" in kinds:
        return value
    for kind in ("integer", "number"):
        if kind in kinds:
            number = _as_number(value, kind)
            if number is not None:
                return number
    if "boolean" in kinds and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return value


def _branches(schema: Mapping) -> list:
    return [schema] + list(schema.get("oneOf", [])) + list(schema.get("anyOf", [])) + \
        list(schema.get("allOf", []))


def coerce(config, schema: Mapping, path=()) -> list:
    """Convert, in place, every text value of ``config`` that the schema wants as a
    number (or boolean) and that spells one; returns ``[(path, old, new)]``."""
    changes = []
    if isinstance(config, dict):
        for key in list(config):
            sub = None
            for branch in _branches(schema):
                if key in branch.get("properties", {}):
                    sub = branch["properties"][key]
                    break
                if isinstance(branch.get("additionalProperties"), Mapping):
                    sub = branch["additionalProperties"]
            if sub is None:
                continue
            value = config[key]
            if isinstance(value, str):
                new = _first_conversion(value, sub)
                if new is not value:
                    config[key] = new
                    changes.append(((*path, key), value, new))
            else:
                changes += coerce(value, sub, (*path, key))
    elif isinstance(config, list):
        for branch in _branches(schema):
            items = branch.get("items")
            if isinstance(items, Mapping):
                for i, value in enumerate(config):
                    if isinstance(value, str):
                        new = _first_conversion(value, items)
                        if new is not value:
                            config[i] = new
                            changes.append(((*path, i), value, new))
                    else:
                        changes += coerce(value, items, (*path, i))
                break
    return changes


def _first_conversion(value: str, schema: Mapping):
    """The conversion of the first branch of ``schema`` that converts ``value``."""
    for branch in _branches(schema):
        if branch.get("type") is None:
            continue
        if "string" in _types(branch):
            return value
        new = _convert(value, branch)
        if new is not value:
            return new
    return value


def key_path(path) -> str:
    """``training.restarts``, ``preprocessing.crop_shape[2]``; ``the top level`` for ()."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the top level"


def _lookup(mapping, path) -> bool:
    node = mapping
    for part in path:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return False
    return True


def config_sources(files=(), command_line=None, command_line_files=()) -> list:
    """``[(name, mapping)]`` of the config as Snakemake merges it, lowest precedence
    first: the workflow's own config files (``files`` that are not
    ``command_line_files``), those given with ``--configfile`` (in their order), and the
    command line's ``--config``."""
    import yaml

    given = [str(f) for f in command_line_files or ()]
    absolute = {str(Path(f).absolute()) for f in given}
    own = [str(f) for f in files or () if str(Path(f).absolute()) not in absolute]
    out = []
    for f in own + given:
        try:
            data = yaml.safe_load(Path(f).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            data = {}
        out.append((str(f), data if isinstance(data, Mapping) else {}))
    if command_line:
        out.append(("--config on the command line", _plain(command_line)))
    return out


def _plain(value):
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def source_of(path, sources) -> str:
    """Where the value at ``path`` came from: the last source that sets it (``sources``:
    :func:`config_sources`), or the last one that sets its parent."""
    for depth in range(len(path), 0, -1):
        for name, data in reversed(list(sources)):
            if _lookup(data, path[:depth]):
                return name
    return ""


def _allowed_keys(schema: Mapping) -> list:
    keys = []
    for branch in _branches(schema):
        keys += [k for k in branch.get("properties", {}) if k not in keys]
    return keys


def _describe_type(schema: Mapping) -> str:
    return " or ".join(TYPE_WORDS.get(t, t) for t in _types(schema))


def _fits(value, branch: Mapping) -> bool:
    """Whether ``value`` has the type a ``oneOf`` branch asks for."""
    kinds = _types(branch)
    checks = {"object": isinstance(value, Mapping), "array": isinstance(value, list),
              "string": isinstance(value, str), "boolean": isinstance(value, bool),
              "integer": isinstance(value, int) and not isinstance(value, bool),
              "number": isinstance(value, (int, float)) and not isinstance(value, bool),
              "null": value is None}
    return any(checks.get(k, False) for k in kinds)


def _message(err, config) -> list:
    """``[(path, text)]`` for one jsonschema error."""
    path = tuple(err.absolute_path)
    where = key_path(path)
    value = err.instance
    schema = err.schema if isinstance(err.schema, Mapping) else {}
    kind = err.validator
    if kind == "additionalProperties":
        allowed = _allowed_keys(schema)
        out = []
        for extra in [k for k in value if k not in allowed]:
            near = difflib.get_close_matches(str(extra), allowed, n=1, cutoff=0.6)
            hint = f"did you mean '{near[0]}'? The" if near else "the"
            inside = f"under {where}" if path else "at the top level"
            out.append(((*path, extra), f": unknown key '{extra}' {inside}; {hint} "
                        f"keys allowed there are {', '.join(allowed)}."))
        return out
    if kind == "required":
        missing = [k for k in err.validator_value if k not in value]
        return [(path, f" lacks the key(s) {', '.join(repr(k) for k in missing)}, which "
                       f"must be set.")]
    if kind in ("oneOf", "anyOf") and err.context:
        fitting = [i for i, b in enumerate(err.validator_value)
                   if _fits(value, b)]
        inside = [e for e in err.context if e.relative_schema_path
                  and e.relative_schema_path[0] in fitting]
        if len(fitting) == 1 and inside:
            # the value has the shape of one branch: its problems are the ones to fix
            return [m for e in inside for m in _message(e, config)]
        kinds = [(_describe_type(b) or ("false" if b.get("const") is False else "?"))
                 for b in err.validator_value]
        return [(path, f" is {value!r}, but must be one of: {'; '.join(kinds)}.")]
    shown = f" is {value!r}"
    if kind == "type":
        wanted = _describe_type(schema)
        text = f"{shown}, but must be {wanted}"
        if isinstance(value, str) and set(_types(schema)) & {"integer", "number"}:
            example = "3" if "integer" in _types(schema) else "0.5"
            text += f": it is text that does not read as {wanted}; {_examples(path, example)}"
        return [(path, text + ".")]
    if kind == "enum":
        return [(path, f"{shown}, but must be one of "
                       f"{', '.join(str(v) for v in err.validator_value)}.")]
    if kind == "pattern":
        text = f"{shown}, which does not have the form this key needs"
        if "\\{subject\\}" in str(err.validator_value) and isinstance(value, str):
            lacking = [f"{{{p}}}" for p in ("subject", "session") if f"{{{p}}}" not in value]
            text = f"{shown}, which lacks the placeholder {' and '.join(lacking)}"
        return [(path, text + ".")]
    bounds = {"minimum": "at least", "maximum": "at most", "exclusiveMinimum": "above",
              "exclusiveMaximum": "below", "minItems": "a list of at least",
              "maxItems": "a list of at most", "minLength": "text of at least"}
    if kind in bounds:
        unit = {"minItems": " items", "maxItems": " items", "minLength": " characters"}.get(
            kind, "")
        return [(path, f"{shown}, but must be {bounds[kind]} {err.validator_value}{unit}.")]
    if kind == "uniqueItems":
        return [(path, f"{shown}, which holds an item twice; list each once.")]
    if kind == "contains":
        return [(path, f"{shown}, which must contain {err.validator_value.get('const')!r}.")]
    if kind == "const":
        return [(path, f"{shown}, but can only be {err.validator_value!r}.")]
    return [(path, f"{shown}: {err.message.splitlines()[0][:200]}.")]


def _examples(path, example: str) -> str:
    """How to set the key at ``path`` to ``example`` in a config file and on the command
    line (``--config 'training={restarts: 3}'``)."""
    keys = [str(p) for p in path if not isinstance(p, int)]
    if any(isinstance(p, int) for p in path) or not keys:
        return "write every item of the list as a number, without quotes or units"
    if len(keys) == 1:
        return (f"write it without quotes or units, as `{keys[0]}: {example}` in a config "
                f"file or --config {keys[0]}={example} on the command line")
    inner = example
    for key in reversed(keys[1:]):
        inner = f"{{{key}: {inner}}}"
    return (f"write it without quotes or units, as `{keys[-1]}: {example}` under "
            f"`{'.'.join(keys[:-1])}` in a config file or --config '{keys[0]}={inner}' on "
            f"the command line")


def _schema_at(schema: Mapping, path) -> Mapping:
    node = schema
    for part in path:
        found = None
        for branch in _branches(node):
            if isinstance(part, int) and isinstance(branch.get("items"), Mapping):
                found = branch["items"]
            elif part in branch.get("properties", {}):
                found = branch["properties"][part]
            if found is not None:
                break
        if found is None:
            return {}
        node = found
    return node


def problems(config, schema: Mapping, sources=()) -> list:
    """One line per problem of ``config`` against ``schema``: the key path, where the
    value came from (``sources``: :func:`config_sources`), what is wrong and allowed."""
    from jsonschema import Draft202012Validator

    lines = []
    errors = sorted(Draft202012Validator(schema).iter_errors(config),
                    key=lambda e: [str(p) for p in e.absolute_path])
    for err in errors:
        for path, text in _message(err, config):
            origin = source_of(path, sources)
            desc = _schema_at(schema, path).get("description") if err.validator not in (
                "additionalProperties", "required") else None
            line = f"{key_path(path)}{f' (in {origin})' if origin else ''}{text}"
            if desc:
                line += f" ({key_path(path).rsplit('.', 1)[-1]}: {' '.join(str(desc).split())})"
            lines.append(line)
    return lines


def check_config(config, schema, sources=()) -> list:
    """Convert number-like text where the schema wants numbers, then check ``config``
    against ``schema`` (a mapping or the schema file); returns the conversions made
    (``["training.restarts: '3' read as 3"]``) and raises
    :class:`gamer_mril.errors.ConfigError` naming the config files and every problem."""
    if not isinstance(schema, Mapping):
        schema = load_schema(schema)
    changes = coerce(config, schema)
    found = problems(config, schema, sources)
    if found:
        names = [name for name, _ in sources] or ["the config"]
        head = (f"The config ({'; '.join(names)}) has {len(found)} problem(s); "
                f"fix them there:")
        raise ConfigError(head + "\n" + "\n".join(f"  - {line}" for line in found))
    return [f"{key_path(path)}: {old!r} read as {new!r}" for path, old, new in changes]


__all__ = ["check_config", "coerce", "config_sources", "key_path", "problems",
           "source_of", "load_schema"]
