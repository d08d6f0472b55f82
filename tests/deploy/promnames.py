"""OpenTelemetry → Prometheus names, PromQL selectors, and the metric list of ``docs/metrics.md``.

One place for the name translation the deploy/ configs rely on, so a renamed metric breaks the build.

**Translation** (the collector's ``prometheus`` exporter with its default strategy,
``UnderscoreEscapingWithSuffixes``; the Python SDK's ``opentelemetry-exporter-prometheus`` matches
it except where noted):

- the name is split on every character outside ``[a-zA-Z0-9:]`` (``.``, ``-``, ``_``, ...) and the
  non-empty pieces are joined with ``_``: ``db.client.connection.count`` → ``db_client_connection_count``;
- the unit becomes a suffix: ``{...}`` annotations are dropped (``{connection}`` adds nothing),
  ``By`` → ``bytes``, ``s`` → ``seconds`` (table below), ``a/b`` → ``a_per_b`` with ``s`` → ``second``;
  the suffix is not added again when the name already contains it as a word;
- unit ``1`` on a gauge (or UpDownCounter) adds ``ratio`` in the collector and nothing in the
  Python SDK (its exporter maps ``1`` to the empty unit): :data:`Target` picks which;
- a monotonic counter ends in ``_total``; UpDownCounters and gauges do not (they are gauges);
- a histogram is three series: ``_bucket`` (label ``le``), ``_sum`` and ``_count``;
- attribute keys become labels with every run of characters outside ``[a-zA-Z0-9]`` turned into
  ``_``: ``db.client.connection.pool.name`` → ``db_client_connection_pool_name``;
- resource attributes are not labels: they are on ``target_info``; ``service.name`` becomes ``job``
  and ``service.instance.id`` becomes ``instance`` (collector), or the scrape supplies both (direct).

**Selectors**: :func:`selectors` lexes PromQL well enough to list every vector selector (metric
name plus its ``{...}`` matchers), skipping functions, aggregations, grouping label lists, strings,
numbers, durations and keywords. It is not a full parser: it rejects nothing, it only finds names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "updowncounter", "gauge", "histogram"]
Target = Literal["collector", "sdk"]

#: UCUM units with a Prometheus word (the table both exporters share).
UNIT_WORDS: Mapping[str, str] = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tebibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "%": "percent",
}
#: The denominator of ``a/b`` units, singular.
PER_UNIT_WORDS: Mapping[str, str] = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}
#: Series every Prometheus has that no document lists.
BUILTIN_SERIES = frozenset({"up", "target_info"})

_NON_NAME = re.compile(r"[^a-zA-Z0-9:]+")
_NON_LABEL = re.compile(r"[^a-zA-Z0-9]+")
_ANNOTATION = re.compile(r"\{[^}]*\}")


@dataclass(frozen=True)
class MetricSpec:
    """One documented metric: its OpenTelemetry name, instrument kind and UCUM unit (``""`` if none)."""

    name: str
    kind: Kind
    unit: str
    attributes: tuple[str, ...] = ()


def kind_of(instrument: str) -> Kind:
    """Normalise an instrument as a document writes it (``ObservableUpDownCounter``, ``Histogram``, ...)."""
    text = re.sub(r"[^a-z]", "", instrument.lower()).removeprefix("observable").removeprefix("async")
    text = text.removeprefix("synchronous").removeprefix("sync")
    if "updowncounter" in text:
        return "updowncounter"
    if "counter" in text:
        return "counter"
    if "histogram" in text:
        return "histogram"
    if "gauge" in text:
        return "gauge"
    msg = f"unknown instrument {instrument!r}: expected Counter, UpDownCounter, Gauge or Histogram"
    raise ValueError(msg)


def _unit_words(unit: str) -> tuple[str, str]:
    """(main, per) suffix words of a UCUM unit; either may be empty."""
    unit = _ANNOTATION.sub("", unit).strip()
    if not unit or unit == "1":
        return "", ""
    main, _, per = unit.partition("/")
    main_word = UNIT_WORDS.get(main, _NON_NAME.sub("_", main).strip("_"))
    per_word = PER_UNIT_WORDS.get(per, _NON_NAME.sub("_", per).strip("_")) if per else ""
    return main_word, per_word


def base_name(spec: MetricSpec, target: Target = "collector") -> str:
    """The Prometheus family name of ``spec`` (a counter's includes ``_total``)."""
    tokens = [t for t in _NON_NAME.split(spec.name.replace("_", ".")) if t]
    main, per = _unit_words(spec.unit)
    if main and main not in tokens:
        tokens.append(main)
    if per and f"per_{per}" not in "_".join(tokens):
        tokens.extend(["per", per])
    if spec.kind == "counter":
        tokens = [t for t in tokens if t != "total"]
        tokens.append("total")
    elif target == "collector" and spec.unit == "1" and spec.kind != "histogram" and "ratio" not in tokens:
        tokens.append("ratio")
    name = "_".join(tokens)
    return f"_{name}" if name[:1].isdigit() else name


def series_names(spec: MetricSpec, target: Target = "collector") -> frozenset[str]:
    """Every series name ``spec`` produces in Prometheus."""
    name = base_name(spec, target)
    if spec.kind == "histogram":
        return frozenset({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
    return frozenset({name})


def sdk_renames(specs: Iterable[MetricSpec]) -> dict[str, str]:
    """SDK name → collector name for every metric the two exporters name differently (unit ``1`` gauges)."""
    return {
        base_name(spec, "sdk"): base_name(spec, "collector")
        for spec in specs
        if spec.kind != "histogram" and base_name(spec, "sdk") != base_name(spec, "collector")
    }


def label_name(attribute: str) -> str:
    """The Prometheus label an attribute key becomes."""
    label = _NON_LABEL.sub("_", attribute)
    return f"_{label}" if label[:1].isdigit() else label


def series_index(specs: Iterable[MetricSpec], target: Target = "collector") -> dict[str, MetricSpec]:
    """Series name → the documented metric it comes from; raises if two metrics collide."""
    index: dict[str, MetricSpec] = {}
    for spec in specs:
        for series in series_names(spec, target):
            if series in index and index[series] != spec:
                msg = f"{spec.name} and {index[series].name} both become {series}"
                raise ValueError(msg)
            index[series] = spec
    return index


# --- docs/metrics.md -----------------------------------------------------------------------------------

_DOC_NAME = re.compile(r"`([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+)`")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _column(header: list[str], *words: str) -> int | None:
    for i, cell in enumerate(header):
        if any(word in cell.lower() for word in words):
            return i
    return None


def parse_metrics_doc(text: str) -> list[MetricSpec]:
    """Every metric in the markdown tables of ``docs/metrics.md``.

    A table counts when its header has a name (or metric) column, an instrument (or kind/type)
    column and a unit column; its rows whose name cell holds a dotted name in backticks are metrics.
    Attributes are the dotted backticked names of an ``attribute`` column, when there is one.
    """
    specs: dict[str, MetricSpec] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.lstrip().startswith("|") or i + 1 >= len(lines):
            continue
        if not re.fullmatch(r"\s*\|?[\s:|-]+\|?\s*", lines[i + 1]) or "-" not in lines[i + 1]:
            continue
        header = _cells(line)
        name_col = _column(header, "name", "metric")
        kind_col = _column(header, "instrument", "kind", "type")
        unit_col = _column(header, "unit")
        attr_col = _column(header, "attribute")
        if name_col is None or kind_col is None or unit_col is None:
            continue
        for row in lines[i + 2 :]:
            if not row.lstrip().startswith("|"):
                break
            cells = _cells(row)
            if len(cells) <= max(name_col, kind_col, unit_col):
                continue
            match = _DOC_NAME.search(cells[name_col])
            if match is None:
                continue
            unit = cells[unit_col].strip("` ")
            unit = "" if unit.lower() in {"", "-", "—", "none", "(none)"} else unit
            attrs: tuple[str, ...] = ()
            if attr_col is not None and attr_col < len(cells):
                attrs = tuple(re.findall(r"`([a-z][a-z0-9_.]*)`", cells[attr_col]))
            spec = MetricSpec(match.group(1), kind_of(cells[kind_col]), unit, attrs)
            specs[spec.name] = spec
    return list(specs.values())


# --- PromQL --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selector:
    """One vector selector of a query: its metric name (``None`` for ``{__name__=...}``) and matchers."""

    name: str | None
    matchers: str

    @property
    def text(self) -> str:
        return f"{self.name or ''}{self.matchers}"


KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"atan2", "inf", "nan", "start", "end"}
)
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_AGG_MODIFIERS = frozenset({"by", "without"})
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_NUMBER = re.compile(r"(?:0x[0-9a-fA-F]+|[0-9][0-9a-zA-Z.]*(?:[eE][+-]?[0-9]+)?)")
_NAME_MATCHER = re.compile(r"__name__\s*=\s*[\"']([^\"']+)[\"']")


def _skip_string(expr: str, i: int) -> int:
    quote = expr[i]
    i += 1
    while i < len(expr) and expr[i] != quote:
        i += 2 if expr[i] == "\\" and quote != "`" else 1
    return i + 1


def _skip_balanced(expr: str, i: int, open_: str, close: str) -> int:
    depth = 0
    while i < len(expr):
        ch = expr[i]
        if ch in "\"'`":
            i = _skip_string(expr, i)
            continue
        if ch == open_:
            depth += 1
        elif ch == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    msg = f"unbalanced {open_!r} in {expr!r}"
    raise ValueError(msg)


def _next_non_space(expr: str, i: int) -> str:
    while i < len(expr) and expr[i].isspace():
        i += 1
    return expr[i] if i < len(expr) else ""


def _next_word(expr: str, i: int) -> str:
    while i < len(expr) and expr[i].isspace():
        i += 1
    match = _IDENT.match(expr, i)
    return match.group(0).lower() if match else ""


def selectors(expr: str) -> list[Selector]:  # noqa: PLR0912 - one branch per token kind reads best
    """Every vector selector in the PromQL ``expr``, in order."""
    found: list[Selector] = []
    i = 0
    previous_ident = ""
    while i < len(expr):
        ch = expr[i]
        if ch.isspace():
            i += 1
        elif ch == "#":
            end = expr.find("\n", i)
            i = len(expr) if end < 0 else end
        elif ch in "\"'`":
            i = _skip_string(expr, i)
        elif ch == "[":
            i = _skip_balanced(expr, i, "[", "]")
        elif ch == "{":
            end = _skip_balanced(expr, i, "{", "}")
            match = _NAME_MATCHER.search(expr[i:end])
            found.append(Selector(match.group(1) if match else None, expr[i:end]))
            i = end
        elif ch == "(" and previous_ident in _LABEL_LIST_KEYWORDS:
            i = _skip_balanced(expr, i, "(", ")")
            previous_ident = ""
        elif ch.isdigit() or (ch == "." and expr[i + 1 : i + 2].isdigit()):
            match = _NUMBER.match(expr, i)
            i = match.end() if match else i + 1
        elif match := _IDENT.match(expr, i):
            word = match.group(0)
            i = match.end()
            previous_ident = word
            if (
                word.lower() in KEYWORDS
                or _next_non_space(expr, i) == "("
                or _next_word(expr, i) in _AGG_MODIFIERS
            ):
                continue
            matchers = ""
            j = i
            while j < len(expr) and expr[j].isspace():
                j += 1
            if j < len(expr) and expr[j] == "{":
                end = _skip_balanced(expr, j, "{", "}")
                matchers, i = expr[j:end], end
            found.append(Selector(word, matchers))
        else:
            previous_ident = ""
            i += 1
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects (``{__name__="x"}`` counts; a regex on ``__name__`` does not)."""
    return {s.name for s in selectors(expr) if s.name is not None}


#: Grafana's built-in interval variables and what the tests put in their place.
GRAFANA_INTERVALS: Mapping[str, str] = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "${__rate_interval}": "1m",
    "${__interval}": "15s",
    "${__range}": "5m",
}


def expand_grafana(expr: str, intervals: Mapping[str, str] = GRAFANA_INTERVALS, other: str = ".*") -> str:
    """``expr`` with Grafana variables replaced: intervals by durations, template variables by ``other``."""
    for var, value in sorted(intervals.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    expr = re.sub(r"\$\{[a-zA-Z_][a-zA-Z0-9_]*(?::[a-z]+)?\}", other, expr)
    return re.sub(r"\$[a-zA-Z_][a-zA-Z0-9_]*", other, expr)
