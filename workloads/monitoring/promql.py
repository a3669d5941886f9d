"""What a PromQL expression reads: the metric names of its selectors, and the expression with Grafana's variables
filled in so a plain Prometheus can evaluate it.

Not a PromQL parser: string literals, label matchers, ranges, grouping clauses and modifiers are removed, then every
remaining identifier that is not a function call, keyword or number is a metric name.  That is enough for the
expressions this project writes and for Ray's generated dashboards; the tests pin the cases it must get right.
"""

from __future__ import annotations

import re
from typing import Final

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_MODIFIER = re.compile(r"\b(offset)\s+-?[0-9a-zA-Z_$]+|@\s*[0-9a-z_.()]+")
_IDENT = re.compile(r"(?<![0-9a-zA-Z_:.$])[a-zA-Z_:][a-zA-Z0-9_:]*")
KEYWORDS: Final = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "and",
        "or",
        "unless",
        "atan2",
        "inf",
        "nan",
        "Inf",
        "NaN",
    }
)


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects (``rate(x_total{a="b"}[5m]) / y`` -> ``{"x_total", "y"}``)."""
    text = _STRING.sub(" ", expr)
    previous = None
    while previous != text:  # nested braces or brackets (subqueries) peel off from the inside
        previous = text
        text = _BRACES.sub(" ", text)
        text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _MODIFIER.sub(" ", text)
    names: set[str] = set()
    for match in _IDENT.finditer(text):
        name = match.group(0)
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or name in KEYWORDS:
            continue
        names.add(name)
    return names


# Grafana's built-in intervals, as a plain Prometheus evaluates them in the e2e tier (scrape interval 5 s there).
GRAFANA_INTERVALS: Final = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$interval": "1m",
}
_VARIABLE_MATCH = re.compile(r'(!?[=~]~?)\s*"\$\{?([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}?"')


def fill_grafana_variables(expr: str, intervals: dict[str, str] | None = None) -> str:
    """``expr`` as Grafana would send it with every template variable set to All: label matchers on a variable match
    anything (``=~".*"``), built-in intervals become durations."""
    values = intervals or GRAFANA_INTERVALS

    def matcher(m: re.Match[str]) -> str:
        return '!~"^$"' if m.group(1).startswith("!") else '=~".*"'

    out = _VARIABLE_MATCH.sub(matcher, expr)
    for name in sorted(values, key=len, reverse=True):
        out = out.replace("${" + name[1:] + "}", values[name]).replace(name, values[name])
    return out


def unexported(
    queries: list[tuple[str, str]], exported: set[str], elsewhere: frozenset[str] = frozenset()
) -> list[str]:
    """One line per (where, metric) whose metric is neither in ``exported`` (what the running app serves) nor
    declared to come from ``elsewhere`` (another exporter): a panel or alert that could never show data."""
    problems = []
    for where, expr in queries:
        for name in sorted(metric_names(expr) - exported - elsewhere):
            problems.append(f"{where}: {name} is not exported by the app")
    return problems
