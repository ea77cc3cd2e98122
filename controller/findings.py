"""Findings: what a diagnostics snapshot says is wrong, from a rule catalogue kept as data.

The rules live in ``controller/rules.toml``, not in code: each names the snapshot values it
reads, the conditions that make it fire, a severity (raised by ``escalate`` entries), a
plain-language explanation a customer could read, advice for the technician, evidence
lines filled from the snapshot, and the id of a suggested fix. This module only loads
and checks the catalogue, evaluates it, and compares two snapshots (``helpline diag
diff``). Findings are computed when a snapshot is shown, never stored: an improved
catalogue applies to every snapshot already on a ticket.

Snapshots come from customers' machines and are untrusted: a missing, null or mistyped
value makes a clause false (never an exception), ``bool`` is never taken for a number,
and evidence is plain text (the renderer never reads it as markup).

Clauses (all in a ``when`` list must hold)::

    { path = "percent", op = ">=", value = 90 }       compare with a constant
    { path = "current", op = ">=", ref = "high" }     compare with another value
    { path = "$.cpu.load_avg.1", per = "$.cpu.logical", op = ">=", value = 1.5 }
    { path = "time.offset_ms", abs = true, op = ">=", value = 60000 }
    { any = [ ... ] }   { all = [ ... ] }

Paths are dotted (``load_avg.1`` indexes a list). Inside an ``each`` rule a path is
relative to the item and ``$.`` reaches the snapshot root; elsewhere paths start at the
root. Templates are ``{path}`` or ``{path|format}``; see ``_FORMATS``.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Final

from controller.units import humanize_bytes, humanize_duration

SEVERITIES: Final = ("critical", "warning", "info")
_RANK: Final = {name: rank for rank, name in enumerate(SEVERITIES)}
_MISSING: Final = object()
_PLACEHOLDER: Final = re.compile(r"\{([^{}|]+)(?:\|([a-z]+)(?::([\w.]+))?)?\}")
_ID: Final = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")


class CatalogueError(ValueError):
    """The rule catalogue is malformed; the message names the rule and the problem."""


# -- values and paths -------------------------------------------------------------------


def lookup(root: Any, item: Any, path: str) -> Any:
    """The value at ``path`` (``$.`` from the root, else from ``item``), or ``_MISSING``."""
    if path.startswith("$."):
        value, path = root, path[2:]
    else:
        value = item
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.isdigit():
            index = int(part)
            value = value[index] if index < len(value) else _MISSING
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)  # an int beyond a float's range raises
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    return bool(a == b)


def _empty(value: Any) -> bool:
    return (
        value is _MISSING or value is None or (isinstance(value, str | list | dict) and not value)
    )


_ORDER: Final[dict[str, Callable[[float, float], bool]]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}
_OPS: Final = frozenset(
    {*_ORDER, "==", "!=", "in", "not in", "exists", "missing", "empty", "nonempty"}
)
_CLAUSE_KEYS: Final = frozenset({"path", "op", "value", "ref", "per", "abs"})


# -- clauses ----------------------------------------------------------------------------

Test = Callable[[Any, Any], bool]


def _compile_clause(raw: Any, where: str) -> Test:
    """One clause of a ``when`` list into a test of (root, item)."""
    if not isinstance(raw, Mapping):
        raise CatalogueError(f"{where}: a clause must be a table, got {raw!r}")
    if set(raw) in ({"any"}, {"all"}):
        ((kind, inner),) = raw.items()
        if not isinstance(inner, list) or not inner:
            raise CatalogueError(f"{where}: {kind} needs a non-empty list of clauses")
        tests = [_compile_clause(c, where) for c in inner]
        if kind == "any":
            return lambda root, item: any(t(root, item) for t in tests)
        return lambda root, item: all(t(root, item) for t in tests)
    unknown = set(raw) - _CLAUSE_KEYS
    if unknown or "path" not in raw or "op" not in raw:
        raise CatalogueError(
            f"{where}: a clause has path, op and value/ref (unknown: {sorted(unknown)})"
        )
    path, op = str(raw["path"]), str(raw["op"])
    if op not in _OPS:
        raise CatalogueError(f"{where}: unknown op {op!r}; one of {sorted(_OPS)}")
    per, ref, use_abs = raw.get("per"), raw.get("ref"), bool(raw.get("abs", False))
    expected = raw.get("value", _MISSING)
    if op in ("exists", "missing", "empty", "nonempty"):
        if expected is not _MISSING or ref is not None:
            raise CatalogueError(f"{where}: {op} takes no value")
    elif (expected is _MISSING) == (ref is None):
        raise CatalogueError(f"{where}: {op} needs exactly one of value or ref")
    if op in ("in", "not in") and not isinstance(expected, list):
        raise CatalogueError(f"{where}: {op} needs a list value")

    def test(root: Any, item: Any) -> bool:
        actual = lookup(root, item, path)
        if op == "exists":
            return actual is not _MISSING and actual is not None
        if op == "missing":
            return actual is _MISSING or actual is None
        if op == "empty":
            return _empty(actual)
        if op == "nonempty":
            return not _empty(actual)
        if actual is _MISSING:
            return False
        if per is not None or use_abs:
            number = _number(actual)
            divisor = _number(lookup(root, item, str(per))) if per is not None else 1.0
            if number is None or not divisor:
                return False
            actual = abs(number / divisor) if use_abs else number / divisor
        other = lookup(root, item, str(ref)) if ref is not None else expected
        if other is _MISSING:
            return False
        if op in _ORDER:
            a, b = _number(actual), _number(other)
            return a is not None and b is not None and _ORDER[op](a, b)
        if op == "==":
            return _equal(actual, other)
        if op == "!=":
            return not _equal(actual, other)
        contained = any(_equal(actual, candidate) for candidate in other)
        return contained if op == "in" else not contained

    return test


def _compile_when(raw: Any, where: str) -> Test:
    if not isinstance(raw, list) or not raw:
        raise CatalogueError(f"{where}: when must be a non-empty list of clauses")
    tests = [_compile_clause(clause, where) for clause in raw]
    return lambda root, item: all(t(root, item) for t in tests)


# -- templates --------------------------------------------------------------------------


def _fmt_list(value: Any, field_name: str | None) -> str:
    if isinstance(value, Mapping):
        items = [f"{key} ({val})" for key, val in value.items()]
    elif isinstance(value, list):
        items = []
        for entry in value:
            if field_name is not None:
                entry = entry.get(field_name) if isinstance(entry, Mapping) else None
            if entry is not None:
                items.append(str(entry))
    else:
        return str(value)
    if not items:
        return "none"
    counts: dict[str, int] = {}
    for entry in items:  # "php-cgi (10)" reads better than ten of them
        counts[entry] = counts.get(entry, 0) + 1
    unique = [f"{entry} ({n})" if n > 1 else entry for entry, n in counts.items()]
    shown = ", ".join(unique[:8])
    return shown + (f", … and {len(unique) - 8} more" if len(unique) > 8 else "")


def _fmt_number(value: Any, render: Callable[[float], str]) -> str:
    number = _number(value)
    return render(number) if number is not None else str(value)


_FORMATS: Final[dict[str, Callable[[Any, str | None], str]]] = {
    "pct": lambda v, _: _fmt_number(v, lambda n: f"{n:.1f} %"),
    "bytes": lambda v, _: _fmt_number(v, humanize_bytes),
    "duration": lambda v, _: _fmt_number(v, humanize_duration),
    "ms": lambda v, _: _fmt_number(v, lambda n: f"{n:,.0f} ms"),
    "num": lambda v, _: _fmt_number(v, lambda n: f"{n:g}"),
    "int": lambda v, _: _fmt_number(v, lambda n: f"{n:,.0f}"),
    "list": _fmt_list,
}


@dataclass(frozen=True)
class Template:
    text: str

    @classmethod
    def parse(cls, text: Any, where: str) -> Template:
        if not isinstance(text, str):
            raise CatalogueError(f"{where}: expected text, got {text!r}")
        for match in _PLACEHOLDER.finditer(text):
            if match.group(2) is not None and match.group(2) not in _FORMATS:
                raise CatalogueError(f"{where}: unknown format {match.group(2)!r} in {text!r}")
        return cls(text)

    def fill(self, root: Any, item: Any) -> str:
        """The text with its placeholders filled; a missing value prints as "?"."""
        return self.fill_known(root, item, keep_unknown=True) or ""

    def fill_known(self, root: Any, item: Any, *, keep_unknown: bool = False) -> str | None:
        """Like :meth:`fill`, but None when every placeholder is missing (a line of
        evidence about something this snapshot does not have)."""
        found = 0
        placeholders = 0

        def one(match: re.Match[str]) -> str:
            nonlocal found, placeholders
            placeholders += 1
            value = lookup(root, item, match.group(1))
            if value is _MISSING or value is None:
                return "?"
            found += 1
            fmt = match.group(2)
            if fmt is None:
                return ("yes" if value else "no") if isinstance(value, bool) else str(value)
            return _FORMATS[fmt](value, match.group(3))

        text = _PLACEHOLDER.sub(one, self.text).strip()
        if placeholders and not found and not keep_unknown:
            return None
        return text


# -- the catalogue ----------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    id: str
    section: str
    severity: str
    when: Test
    title: Template
    explain: Template
    advice: Template | None
    evidence: tuple[Template, ...]
    fix: str | None
    each: str | None = None
    subject: Template | None = None
    escalate: tuple[tuple[str, Test], ...] = ()
    fix_params: tuple[tuple[str, Template], ...] = ()


@dataclass(frozen=True)
class Metric:
    label: Template
    path: str
    format: str | None
    min_change: float
    each: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class SetSpec:
    label: str
    each: str
    key: Template


@dataclass(frozen=True)
class Catalogue:
    rules: tuple[Rule, ...]
    metrics: tuple[Metric, ...] = ()
    sets: tuple[SetSpec, ...] = field(default=())

    @classmethod
    def from_toml(cls, text: str) -> Catalogue:
        """Parse and check a catalogue; raises :class:`CatalogueError` on any mistake."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise CatalogueError(f"not valid TOML: {exc}") from None
        unknown = set(data) - {"rules", "metrics", "sets"}
        if unknown:
            raise CatalogueError(f"unknown top-level keys: {sorted(unknown)}")
        rules = tuple(_rule(raw, n) for n, raw in enumerate(data.get("rules", [])))
        seen: set[str] = set()
        for rule in rules:
            if rule.id in seen:
                raise CatalogueError(f"rule {rule.id} is defined twice")
            seen.add(rule.id)
        return cls(
            rules=rules,
            metrics=tuple(_metric(raw, n) for n, raw in enumerate(data.get("metrics", []))),
            sets=tuple(_set(raw, n) for n, raw in enumerate(data.get("sets", []))),
        )


_RULE_KEYS: Final = frozenset(
    {"id", "section", "each", "subject", "severity", "when", "title", "explain", "advice"}
    | {"evidence", "fix", "fix_params", "escalate"}
)


def _rule(raw: Any, n: int) -> Rule:
    where = f"rule #{n + 1}"
    if not isinstance(raw, Mapping):
        raise CatalogueError(f"{where}: not a table")
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not _ID.match(rule_id):
        raise CatalogueError(f"{where}: id must look like area.name, got {rule_id!r}")
    where = f"rule {rule_id}"
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise CatalogueError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("section", "title", "explain", "when", "severity"):
        if key not in raw:
            raise CatalogueError(f"{where}: {key} is required")
    severity = _severity(raw["severity"], where)
    fix = raw.get("fix")
    if fix is not None and (not isinstance(fix, str) or not _ID.match(fix)):
        raise CatalogueError(f"{where}: fix must be a fix id like area.name, got {fix!r}")
    escalate: list[tuple[str, Test]] = []
    for step in raw.get("escalate", []):
        if not isinstance(step, Mapping) or set(step) != {"severity", "when"}:
            raise CatalogueError(f"{where}: escalate entries have severity and when")
        level = _severity(step["severity"], where)
        if _RANK[level] >= _RANK[severity]:
            raise CatalogueError(f"{where}: escalate to {level} is not above {severity}")
        escalate.append((level, _compile_when(step["when"], f"{where} escalate")))
    evidence = raw.get("evidence", [])
    if not isinstance(evidence, list):
        raise CatalogueError(f"{where}: evidence must be a list of templates")
    fix_params = raw.get("fix_params", {})
    if not isinstance(fix_params, Mapping) or (fix_params and fix is None):
        raise CatalogueError(f"{where}: fix_params is a table of templates, with a fix")
    return Rule(
        id=rule_id,
        section=str(raw["section"]),
        severity=severity,
        when=_compile_when(raw["when"], where),
        title=Template.parse(raw["title"], where),
        explain=Template.parse(raw["explain"], where),
        advice=Template.parse(raw["advice"], where) if "advice" in raw else None,
        evidence=tuple(Template.parse(line, where) for line in evidence),
        fix=fix,
        each=str(raw["each"]) if "each" in raw else None,
        subject=Template.parse(raw["subject"], where) if "subject" in raw else None,
        escalate=tuple(sorted(escalate, key=lambda step: _RANK[step[0]])),
        fix_params=tuple(
            (str(name), Template.parse(text, where)) for name, text in fix_params.items()
        ),
    )


def _severity(value: Any, where: str) -> str:
    if value not in _RANK:
        raise CatalogueError(f"{where}: severity must be one of {', '.join(SEVERITIES)}")
    return str(value)


def _metric(raw: Any, n: int) -> Metric:
    where = f"metric #{n + 1}"
    if not isinstance(raw, Mapping) or "label" not in raw or "path" not in raw:
        raise CatalogueError(f"{where}: needs label and path")
    unknown = set(raw) - {"label", "path", "format", "min_change", "each", "key"}
    if unknown:
        raise CatalogueError(f"{where}: unknown keys {sorted(unknown)}")
    fmt = raw.get("format")
    if fmt is not None and fmt not in _FORMATS:
        raise CatalogueError(f"{where}: unknown format {fmt!r}")
    if ("each" in raw) != ("key" in raw):
        raise CatalogueError(f"{where}: each and key go together")
    return Metric(
        label=Template.parse(raw["label"], where),
        path=str(raw["path"]),
        format=fmt,
        min_change=float(raw.get("min_change", 0)),
        each=raw.get("each"),
        key=raw.get("key"),
    )


def _set(raw: Any, n: int) -> SetSpec:
    where = f"set #{n + 1}"
    if not isinstance(raw, Mapping) or set(raw) != {"label", "each", "key"}:
        raise CatalogueError(f"{where}: needs exactly label, each and key")
    return SetSpec(str(raw["label"]), str(raw["each"]), Template.parse(raw["key"], where))


@cache
def default_catalogue() -> Catalogue:
    """The catalogue shipped with the controller (``controller/rules.toml``)."""
    text = resources.files("controller").joinpath("rules.toml").read_text(encoding="utf-8")
    return Catalogue.from_toml(text)


# -- evaluation -------------------------------------------------------------------------


def _items(root: Mapping[str, Any], each: str | None) -> list[Any]:
    """What a rule is tried on: the root, or each item of a list (maps give key/value)."""
    if each is None:
        return [root]
    found = lookup(root, root, each)
    if isinstance(found, list):
        return [entry for entry in found if isinstance(entry, Mapping)]
    if isinstance(found, Mapping):
        return [{"key": key, "value": value} for key, value in found.items()]
    return []


def evaluate(snapshot: Any, catalogue: Catalogue | None = None) -> list[dict[str, Any]]:
    """The findings in ``snapshot``, most severe first (catalogue order within a severity)."""
    if not isinstance(snapshot, Mapping):
        return []
    catalogue = catalogue or default_catalogue()
    found: list[tuple[int, int, dict[str, Any]]] = []
    for order, rule in enumerate(catalogue.rules):
        for item in _items(snapshot, rule.each):
            if not rule.when(snapshot, item):
                continue
            severity = rule.severity
            for level, test in rule.escalate:
                if test(snapshot, item):
                    severity = level
                    break
            found.append((_RANK[severity], order, _finding(rule, severity, snapshot, item)))
    found.sort(key=lambda entry: (entry[0], entry[1]))
    return [finding for _, _, finding in found]


def _finding(rule: Rule, severity: str, root: Any, item: Any) -> dict[str, Any]:
    return {
        "rule": rule.id,
        "severity": severity,
        "section": rule.section,
        "subject": rule.subject.fill(root, item) if rule.subject else None,
        "title": rule.title.fill(root, item),
        "explanation": rule.explain.fill(root, item),
        "advice": rule.advice.fill(root, item) if rule.advice else None,
        "evidence": [
            text for line in rule.evidence if (text := line.fill_known(root, item)) is not None
        ],
        "fix": rule.fix,
        # parameters for the suggested fix, where the snapshot names them (a unit, a pid)
        "fix_params": {
            name: value
            for name, template in rule.fix_params
            if (value := template.fill_known(root, item)) is not None
        },
    }


def count_by_severity(findings: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """{"critical": n, "warning": n, "info": n}, zeros included."""
    counts = dict.fromkeys(SEVERITIES, 0)
    for finding in findings:
        severity = finding.get("severity")
        if isinstance(severity, str) and severity in counts:
            counts[severity] += 1
    return counts


def with_findings(snapshot: Any, ok: bool) -> dict[str, Any]:
    """A stored snapshot's findings and their counts (none for a failed result), as JSON."""
    findings = evaluate(snapshot) if ok else []
    return {"findings": findings, "summary": count_by_severity(findings)}


# -- before and after -------------------------------------------------------------------


def _checked(snapshot: Mapping[str, Any], section: str) -> bool:
    """Whether a snapshot looked at ``section`` (a failed collector did not)."""
    if section == "errors":
        return True
    return isinstance(snapshot.get(section), Mapping)


def _compared(
    before: Mapping[str, Any], after: Mapping[str, Any], finding: Mapping[str, Any]
) -> bool:
    """Whether both snapshots looked at what ``finding`` is about, so that its presence in
    one and absence in the other means something (a partial snapshot checked less)."""
    if finding.get("section") == "errors":
        # "could not read X" compares only where both snapshots tried to read X
        collector = finding.get("subject")
        return all(
            not isinstance(s.get("collectors"), list) or collector in s["collectors"]
            for s in (before, after)
        )
    section = str(finding.get("section"))
    return _checked(before, section) and _checked(after, section)


def compare(
    before: Mapping[str, Any], after: Mapping[str, Any], catalogue: Catalogue | None = None
) -> dict[str, Any]:
    """What changed between two snapshots: findings resolved, new and remaining, and the
    watched values that moved (the catalogue's metrics and sets).

    A finding about a collector that only one snapshot ran is "not compared", whichever
    side it is on: it is neither resolved nor new."""
    catalogue = catalogue or default_catalogue()
    old, new = evaluate(before, catalogue), evaluate(after, catalogue)

    def key(finding: Mapping[str, Any]) -> tuple[str, str | None]:
        return (str(finding["rule"]), finding.get("subject"))

    old_keys = {key(f): f for f in old}
    new_keys = {key(f) for f in new}
    resolved: list[dict[str, Any]] = []
    uncompared: list[dict[str, Any]] = []
    remaining: list[dict[str, Any]] = []
    appeared: list[dict[str, Any]] = []
    for finding in old:
        if key(finding) in new_keys:
            continue
        if _compared(before, after, finding):
            resolved.append(finding)
        else:
            uncompared.append({**finding, "seen_in": "before"})
    for finding in new:
        previous = old_keys.get(key(finding))
        if previous is not None:
            remaining.append({**finding, "severity_before": previous["severity"]})
        elif _compared(before, after, finding):
            appeared.append(finding)
        else:
            uncompared.append({**finding, "seen_in": "after"})
    return {
        "findings": {
            "resolved": resolved,
            "new": appeared,
            "remaining": remaining,
            "not_compared": uncompared,
        },
        "changes": _metric_changes(before, after, catalogue)
        + _set_changes(before, after, catalogue),
    }


def _metric_changes(
    before: Mapping[str, Any], after: Mapping[str, Any], catalogue: Catalogue
) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    for metric in catalogue.metrics:
        section = (metric.each or metric.path).split(".", 1)[0]
        if not (_checked(before, section) and _checked(after, section)):
            continue
        if metric.each is None:
            pairs = [(before, after, before)]
        else:
            assert metric.key is not None
            old_items = {str(lookup(before, i, metric.key)): i for i in _items(before, metric.each)}
            new_items = {str(lookup(after, i, metric.key)): i for i in _items(after, metric.each)}
            pairs = [
                # an empty item ({}) is falsy but present: choose by key, not truthiness
                (
                    old_items.get(k, {}),
                    new_items.get(k, {}),
                    new_items[k] if k in new_items else old_items[k],
                )
                for k in sorted(set(old_items) | set(new_items))
            ]
        for old_item, new_item, label_item in pairs:
            was = lookup(before, old_item, metric.path)
            now = lookup(after, new_item, metric.path)
            if was is _MISSING and now is _MISSING:
                continue
            if not _moved(was, now, metric.min_change):
                continue
            changes.append(
                {
                    "kind": "value",
                    "label": metric.label.fill(after, label_item),
                    "before": None if was is _MISSING else was,
                    "after": None if now is _MISSING else now,
                    "before_text": _show(was, metric.format),
                    "after_text": _show(now, metric.format),
                }
            )
    return changes


def _moved(was: Any, now: Any, min_change: float) -> bool:
    a, b = _number(was), _number(now)
    if a is not None and b is not None:
        return abs(b - a) >= max(min_change, 1e-9)
    if was is _MISSING or was is None or now is _MISSING or now is None:
        # a value only one side has (a new mount, a route that appeared) is a change
        return (was is _MISSING or was is None) != (now is _MISSING or now is None)
    return not _equal(was, now)


def _show(value: Any, fmt: str | None) -> str:
    if value is _MISSING or value is None:
        return "—"
    if fmt is None:
        return ("yes" if value else "no") if isinstance(value, bool) else str(value)
    return _FORMATS[fmt](value, None)


def _set_changes(
    before: Mapping[str, Any], after: Mapping[str, Any], catalogue: Catalogue
) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    for spec in catalogue.sets:
        section = spec.each.split(".", 1)[0]
        if not (_checked(before, section) and _checked(after, section)):
            continue
        old = {spec.key.fill(before, item) for item in _items(before, spec.each)}
        new = {spec.key.fill(after, item) for item in _items(after, spec.each)}
        if old != new:
            changes.append(
                {
                    "kind": "set",
                    "label": spec.label,
                    "added": sorted(new - old),
                    "removed": sorted(old - new),
                }
            )
    return changes
