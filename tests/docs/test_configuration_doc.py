"""docs/configuration.md and config.example.yaml match the settings code, key for key."""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from polly.config import OTEL_ENV, UPSTREAM_ENV, SecretUrl, Settings, env_name, load_settings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
ROW = re.compile(r"^\| `(?P<key>[a-z_.]+)` \| (?P<env>[^|]*) \| `(?P<default>[^`]*)` \| (?P<rule>[^|]*) \|")
#: Keys whose values polly checks beyond their type (as `polly run` does), and how the doc says so.
CHECKED_URLS = {
    "database.url": "database URL (secret)",
    "database.async_url": "database URL (secret) or unset",
    "redis.url": "`redis://`, `rediss://` or `unix://` URL (secret) or unset",
    "general.monitoring.otlp.endpoint": "`http://` or `https://` URL, or unset",
}


def leaves(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> dict[str, FieldInfo]:
    out: dict[str, FieldInfo] = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(leaves(ann, (*prefix, name)))
        else:
            out[".".join((*prefix, name))] = field
    return out


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def type_rule(ann: Any) -> str:
    if get_origin(ann) in (Union, types.UnionType):
        inner = [a for a in get_args(ann) if a is not type(None)]
        return f"{type_rule(inner[0])} or unset"
    if get_origin(ann) is Literal:
        values = [f"`{v}`" for v in get_args(ann)]
        return values[0] if len(values) == 1 else ", ".join(values[:-1]) + f" or {values[-1]}"
    if get_origin(ann) is dict:
        return "mapping of strings"
    if isinstance(ann, type) and issubclass(ann, SecretUrl):
        return "URL (secret)"
    if isinstance(ann, type) and issubclass(ann, SecretStr):
        return "string (secret)"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}[ann]


def expected_rule(key: str, field: FieldInfo) -> str:
    if key in CHECKED_URLS:
        return CHECKED_URLS[key]
    parts = [type_rule(field.annotation)]
    for meta in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "length ≥")):
            if isinstance(meta, getattr(annotated_types, {"min_length": "MinLen"}.get(attr, attr.title()))):
                parts.append(f"{sign} {_number(getattr(meta, attr))}")
    return ", ".join(parts)


def expected_default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "—"
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)


def expected_env(key: str) -> set[str]:
    path = tuple(key.split("."))
    names = {var for var, p in UPSTREAM_ENV.items() if p == path}
    names |= {var for var, (p, _) in OTEL_ENV.items() if p == path}
    return names | {env_name(path)}


def doc_rows() -> dict[str, dict[str, str]]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if match := ROW.match(line):
            rows[match["key"]] = {k: v.strip() for k, v in match.groupdict().items()}
    return rows


def test_every_documented_rule_default_and_variable_matches_the_code() -> None:
    rows = doc_rows()
    problems = []
    for key, field in leaves(Settings).items():
        row = rows.get(key)
        if row is None:
            problems.append(f"{key}: no row")
            continue
        if row["rule"] != (rule := expected_rule(key, field)):
            problems.append(f"{key}: rule {row['rule']!r}, the code says {rule!r}")
        if row["default"] != (default := expected_default(field)):
            problems.append(f"{key}: default {row['default']!r}, the code says {default!r}")
        if set(re.findall(r"`([A-Z_]+)`", row["env"])) != (env := expected_env(key)):
            problems.append(f"{key}: variables {row['env']!r}, the code reads {sorted(env)}")
    assert problems == []


def test_no_internal_type_names_in_the_doc() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "polly.config." not in text
    assert "pydantic." not in text


def test_the_shipped_example_config_validates_and_covers_every_section() -> None:
    example = ROOT / "config.example.yaml"
    settings = load_settings(example, environ={}, cwd=ROOT)
    assert settings == Settings()  # as shipped it changes nothing
    data = yaml.safe_load(example.read_text(encoding="utf-8"))
    assert set(data) == set(Settings.model_fields)
    assert "#" in example.read_text(encoding="utf-8")  # commented
